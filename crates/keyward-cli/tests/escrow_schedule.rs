//! The agent's escrow schedule against the real server, helper and cryptsetup: it escrows a
//! key as soon as it enrolls, reports to the server, rotates a key after an admin has seen it,
//! and while the server is away or failing (down, answering 500) keeps retrying with backoff —
//! the current key opening the disk all along. Also: pending keys older than policy are
//! dropped, and a full disk while sealing the pending key leaves nothing behind.
#![allow(clippy::unwrap_used)]

mod common;

use common::escrow::*;
use common::*;

const FAST: &str = "checkin_interval_secs = 1\nretry_initial_secs = 1\nretry_max_secs = 2\n";

/// The volume's entry in the server's device list, once it names `escrow_id` as active.
fn reported(srv: &Server, escrow_id: &str) -> Option<serde_json::Value> {
    let devices = srv.devices();
    let v = devices[0]["volumes"][0].clone();
    (v["escrow_id"] == escrow_id).then_some(v)
}

#[test]
fn the_agent_rotates_after_use_and_retries_while_the_server_is_away() {
    for backend in backends() {
        after_use_and_retries(&backend);
    }
}

fn after_use_and_retries(backend: &Backend) {
    let inst = Instance::prepare();
    let mut srv = Server::start_on(&inst, backend);
    configure(&inst, &srv, FAST);
    let inst = inst.start();
    inst.bootstrap();
    let (mut agent, device) = enroll_agent(&inst, &srv);

    // Escrowed on enrollment, and reported: escrowed, service secret verified.
    let (slot1, esc1) = wait_for(&inst, "the first escrowed key", || settled_key(&inst));
    let v = wait_for(&inst, "the check-in", || reported(&srv, &esc1));
    assert_eq!(v["recovery"], "escrowed", "{v}");
    assert_eq!(v["service"], "ok", "{v}");
    assert_eq!(v["rotate_after_use"], false, "{v}");
    assert!(srv.devices()[0]["last_checkin"].is_string());

    // An admin reads the key: it opens the disk, and the device rotates it after use.
    let key1 = srv.key_show(&device, "user locked out, ticket 7");
    assert!(inst.opens(slot1, key1.as_bytes()));
    let (slot2, esc2) = wait_for(&inst, "rotation after use", || {
        settled_key(&inst).filter(|(_, e)| *e != esc1)
    });
    assert!(!inst.opens(slot1, key1.as_bytes()) && !inst.opens(slot2, key1.as_bytes()));
    let key2 = srv.key_show(&device, "second drill");
    assert!(inst.opens(slot2, key2.as_bytes()));

    // The server goes away with a rotation due: the agent backs off and retries; the key
    // the admin holds keeps opening the disk.
    srv.stop();
    wait_for(&inst, "a retry", || {
        agent_log(&inst)
            .contains("escrow round failed")
            .then_some(())
    });
    assert_eq!(settled_key(&inst), Some((slot2, esc2.clone())));
    assert!(inst.opens(slot2, key2.as_bytes()));
    srv.resume();
    let (slot3, esc3) = wait_for(&inst, "rotation once the server is back", || {
        settled_key(&inst).filter(|(_, e)| *e != esc2)
    });
    assert!(!inst.opens(slot2, key2.as_bytes()));

    // The server answers 500 on every escrow (its database refuses the insert): the rotation
    // begins, its upload fails, and it stays pending beside the valid key until the fault goes.
    srv.fail_escrows();
    let key3 = srv.key_show(&device, "third drill");
    wait_for(&inst, "a 500 from the server", || {
        agent_log(&inst).contains("answered 500").then_some(())
    });
    let lines = recovery_lines(&inst);
    assert!(lines.iter().any(|l| l.contains("pending")), "{lines:?}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("active") && l.contains(&esc3)),
        "{lines:?}"
    );
    assert!(inst.opens(slot3, key3.as_bytes()));
    srv.heal();
    let (slot4, esc4) = wait_for(&inst, "rotation once the fault is gone", || {
        settled_key(&inst).filter(|(_, e)| *e != esc3)
    });
    assert!(!inst.opens(slot3, key3.as_bytes()));
    wait_for(&inst, "the last check-in", || reported(&srv, &esc4));
    let key4 = srv.key_show(&device, "final check");
    assert!(inst.opens(slot4, key4.as_bytes()));
    let _ = agent.kill();
    let _ = agent.wait();
}

fn slot_exists(inst: &Instance, slot: u32) -> bool {
    inst.metadata()["keyslots"].get(slot.to_string()).is_some()
}

#[test]
fn pending_keys_older_than_policy_are_dropped() {
    let inst = Instance::prepare();
    let srv = Server::start(&inst);
    set_policy(&inst, "pending_max_age_secs = 1");
    configure(&inst, &srv, "");
    let mut inst = inst.start();
    inst.bootstrap();

    // Before the next operation...
    let (slot, ..) = escrow_begin(&inst.socket());
    assert!(slot_exists(&inst, slot));
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let out = inst.keyward(&["verify"], b"");
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    assert!(!slot_exists(&inst, slot), "{}", inst.helper_stderr());
    assert!(recovery_lines(&inst).is_empty());
    assert!(!inst.path("state/pending/data").exists());

    // ...and at start-up.
    let (slot, ..) = escrow_begin(&inst.socket());
    inst.stop_helper();
    std::thread::sleep(std::time::Duration::from_millis(2100));
    assert!(inst.try_start());
    assert!(!slot_exists(&inst, slot));
    assert!(inst.helper_stderr().contains("older than 1s"));
    assert!(inst.opens(0, INSTALL_PASS.as_bytes()));
}

