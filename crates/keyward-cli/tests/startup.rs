//! How the helper starts: it refuses a configuration it cannot trust (not root's, writable by
//! group or others, a symbolic link) and says why; and it really runs socket-activated, as
//! systemd starts it, driven by the CLI through the socket systemd made.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// Start the helper on `config`; its output, and whether it was still serving after 5 s (then
/// it was stopped with SIGTERM).
fn helper_with(config: &std::path::Path) -> (std::process::Output, bool) {
    let child = Command::new(bin("keyward-helper"))
        .arg("--config")
        .arg(config)
        .env_remove("KEYWARD_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A helper that accepted the config would serve forever: give it a moment, then stop it.
    let pid = child.id();
    let deadline = Instant::now() + Duration::from_secs(5);
    let waiter = std::thread::spawn(move || child.wait_with_output().unwrap());
    while !waiter.is_finished() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let serving = !waiter.is_finished();
    if serving {
        let _ = Command::new("kill").arg(pid.to_string()).status();
    }
    (waiter.join().unwrap(), serving)
}

#[test]
fn an_untrusted_config_is_refused_with_the_reason() {
    let inst = Instance::prepare();
    type Spoil = Box<dyn Fn(&std::path::Path)>;
    let cases: [(&str, Spoil); 4] = [
        ("group-writable", Box::new(|p| chmod(p, 0o664))),
        ("world-writable", Box::new(|p| chmod(p, 0o646))),
        (
            "owned by another user",
            Box::new(|p| std::os::unix::fs::chown(p, Some(NOBODY), None).unwrap()),
        ),
        (
            "a symbolic link",
            Box::new(|p| {
                let real = p.with_extension("real");
                std::fs::rename(p, &real).unwrap();
                std::os::unix::fs::symlink(&real, p).unwrap();
            }),
        ),
    ];
    for (what, spoil) in cases {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("keyward.toml");
        std::fs::copy(&inst.config, &config).unwrap();
        chmod(&config, 0o644);
        spoil(&config);
        let (out, serving) = helper_with(&config);
        assert!(
            !serving && !out.status.success(),
            "{what}: the helper started"
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("keyward.toml"), "{what}: {err}");
        assert!(
            !inst.socket().exists(),
            "{what}: a socket was made from an untrusted config"
        );
        // The CLI refuses it too.
        let cli = run(
            Command::new(bin("keyward"))
                .arg("--config")
                .arg(&config)
                .arg("status"),
            b"",
        );
        assert_ne!(code(&cli), Some(0), "{what}: the CLI used it");
    }
    // The same file, trusted, is served.
    let (out, serving) = helper_with(&inst.config);
    assert!(
        serving,
        "a trusted config was refused: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn socket_activation_really_serves() {
    let inst = Instance::prepare();
    std::fs::create_dir(inst.path("run")).unwrap();
    chmod(&inst.path("run"), 0o750);
    std::os::unix::fs::chown(inst.path("run"), Some(0), Some(NOBODY)).unwrap();
    let log = std::fs::File::create(inst.path("activate.log")).unwrap();
    let activator = Command::new("systemd-socket-activate")
        .arg("--listen")
        .arg(inst.socket())
        .arg(bin("keyward-helper"))
        .arg("--config")
        .arg(&inst.config)
        .env_remove("KEYWARD_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let _stop = Stop(activator, inst.config.display().to_string());
    let deadline = Instant::now() + Duration::from_secs(10);
    while !inst.socket().exists() {
        assert!(
            Instant::now() < deadline,
            "systemd-socket-activate did not listen"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // The first connection starts the helper on the inherited socket.
    let out = inst.keyward(
        &["bootstrap", "data", "--passphrase-stdin"],
        format!("{INSTALL_PASS}\n").as_bytes(),
    );
    let log = || std::fs::read_to_string(inst.path("activate.log")).unwrap_or_default();
    assert_eq!(code(&out), Some(0), "{}\n{}", stderr(&out), log());
    let out = inst.keyward(&["status", "data", "--json"], b"");
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("\"role\": \"service\""),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        log().contains("socket-activated") || log().contains("serving"),
        "{}",
        log()
    );
}

/// Stops systemd-socket-activate and the helper it started (which outlives it), pass or fail.
struct Stop(std::process::Child, String);

impl Drop for Stop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        let _ = Command::new("pkill").args(["-f", &self.1]).status();
    }
}

/// Flip one byte in the JSON area of a header copy (`secondary`: at the metadata size).
fn damage_copy(image: &std::path::Path, secondary: bool) {
    use std::io::{Read, Seek, SeekFrom, Write};
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(image)
        .unwrap();
    let mut head = [0u8; 16];
    f.read_exact(&mut head).unwrap();
    let size = u64::from_be_bytes(head[8..16].try_into().unwrap());
    let at = if secondary { size } else { 0 } + 4096 + 64;
    let mut b = [0u8; 1];
    f.seek(SeekFrom::Start(at)).unwrap();
    f.read_exact(&mut b).unwrap();
    b[0] ^= 0x20;
    f.seek(SeekFrom::Start(at)).unwrap();
    f.write_all(&b).unwrap();
}

/// A header write a crash cut between the two copies (one copy damaged, the other whole) is
/// restored at start, on the record, and everything opens as before; two damaged copies are
/// refused and left exactly as found, for an admin and `cryptsetup repair`.
#[test]
fn a_header_write_cut_by_a_crash_is_repaired_at_start() {
    let mut inst = Instance::prepare().start();
    inst.bootstrap();
    let before = inst.metadata();
    for secondary in [true, false] {
        inst.stop_helper();
        damage_copy(&inst.image, secondary);
        assert!(inst.try_start(), "{}", inst.helper_stderr());
        let out = inst.keyward(&["status", "data", "--json"], b"");
        assert_eq!(code(&out), Some(0), "{}", stderr(&out));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert!(v["volumes"][0]["error"].is_null(), "{v}");
        let repaired: Vec<String> = inst
            .audit_lines()
            .into_iter()
            .filter(|l| l.contains("\"op\":\"header-repair\""))
            .collect();
        let copy = if secondary { "secondary" } else { "primary" };
        assert!(
            repaired
                .iter()
                .any(|l| l.contains(&format!("{copy} header copy fails its checksum"))),
            "{repaired:?}"
        );
        assert_eq!(
            inst.metadata(),
            before,
            "the header's content is what it was"
        );
        assert!(inst.opens(0, INSTALL_PASS.as_bytes()));
        assert_eq!(code(&inst.keyward(&["verify", "data"], b"")), Some(0));
    }
    // Both copies damaged: refused, untouched.
    inst.stop_helper();
    damage_copy(&inst.image, true);
    damage_copy(&inst.image, false);
    let bytes = std::fs::read(&inst.image).unwrap();
    assert!(inst.try_start(), "{}", inst.helper_stderr());
    let out = inst.keyward(&["status", "data", "--json"], b"");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        v["volumes"][0]["error"]
            .as_str()
            .unwrap_or("")
            .contains("corrupt"),
        "{v}"
    );
    assert_eq!(std::fs::read(&inst.image).unwrap(), bytes, "not modified");
}

/// A clean stop takes the socket with it (issue 14: it was left behind), and exits 0.
#[test]
fn sigterm_removes_the_socket_and_exits_cleanly() {
    let mut inst = Instance::prepare().start();
    assert!(inst.socket().exists());
    let mut child = inst.helper.take().unwrap();
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}: {}", inst.helper_stderr());
    assert!(
        std::fs::symlink_metadata(inst.socket()).is_err(),
        "the socket file was left behind"
    );
    // And it starts again at once.
    assert!(inst.try_start(), "{}", inst.helper_stderr());
}
