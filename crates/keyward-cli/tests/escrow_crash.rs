//! Crash tests of the escrowed recovery rotation, with the real agent and server: for every
//! named failpoint on the way (begin, the slot's grant, the escrow record, commit, retiring the
//! old key), the helper is killed there (SIGKILL), restarted, reconciles, and then stock
//! cryptsetup proves that the service secret and an escrowed key the server decrypts both
//! still open the volume, and that the rotation can be finished with I1–I3 holding. And a
//! signed command killed after its id was spent (`command.recorded`) never runs, and a new one
//! does.
#![allow(clippy::unwrap_used)]

mod common;

use common::escrow::*;
use common::*;

const STEPS: &[&str] = &[
    "recovery-begin.sealed",
    "grant.intent-written",
    "grant.slot-added",
    "grant.verified",
    "grant.committed",
    "recovery-escrow.sealed",
    "recovery-commit.committed",
    "revoke.intent-written",
    "revoke.slot-destroyed",
    "recovery-commit.retired",
];

fn status(inst: &Instance) -> serde_json::Value {
    let out = inst.keyward(&["status", "data", "--json"], b"");
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Whether some active recovery slot opens with a key the server holds for it.
fn escrowed_key_opens(inst: &Instance, srv: &Server, device: &str) -> bool {
    let v = status(inst);
    v["volumes"][0]["holders"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["role"] == "recovery" && h["state"] == "active")
        .any(|h| {
            let slot = h["slot"].as_u64().unwrap();
            h["escrow_id"]
                .as_str()
                .and_then(|id| srv.key_by_id(device, id))
                .is_some_and(|key| inst.opens(slot, key.as_bytes()))
        })
}

fn service_ok(inst: &Instance) -> bool {
    let out = inst.keyward(&["verify", "--json"], b"");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["volumes"][0]["service"] == "ok"
}

#[test]
fn crash_at_every_step_of_an_escrowed_rotation() {
    let (mut exercised, mut lockouts) = (0, 0);
    for step in STEPS {
        let inst = Instance::prepare();
        let srv = Server::start(&inst);
        configure(&inst, &srv, "");
        let mut inst = inst.start();
        inst.bootstrap();
        let (mut agent, device) = enroll_agent(&inst, &srv);
        wait_for(&inst, "the first escrowed key", || settled_key(&inst));

        // A rotation through the agent, with the helper dying at `step`.
        inst.stop_helper();
        inst.helper_env = vec![("KEYWARD_FAILPOINT".into(), (*step).into())];
        assert!(inst.try_start());
        let out = inst.keyward(&["recovery", "rotate", "data"], b"");
        assert_ne!(code(&out), Some(0), "{step}: {}", stderr(&out));
        assert!(inst.helper_died(), "{step}: the failpoint was not reached");
        exercised += 1;

        // Restart; the helper reconciles before it serves.
        inst.helper_env.clear();
        assert!(inst.try_start(), "{step}: {}", inst.helper_stderr());
        let v = status(&inst);
        assert_eq!(
            v["volumes"][0]["violations"],
            serde_json::json!([]),
            "{step}: {v}"
        );
        if !(service_ok(&inst) && escrowed_key_opens(&inst, &srv, &device)) {
            lockouts += 1;
            eprintln!("{step}: LOCKOUT: {v}");
        }
        assert!(inst.opens(0, INSTALL_PASS.as_bytes()), "{step}");

        // The rotation can be finished: one recovery key, escrowed, decrypted by the server.
        let out = inst.keyward(&["recovery", "rotate", "data"], b"");
        assert_eq!(code(&out), Some(0), "{step}: {}", stderr(&out));
        let (slot, id) =
            settled_key(&inst).unwrap_or_else(|| panic!("{step}: {:?}", recovery_lines(&inst)));
        let key = srv.key_by_id(&device, &id).unwrap();
        assert!(inst.opens(slot, key.as_bytes()), "{step}");
        assert!(service_ok(&inst), "{step}");
        assert!(!inst.path("state/pending/data").exists(), "{step}");
        let _ = agent.kill();
        let _ = agent.wait();
    }
    println!("escrowed recovery rotation: {exercised} crash points exercised, {lockouts} lockouts");
    assert_eq!(exercised, STEPS.len());
    assert_eq!(lockouts, 0);
}

/// The service slot's number, from `keyward status`.
fn service_slot(inst: &Instance) -> u64 {
    let v = status(inst);
    let slots: Vec<u64> = v["volumes"][0]["holders"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["role"] == "service")
        .map(|h| h["slot"].as_u64().unwrap())
        .collect();
    assert_eq!(slots.len(), 1, "{v}");
    slots[0]
}

/// A signed command the helper is killed on after spending its id and before running it
/// (`command.recorded`): after the restart the volume opens as before and the command has not
/// run, and never runs: the agent relays the server's resend, the helper refuses it as a replay
/// and the server lists it as refused; a new command for the same thing runs.
#[test]
fn a_command_killed_after_its_id_was_spent_is_refused_and_can_be_reissued() {
    const FAST: &str = "checkin_interval_secs = 1\nretry_initial_secs = 1\nretry_max_secs = 2\n";
    let inst = Instance::prepare();
    let srv = Server::start(&inst);
    configure(&inst, &srv, FAST);
    let mut inst = inst.start();
    inst.bootstrap();
    let (mut agent, device) = enroll_agent(&inst, &srv);
    wait_for(&inst, "the first escrowed key", || settled_key(&inst));
    let before = service_slot(&inst);
    let issue = || {
        let out = srv.cmd(&["command", "rotate-service", &device, "data"]);
        assert_eq!(code(&out), Some(0), "{}", stderr(&out));
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    let status_of = |id: &str| {
        let out = srv.cmd(&["command", "list", &device, "--json"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        let c = v.as_array()?.iter().find(|c| c["id"] == id)?.clone();
        (c["status"] != "pending").then(|| c.to_string())
    };

    inst.stop_helper();
    inst.helper_env = vec![("KEYWARD_FAILPOINT".into(), "command.recorded".into())];
    assert!(inst.try_start());
    let spent = issue();
    assert!(
        inst.helper_died(),
        "the failpoint was not reached: {}",
        agent_log(&inst)
    );
    inst.helper_env.clear();
    assert!(inst.try_start(), "{}", inst.helper_stderr());
    assert_eq!(service_slot(&inst), before, "the command ran");
    assert!(service_ok(&inst));
    assert!(inst.opens(0, INSTALL_PASS.as_bytes()));
    let fate = wait_for(&inst, "the spent command's fate at the server", || {
        status_of(&spent)
    });
    assert!(
        fate.contains("\"status\":\"refused\"") && fate.contains("already used (replay)"),
        "{fate}\n{}",
        agent_log(&inst)
    );
    // It stays not run: several check-ins later the service slot is the same.
    std::thread::sleep(std::time::Duration::from_secs(3));
    assert_eq!(service_slot(&inst), before, "the spent command ran later");

    let again = issue();
    let fate = wait_for(&inst, "the new command's fate", || status_of(&again));
    assert!(
        fate.contains("\"status\":\"done\""),
        "{fate}\n{}",
        agent_log(&inst)
    );
    assert_ne!(service_slot(&inst), before);
    assert!(service_ok(&inst));
    let _ = agent.kill();
    let _ = agent.wait();
}
