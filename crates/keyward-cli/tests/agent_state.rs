//! The agent's own state (`device.key`, `device.json` in its state directory) planted or
//! spoiled: a symlink, a FIFO, a file others may read, one owned by someone else, one far too
//! large, and nonsense. Each is refused by name, at once (no hang on the FIFO), with nothing
//! escrowed or committed and the agent still serving; with the genuine files back, a rotation
//! goes through.
#![allow(clippy::unwrap_used)]

mod common;

use std::os::unix::fs::{chown, symlink};
use std::path::Path;
use std::time::{Duration, Instant};

use common::escrow::*;
use common::*;

const FAST: &str = "checkin_interval_secs = 3600\nretry_initial_secs = 1\nretry_max_secs = 2\n";

fn mkfifo(p: &Path) {
    let out = std::process::Command::new("mkfifo")
        .arg(p)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn planted_or_spoiled_agent_state_is_refused_and_changes_nothing() {
    let inst = Instance::prepare();
    let srv = Server::start(&inst);
    configure(&inst, &srv, FAST);
    let inst = inst.start();
    inst.bootstrap();
    let (mut agent, _device) = enroll_agent(&inst, &srv);
    let (slot, escrow) = wait_for(&inst, "the first escrowed key", || settled_key(&inst));
    let dir = inst.path("agent");
    let saved = inst.path("saved-agent-state");
    std::fs::create_dir(&saved).unwrap();
    for f in ["device.key", "device.json"] {
        std::fs::copy(dir.join(f), saved.join(f)).unwrap();
    }
    let escrows = || srv.query("SELECT count(*) FROM escrows").trim().to_owned();
    let before = escrows();

    type Plant = (&'static str, &'static str, &'static str, fn(&Path, &Path));
    let plants: [Plant; 9] = [
        (
            "device.json",
            "a symlink",
            "device.json\": is a symbolic link",
            |p, saved| {
                let elsewhere = saved.join("elsewhere.json");
                std::fs::copy(saved.join("device.json"), &elsewhere).unwrap();
                chown(&elsewhere, Some(NOBODY), Some(NOBODY)).unwrap();
                symlink(&elsewhere, p).unwrap();
            },
        ),
        (
            "device.json",
            "a FIFO",
            "device.json\": not a regular file",
            |p, _| mkfifo(p),
        ),
        (
            "device.json",
            "readable by others",
            "device.json\": mode 644 is too permissive",
            |p, saved| {
                std::fs::copy(saved.join("device.json"), p).unwrap();
                chown(p, Some(NOBODY), Some(NOBODY)).unwrap();
                chmod(p, 0o644);
            },
        ),
        (
            "device.key",
            "owned by root",
            "device.key\": permission denied",
            |p, saved| {
                std::fs::copy(saved.join("device.key"), p).unwrap();
                chmod(p, 0o600);
            },
        ),
        (
            "device.key",
            "owned by another user",
            "device.key\": owned by uid 1, expected",
            |p, saved| {
                std::fs::copy(saved.join("device.key"), p).unwrap();
                chown(p, Some(1), Some(1)).unwrap();
                chmod(p, 0o604);
            },
        ),
        (
            "device.key",
            "far too large",
            "device.key\": is too large",
            |p, _| {
                std::fs::write(p, vec![b'A'; 64 * 1024]).unwrap();
                chown(p, Some(NOBODY), Some(NOBODY)).unwrap();
                chmod(p, 0o600);
            },
        ),
        ("device.key", "not a key", "bad device key", |p, _| {
            std::fs::write(p, "c2hvcnQ=").unwrap();
            chown(p, Some(NOBODY), Some(NOBODY)).unwrap();
            chmod(p, 0o600);
        }),
        ("device.json", "not JSON", "eof while parsing", |p, _| {
            std::fs::write(p, "{\"device_id\": ").unwrap();
            chown(p, Some(NOBODY), Some(NOBODY)).unwrap();
            chmod(p, 0o600);
        }),
        ("device.json", "missing", "not enrolled", |_, _| {}),
    ];
    for (file, what, says, plant) in plants {
        let p = dir.join(file);
        std::fs::remove_file(&p).unwrap();
        plant(&p, &saved);
        let started = Instant::now();
        let out = inst.keyward(&["recovery", "rotate", "data"], b"");
        let took = started.elapsed();
        let err = stderr(&out);
        assert_ne!(code(&out), Some(0), "{file} {what}: rotated anyway");
        assert!(
            err.to_lowercase().contains(says),
            "{file} {what}: the refusal does not say {says:?}: {err}"
        );
        assert!(
            took < Duration::from_secs(10),
            "{file} {what}: took {took:?}"
        );
        assert!(
            agent.try_wait().unwrap().is_none(),
            "{file} {what}: the agent died"
        );
        assert_eq!(escrows(), before, "{file} {what}: something was escrowed");
        // The active key is the one escrowed before, and it still opens the disk; the
        // rotation refused nothing it cannot resume (a pending key may wait, unescrowed).
        let vol = status(&inst);
        assert!(
            vol.to_string().contains(&escrow),
            "{file} {what}: the escrowed key is no longer active: {vol}"
        );
        // Put the genuine file back for the next plant.
        let _ = std::fs::remove_file(&p);
        std::fs::copy(saved.join(file), &p).unwrap();
        chown(&p, Some(NOBODY), Some(NOBODY)).unwrap();
        chmod(&p, 0o600);
    }
    let out = inst.keyward(&["audit", "--verify"], b"");
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));

    // The genuine state: the rotation goes through, and the new key replaces the old one.
    let out = inst.keyward(&["recovery", "rotate", "data"], b"");
    assert_eq!(
        code(&out),
        Some(0),
        "{}\n{}",
        stderr(&out),
        agent_log(&inst)
    );
    let (slot2, escrow2) = wait_for(&inst, "the new escrowed key", || {
        settled_key(&inst).filter(|(_, e)| *e != escrow)
    });
    assert_ne!((slot2, &escrow2), (slot, &escrow));
    let _ = agent.kill();
    let _ = agent.wait();
}

fn status(inst: &Instance) -> serde_json::Value {
    let out = inst.keyward(&["status", "--json"], b"");
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}
