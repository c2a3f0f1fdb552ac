//! Planted files in keyward's paths are refused, never followed or written through; and no
//! secret appears anywhere it must not: files under the instance (other than the service
//! secret), the helper's argv or environment, or any log.
#![allow(clippy::unwrap_used)]

mod common;

use std::os::unix::fs::{symlink, PermissionsExt};

use common::*;

const DECOY: &[u8] = b"root:$y$j9T$decoy:19000:0:99999:7:::\n";

/// The log directory as install makes it (root:adm 0750), so only the planted file is wrong.
fn make_log_dir(inst: &Instance) {
    let dir = inst.path("log");
    std::fs::create_dir(&dir).unwrap();
    let adm = keyward_sys::users::log_reader_gid().unwrap();
    std::os::unix::fs::chown(&dir, Some(0), Some(adm)).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o750)).unwrap();
}

fn mkfifo(p: &std::path::Path) {
    let out = std::process::Command::new("mkfifo")
        .arg(p)
        .output()
        .unwrap();
    assert!(out.status.success());
}

#[test]
fn audit_log_symlink_is_refused_and_its_target_untouched() {
    // A stand-in for /etc/shadow: the same attack, with nothing real at stake.
    let mut inst = Instance::prepare();
    let decoy = inst.path("shadow");
    std::fs::write(&decoy, DECOY).unwrap();
    make_log_dir(&inst);
    symlink(&decoy, inst.path("log/audit.jsonl")).unwrap();
    assert!(!inst.try_start(), "helper must refuse to start");
    assert!(
        inst.helper_stderr().contains("audit log"),
        "{}",
        inst.helper_stderr()
    );
    assert_eq!(std::fs::read(&decoy).unwrap(), DECOY);
}

#[test]
fn audit_log_fifo_or_agent_owned_file_is_refused() {
    for plant in ["fifo", "agent-owned"] {
        let mut inst = Instance::prepare();
        make_log_dir(&inst);
        let p = inst.path("log/audit.jsonl");
        if plant == "fifo" {
            mkfifo(&p);
        } else {
            std::fs::write(&p, b"").unwrap();
            std::os::unix::fs::chown(&p, Some(NOBODY), Some(NOBODY)).unwrap();
        }
        assert!(!inst.try_start(), "{plant}: helper must refuse to start");
    }
}

#[test]
fn socket_path_taken_by_an_agent_owned_file_is_refused() {
    let mut inst = Instance::prepare();
    std::fs::create_dir(inst.path("run")).unwrap();
    std::os::unix::fs::chown(inst.path("run"), Some(0), Some(NOBODY)).unwrap();
    std::fs::set_permissions(inst.path("run"), std::fs::Permissions::from_mode(0o750)).unwrap();
    std::fs::write(inst.socket(), b"planted").unwrap();
    std::os::unix::fs::chown(inst.socket(), Some(NOBODY), Some(NOBODY)).unwrap();
    assert!(!inst.try_start());
    assert!(
        inst.helper_stderr().contains("socket"),
        "{}",
        inst.helper_stderr()
    );
    assert_eq!(std::fs::read(inst.socket()).unwrap(), b"planted");
}

#[test]
fn state_dir_owned_by_the_agent_is_refused() {
    let mut inst = Instance::prepare();
    std::fs::create_dir(inst.path("state")).unwrap();
    std::os::unix::fs::chown(inst.path("state"), Some(NOBODY), Some(NOBODY)).unwrap();
    assert!(!inst.try_start());
    assert!(
        inst.helper_stderr().contains("state"),
        "{}",
        inst.helper_stderr()
    );
}

#[test]
fn planted_service_secret_files_are_refused() {
    for plant in ["symlink", "fifo", "agent-owned"] {
        let inst = Instance::prepare().start();
        inst.bootstrap();
        let p = inst.path("state/service/data");
        std::fs::remove_file(&p).unwrap();
        match plant {
            "symlink" => {
                let decoy = inst.path("decoy");
                std::fs::write(&decoy, b"attacker-chosen secret").unwrap();
                symlink(&decoy, &p).unwrap();
            }
            "fifo" => mkfifo(&p),
            _ => {
                std::fs::write(&p, b"attacker-chosen secret").unwrap();
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
                std::os::unix::fs::chown(&p, Some(NOBODY), Some(NOBODY)).unwrap();
            }
        }
        // The planted file is never read as the service secret.
        let out = inst.keyward(&["verify"], b"");
        assert_eq!(code(&out), Some(1), "{plant}: {}", stderr(&out));
        let said = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(said.contains("service secret error"), "{plant}: {said}");
        let out = inst.keyward(&["grant", "data", "daemon", "--passphrase-stdin"], b"pw\n");
        assert_ne!(code(&out), Some(0), "{plant}: grant must fail");
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn no_secret_leaks_to_files_argv_env_or_logs() {
    let inst = Instance::prepare().start();
    inst.bootstrap();
    let user_pass = b"daemon's very own passphrase";
    let out = inst.keyward(
        &["grant", "data", "daemon", "--passphrase-stdin"],
        &[&user_pass[..], b"\n"].concat(),
    );
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    let service = std::fs::read(inst.path("state/service/data")).unwrap();
    let secrets: [&[u8]; 3] = [INSTALL_PASS.as_bytes(), user_pass, &service];

    // Every file under the instance except the service secret itself and the disk image.
    let mut stack = vec![inst.root.path().to_owned()];
    let mut scanned = 0;
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let p = entry.unwrap().path();
            let ft = std::fs::symlink_metadata(&p).unwrap().file_type();
            if ft.is_dir() {
                stack.push(p);
            } else if ft.is_file() && p != inst.path("state/service/data") && p != inst.image {
                let bytes = std::fs::read(&p).unwrap();
                for s in secrets {
                    assert!(!contains(&bytes, s), "a secret is in {}", p.display());
                }
                scanned += 1;
            }
        }
    }
    assert!(scanned >= 4, "scanned audit log, head, helper log, config");

    // The helper's argv and environment.
    let pid = inst.helper_pid();
    for f in ["cmdline", "environ"] {
        let bytes = std::fs::read(format!("/proc/{pid}/{f}")).unwrap();
        for s in secrets {
            assert!(!contains(&bytes, s), "a secret is in the helper's {f}");
        }
    }
    // The helper is not dumpable, so other processes of its uid cannot read its memory.
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert!(status.lines().any(|l| l.starts_with("VmLck:")), "{status}");
}
