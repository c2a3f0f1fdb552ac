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

/// A socket the helper takes for `/dev/log`: the test binds it and, in the helper's private
/// mount namespace, it is mounted over `/dev/log`, so every line the helper sends to syslog is
/// read here and scanned too.
fn syslog_catcher(inst: &mut Instance) -> std::sync::mpsc::Receiver<Vec<u8>> {
    let path = inst.path("devlog.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
    chmod(&path, 0o666);
    inst.helper_prefix = vec![
        "unshare".into(),
        "-m".into(),
        "--propagation".into(),
        "private".into(),
        "sh".into(),
        "-c".into(),
        // A fresh /dev in the namespace (this machine may have no /dev/log to mount over),
        // with the device nodes the helper uses bound in from the real one.
        format!(
            "set -e; real={real}; mkdir -p $real; mount --bind /dev $real; \
             mount -t tmpfs -o mode=0755 tmpfs /dev; \
             for n in null zero full random urandom tty; do touch /dev/$n; mount --bind $real/$n /dev/$n; done; \
             ln -s /proc/self/fd /dev/fd; touch /dev/log; mount --bind {sock} /dev/log; \
             exec \"$0\" \"$@\"",
            real = inst.path("realdev").display(),
            sock = path.display()
        ),
    ];
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 65536];
        while let Ok(n) = sock.recv(&mut buf) {
            if tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    rx
}

fn scan_files(inst: &Instance, secrets: &[&[u8]], skip: &[std::path::PathBuf]) -> usize {
    let mut stack = vec![inst.root.path().to_owned()];
    let mut scanned = 0;
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let p = entry.unwrap().path();
            let ft = std::fs::symlink_metadata(&p).unwrap().file_type();
            if ft.is_dir() {
                stack.push(p);
            } else if ft.is_file() && !skip.contains(&p) && p != inst.image {
                let bytes = std::fs::read(&p).unwrap();
                for s in secrets {
                    assert!(!contains(&bytes, s), "a secret is in {}", p.display());
                }
                scanned += 1;
            }
        }
    }
    scanned
}

fn scan_process(pid: u32, who: &str, secrets: &[&[u8]]) {
    for f in ["cmdline", "environ"] {
        let bytes = std::fs::read(format!("/proc/{pid}/{f}")).unwrap();
        for s in secrets {
            assert!(!contains(&bytes, s), "a secret is in the {who}'s {f}");
        }
    }
}

fn status_field(pid: u32, field: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .unwrap_or_else(|| panic!("{field} not in {status}"))
        .trim()
        .to_owned()
}

fn core_limit(pid: u32) -> String {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    limits
        .lines()
        .find(|l| l.starts_with("Max core file size"))
        .unwrap()
        .split_whitespace()
        .skip(4)
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn no_secret_leaks_to_files_argv_env_or_logs() {
    let mut inst = Instance::prepare();
    let syslog = syslog_catcher(&mut inst);
    let inst = inst.start();
    inst.bootstrap();
    let user_pass = b"daemon's very own passphrase";
    let out = inst.keyward(
        &["grant", "data", "daemon", "--passphrase-stdin"],
        &[&user_pass[..], b"\n"].concat(),
    );
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    let first_service = std::fs::read(inst.path("state/service/data")).unwrap();
    let out = inst.keyward(&["service", "rotate", "data"], b"");
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    let service = std::fs::read(inst.path("state/service/data")).unwrap();
    assert_ne!(first_service, service);
    // A standalone recovery rotation: the key is shown once on stdout, then typed back.
    let out = inst.keyward(
        &["recovery", "rotate", "data", "--show", "--confirm-stdin"],
        b"",
    );
    let shown = String::from_utf8_lossy(&out.stdout).into_owned();
    let recovery = shown
        .split_whitespace()
        .find(|w| w.len() == 71 && w.matches('-').count() == 7)
        .unwrap_or_else(|| panic!("no key shown: {shown}"))
        .to_owned();
    let last = recovery.rsplit('-').next().unwrap();
    let out = inst.keyward(
        &["recovery", "rotate", "data", "--show", "--confirm-stdin"],
        format!("{last}\n").as_bytes(),
    );
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    let secrets: [&[u8]; 5] = [
        INSTALL_PASS.as_bytes(),
        user_pass,
        &first_service,
        &service,
        recovery.as_bytes(),
    ];

    // Every file under the instance except the service secret itself and the disk image.
    let scanned = scan_files(&inst, &secrets, &[inst.path("state/service/data")]);
    assert!(scanned >= 4, "scanned audit log, head, helper log, config");
    // Syslog saw every audit line, and none holds a secret.
    // The catcher's reader thread may not have passed on the last datagram yet.
    let mut lines: Vec<Vec<u8>> = Vec::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while lines.len() < inst.audit_lines().len() && std::time::Instant::now() < deadline {
        match syslog.recv_timeout(std::time::Duration::from_millis(100)) {
            Ok(l) => lines.push(l),
            Err(_) => continue,
        }
    }
    lines.extend(syslog.try_iter());
    assert!(
        lines.len() >= inst.audit_lines().len(),
        "syslog got {} lines, the audit log has {}",
        lines.len(),
        inst.audit_lines().len()
    );
    for l in &lines {
        for s in secrets {
            assert!(!contains(l, s), "a secret went to syslog");
        }
    }

    // The helper's argv and environment, after all of it.
    let pid = inst.helper_pid();
    scan_process(pid, "helper", &secrets);
    // Hardening took effect: memory locked (mlockall) and no core file. (Whether a root
    // process is dumpable cannot be seen from outside it — this kernel lets root without
    // CAP_SYS_PTRACE read a non-dumpable root process's environ all the same — so
    // PR_SET_DUMPABLE is proven on the agent below, which runs the same hardening function.)
    let locked: u64 = status_field(pid, "VmLck:")
        .trim_end_matches("kB")
        .trim()
        .parse()
        .unwrap();
    assert!(
        locked > 0,
        "VmLck is {locked} kB: mlockall did not take effect"
    );
    assert_eq!(core_limit(pid), "0 0", "the helper may write a core file");

    // The agent (as the service user): not dumpable either — its /proc files then belong to
    // root, not to its own uid — and no core file; its argv and environment hold no secret.
    let log = inst.path("agent.log");
    let mut agent = inst.spawn_agent(&log);
    let apid = agent.id();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while status_field(apid, "Uid:").split_whitespace().nth(1) != Some(&NOBODY.to_string()) {
        assert!(std::time::Instant::now() < deadline, "agent did not start");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let hardened = |pid: u32| {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(format!("/proc/{pid}/status"))
            .unwrap()
            .uid()
            == 0
            && core_limit(pid) == "0 0"
    };
    while !hardened(apid) {
        assert!(
            std::time::Instant::now() < deadline,
            "the agent is dumpable or may dump core: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    scan_process(apid, "agent", &secrets);
    agent.kill().unwrap();
    agent.wait().unwrap();
}
