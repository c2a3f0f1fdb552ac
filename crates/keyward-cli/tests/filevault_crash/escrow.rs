//! The escrowed FileVault rotation under SIGKILL: the real agent and escrow server, the helper
//! killed at every crash point of `keyward recovery rotate mac` (begin, the sealed key, the
//! escrow record, the commit). After each: the checks of the other operations, with the
//! escrowed key the server holds standing in for the recovery key holder (until FileVault
//! replaced it), and a rotation run again ends with a key in force that the server decrypts.

use std::process::Child;

use super::*;
use crate::common::escrow::{configure, enroll_agent, wait_for, Server};

/// The escrow id of the one recovery key in force, once it is escrowed.
fn escrowed(inst: &Instance) -> Option<String> {
    let vol = status(inst);
    match holders(&vol, "recovery").as_slice() {
        [r] if r["state"] == "active" => r["escrow_id"].as_str().map(str::to_owned),
        _ => None,
    }
}

/// `key show DEVICE mac --escrow ID`: the key the server holds under that id.
fn mac_key(srv: &Server, device: &str, id: &str) -> String {
    let args = [
        "key",
        "show",
        device,
        "mac",
        "--escrow",
        id,
        "--reason",
        "crash test",
    ];
    let out = srv.cmd(&args);
    assert!(out.status.success(), "key show: {}", stderr(&out));
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

struct Escrowed {
    inst: Instance,
    srv: Server,
    agent: Child,
    device: String,
    /// The key in force, escrowed, as the server gives it back.
    key: String,
}

impl Drop for Escrowed {
    fn drop(&mut self) {
        let _ = self.agent.kill();
        let _ = self.agent.wait();
    }
}

/// Bootstrapped, the agent enrolled, and the first key it escrowed.
fn escrowed_mac() -> Escrowed {
    let inst = prepare_mac(false);
    let srv = Server::start(&inst);
    configure(&inst, &srv, "");
    let inst = inst.start();
    bootstrap(&inst, "setup");
    let (agent, device) = enroll_agent(&inst, &srv);
    let id = wait_for(&inst, "the first escrowed key", || escrowed(&inst));
    let key = mac_key(&srv, &device, &id);
    Escrowed {
        inst,
        srv,
        agent,
        device,
        key,
    }
}

/// Does a key someone holds unlock: the one escrowed before, or the one escrowed now? Once
/// FileVault replaced the key, the new one may be sealed in `pending/` for the escrow, or —
/// killed between `changerecovery` and the seal — known to nobody (FileVault cannot go back;
/// the next rotation replaces it), which keyward must then not claim is escrowed.
fn recovery_held(e: &Escrowed, replaced: bool) -> bool {
    if saved_mac(&e.inst).validates(&e.key) {
        return true;
    }
    match escrowed(&e.inst) {
        Some(id) => {
            let key = mac_key(&e.srv, &e.device, &id);
            saved_mac(&e.inst).validates(&key)
        }
        None => replaced,
    }
}

const ROTATE_ESCROWED: [&str; 3] = ["recovery", "rotate", "mac"];

#[test]
fn crash_at_every_step_of_an_escrowed_filevault_rotation() {
    // One traced rotation lists the steps.
    let mut e = escrowed_mac();
    e.inst.stop_helper();
    let log_start = e.inst.helper_stderr().len();
    e.inst.helper_env = vec![("KEYWARD_FAILPOINT_TRACE".into(), "1".into())];
    assert!(e.inst.try_start(), "{}", e.inst.helper_stderr());
    ok(&e.inst.keyward(&ROTATE_ESCROWED, b""), "traced", "rotate");
    let mut points: Vec<String> = e.inst.helper_stderr()[log_start..]
        .lines()
        .filter_map(|l| l.strip_prefix("keyward-helper: crash point "))
        .map(str::to_owned)
        .collect();
    drop(e);
    assert!(
        points
            .iter()
            .any(|p| p.starts_with("filevault-mac.recovery-changed")),
        "{points:?}"
    );
    points.extend(["recovery-begin.sealed", "recovery-escrow.sealed"].map(String::from));
    eprintln!("escrowed rotation: {points:?}");

    for (i, point) in points.iter().enumerate() {
        let mut e = escrowed_mac();
        let step = format!("escrowed rotation at {point}");
        e.inst.stop_helper();
        e.inst.helper_env = vec![("KEYWARD_FAILPOINT".into(), point.clone())];
        assert!(e.inst.try_start(), "{step}: {}", e.inst.helper_stderr());
        let out = e.inst.keyward(&ROTATE_ESCROWED, b"");
        assert_ne!(code(&out), Some(0), "{step}: {}", stderr(&out));
        assert!(e.inst.helper_died(), "{step}: not reached");
        e.inst.helper_env.clear();
        // The agent may finish or redo the rotation as soon as the helper is back, so the
        // recovery key holder is the server: checked apart, below.
        let held = Held {
            users: vec![("admin", ADMIN_PW)],
            recovery: None,
            service: true,
        };
        assert!(
            e.inst.try_start(),
            "{step}: restart: {}",
            e.inst.helper_stderr()
        );
        check(&e.inst, &held, &step);
        let replaced = points[..=i]
            .iter()
            .any(|p| p.starts_with("filevault-mac.recovery-changed"))
            || point.starts_with("recovery-");
        wait_for(
            &e.inst,
            &format!("{step}: a recovery key someone holds"),
            || recovery_held(&e, replaced).then_some(()),
        );

        // Run again: the key in force is escrowed, and the server's copy unlocks.
        ok(
            &e.inst.keyward(&ROTATE_ESCROWED, b""),
            &step,
            "rotate again",
        );
        let id = wait_for(&e.inst, "the key escrowed", || escrowed(&e.inst));
        let key = mac_key(&e.srv, &e.device, &id);
        assert!(
            saved_mac(&e.inst).validates(&key),
            "{step}: the escrowed key does not unlock"
        );
        assert!(
            !pending_key_file(&e.inst).exists(),
            "{step}: a pending key left"
        );
        service_ok(&e.inst, &step);
        check(&e.inst, &held, &step);
    }
}