#[test]
fn a_full_disk_while_sealing_the_pending_key_leaves_the_old_key_alone() {
    let mut inst = Instance::prepare();
    let srv = Server::start(&inst);
    configure(&inst, &srv, FAST);
    // The helper's pending/ is a one-page tmpfs, filled, in the helper's own mount namespace.
    let pending = inst.path("state/pending");
    std::fs::create_dir_all(&pending).unwrap();
    chmod(&inst.path("state"), 0o700);
    chmod(&pending, 0o700);
    inst.helper_in_namespace(
        "mount -t tmpfs -o size=4k,mode=700 keyward-test \"$1\" && head -c 4096 /dev/zero > \"$1/filler\" && shift && exec \"$@\"",
        &["sh", &pending.display().to_string()],
    );
    let inst = inst.start();
    inst.bootstrap();
    let before = inst.metadata()["keyslots"].clone();
    let volume = keyward_core::VolumeName::parse("data").unwrap();
    let begin = || {
        keyward_sys::helper_client::call(
            &inst.socket(),
            keyward_core::ipc::Request::RecoveryEscrowBegin {
                volume: volume.clone(),
            },
        )
    };

    // Full: the key cannot be sealed, so no slot is added and no partial file is left.
    let e = begin().unwrap_err();
    assert!(e.message.contains("No space left"), "{}", e.message);
    assert_eq!(inst.metadata()["keyslots"], before);
    in_helper_ns(
        &inst,
        &format!("test \"$(ls -A {})\" = filler", pending.display()),
    );

    // One page free: the key is sealed and its slot added, but its escrow record does not
    // fit. The rotation stays pending; the old ways in are untouched.
    in_helper_ns(&inst, &format!("rm {}/filler", pending.display()));
    let e = begin().unwrap_err();
    assert!(e.message.contains("No space left"), "{}", e.message);
    let lines = recovery_lines(&inst);
    assert!(
        lines.len() == 1 && lines[0].contains("pending"),
        "{lines:?}"
    );
    assert!(inst.opens(0, INSTALL_PASS.as_bytes()));

    // Space again: the agent, enrolled now, finishes that rotation and escrows it.
    in_helper_ns(
        &inst,
        &format!("mount -o remount,size=1m {}", pending.display()),
    );
    let (mut agent, device) = enroll_agent(&inst, &srv);
    let (slot, _) = wait_for(&inst, "the escrowed key", || settled_key(&inst));
    let key = srv.key_show(&device, "after the disk filled");
    assert!(inst.opens(slot, key.as_bytes()));
    let _ = agent.kill();
    let _ = agent.wait();
}

fn slot_of_role(inst: &Instance, role: &str) -> Vec<u64> {
    let out = inst.keyward(&["status", "data", "--json"], b"");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["volumes"][0]["holders"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["role"] == role)
        .map(|h| h["slot"].as_u64().unwrap())
        .collect()
}

#[test]
fn commands_issued_at_the_server_run_at_the_next_check_in() {
    for backend in backends() {
        commands_round_trip(&backend);
    }
}

fn commands_round_trip(backend: &Backend) {
    let inst = Instance::prepare();
    let srv = Server::start_on(&inst, backend);
    configure(&inst, &srv, FAST);
    let inst = inst.start();
    inst.bootstrap();
    let out = inst.keyward(
        &["grant", "data", "daemon", "--passphrase-stdin"],
        b"daemon pw\n",
    );
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    let (mut agent, device) = enroll_agent(&inst, &srv);
    let (_, first) = wait_for(&inst, "the first escrowed key", || settled_key(&inst));
    let service = slot_of_role(&inst, "service");
    let daemon = slot_of_role(&inst, "user");

    let issue = |args: &[&str]| {
        let mut all = vec!["command"];
        all.extend_from_slice(args);
        let out = srv.cmd(&all);
        assert_eq!(code(&out), Some(0), "{}", stderr(&out));
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    let ids = [
        issue(&["rotate-service", &device, "data"]),
        issue(&["revoke-user", &device, "data", "daemon"]),
        issue(&["rotate-recovery", &device, "data"]),
        issue(&["set-policy", &device, "--recovery-rotation-days", "30"]),
    ];
    let unknown = srv.cmd(&["command", "rotate-service", "dev-nobody", "data"]);
    assert_ne!(code(&unknown), Some(0), "only enrolled devices");

    let listed = wait_for(&inst, "every command reported done", || {
        let out = srv.cmd(&["command", "list", &device, "--json"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        let all = v.as_array()?.clone();
        ids.iter()
            .all(|id| {
                all.iter()
                    .any(|c| c["id"] == *id && c["status"] != "pending")
            })
            .then_some(all)
    });
    for c in &listed {
        assert_eq!(c["status"], "done", "{c}");
    }
    assert_ne!(slot_of_role(&inst, "service"), service);
    assert!(slot_of_role(&inst, "user").is_empty());
    assert!(!inst.opens(daemon[0], b"daemon pw"));
    let (slot, now) = wait_for(&inst, "the rotated key", || {
        settled_key(&inst).filter(|(_, e)| *e != first)
    });
    let key = srv.key_show(&device, "after the command");
    assert!(inst.opens(slot, key.as_bytes()));
    assert_ne!(now, first);
    let verify = inst.keyward(&["verify", "--json"], b"");
    let v: serde_json::Value = serde_json::from_slice(&verify.stdout).unwrap();
    assert_eq!(v["volumes"][0]["service"], "ok", "{v}");
    let audit = String::from_utf8(srv.cmd(&["audit"]).stdout).unwrap();
    assert!(audit.contains("command-revoke-user"), "{audit}");
    let _ = agent.kill();
    let _ = agent.wait();
}
