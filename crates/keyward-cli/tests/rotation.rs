//! Service secret rotation through the real helper, and its crash safety: the helper is killed
//! at every step of a rotation (helper steps and LUKS steps alike), restarted, and must then
//! report a working service secret that stock cryptsetup confirms, with exactly one service
//! slot, the other holders intact, and the next rotation succeeding.
//! Needs the `failpoints` features (the README's test command sets them).
#![allow(clippy::unwrap_used)]

mod common;

use common::*;

fn service_slots(inst: &Instance) -> Vec<serde_json::Value> {
    let out = inst.keyward(&["status", "data", "--json"], b"");
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        v["volumes"][0]["violations"].as_array().unwrap().is_empty(),
        "{v}"
    );
    for h in v["volumes"][0]["holders"].as_array().unwrap() {
        assert!(
            h["state"] == "active" || h["state"] == "unmanaged",
            "unsettled holder {h}"
        );
    }
    v["volumes"][0]["holders"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["role"] == "service")
        .cloned()
        .collect()
}

/// The one service slot opens with the stored secret, per stock cryptsetup.
fn service_works(inst: &Instance) -> bool {
    let slots = service_slots(inst);
    let secret = std::fs::read(inst.path("state/service/data")).unwrap_or_default();
    slots.len() == 1 && inst.opens(slots[0]["slot"].as_u64().unwrap(), &secret)
}

#[test]
fn rotation_replaces_the_service_slot() {
    let inst = Instance::prepare().start();
    inst.bootstrap();
    let before = service_slots(&inst)[0]["slot"].as_u64().unwrap();
    let old_secret = std::fs::read(inst.path("state/service/data")).unwrap();
    let out = inst.keyward(&["service", "rotate", "data"], b"");
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    assert!(service_works(&inst));
    let after = service_slots(&inst)[0]["slot"].as_u64().unwrap();
    assert_ne!(before, after);
    assert_ne!(
        std::fs::read(inst.path("state/service/data")).unwrap(),
        old_secret
    );
    assert!(
        !inst.opens(before, &old_secret),
        "the old secret opens nothing"
    );
    assert!(!inst.opens(after, &old_secret));
    assert!(inst.opens(0, INSTALL_PASS.as_bytes()));
    // The agent may not rotate.
    let out = inst.keyward_as(Some(NOBODY), &["service", "rotate", "data"], b"");
    assert_eq!(code(&out), Some(4));
}

#[test]
fn crash_at_every_step_of_a_rotation() {
    const STEPS: &[&str] = &[
        "service-rotate.next-written",
        "grant.intent-written",
        "grant.slot-added",
        "grant.verified",
        "grant.committed",
        "service-rotate.slot-added",
        "service-rotate.renamed",
        "service-rotate.committed",
        "revoke.intent-written",
        "revoke.slot-destroyed",
    ];
    let (mut exercised, mut lockouts) = (0, 0);
    for step in STEPS {
        let mut inst = Instance::prepare().start();
        inst.bootstrap();
        let out = inst.keyward(
            &["grant", "data", "daemon", "--passphrase-stdin"],
            b"daemon pw\n",
        );
        assert_eq!(code(&out), Some(0), "{}", stderr(&out));

        inst.stop_helper();
        inst.helper_env = vec![("KEYWARD_FAILPOINT".into(), (*step).into())];
        assert!(inst.try_start());
        let out = inst.keyward(&["service", "rotate", "data"], b"");
        assert_eq!(
            code(&out),
            Some(5),
            "{step}: the helper should have died: {}",
            stderr(&out)
        );
        assert!(inst.helper_died(), "{step}: helper still running");
        exercised += 1;

        inst.helper_env.clear();
        assert!(
            inst.try_start(),
            "{step}: restart: {}",
            inst.helper_stderr()
        );
        let out = inst.keyward(&["verify", "--json"], b"");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["volumes"][0]["service"], "ok", "{step}: {v}");
        if !service_works(&inst) {
            lockouts += 1;
        }
        assert!(
            inst.opens(0, INSTALL_PASS.as_bytes()),
            "{step}: installer slot"
        );
        let status = inst.keyward(&["status", "data", "--json"], b"");
        let v: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
        let daemon = v["volumes"][0]["holders"]
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h["user"] == "daemon")
            .cloned();
        assert!(
            inst.opens(daemon.unwrap()["slot"].as_u64().unwrap(), b"daemon pw"),
            "{step}"
        );
        // Healthy enough to rotate again.
        let out = inst.keyward(&["service", "rotate", "data"], b"");
        assert_eq!(code(&out), Some(0), "{step}: {}", stderr(&out));
        assert!(service_works(&inst), "{step}: after a second rotation");
    }
    println!("service rotation: {exercised} crash points exercised, {lockouts} lockouts");
    assert_eq!(lockouts, 0);
}

fn recovery_holders(inst: &Instance) -> Vec<serde_json::Value> {
    let out = inst.keyward(&["status", "data", "--json"], b"");
    assert_eq!(
        code(&out),
        Some(0),
        "status: {}\nhelper: {}",
        stderr(&out),
        inst.helper_stderr()
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["volumes"][0]["holders"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["role"] == "recovery")
        .cloned()
        .collect()
}

/// The key printed by `keyward recovery rotate --show`.
fn shown_key(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .find(|w| w.len() == 71 && w.matches('-').count() == 7)
        .unwrap_or_else(|| panic!("no key in {}", String::from_utf8_lossy(&out.stdout)))
        .to_owned()
}

/// A full standalone rotation (show, then confirm); returns the new, committed key.
fn rotate_recovery(inst: &Instance) -> String {
    let out = inst.keyward(
        &["recovery", "rotate", "data", "--show", "--confirm-stdin"],
        b"",
    );
    let key = shown_key(&out);
    let group = key.rsplit('-').next().unwrap().to_owned();
    let out = inst.keyward(
        &["recovery", "rotate", "data", "--show", "--confirm-stdin"],
        format!("{group}\n").as_bytes(),
    );
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    assert_eq!(
        shown_key(&out),
        key,
        "a repeated run shows the same pending key"
    );
    key
}

#[test]
fn standalone_recovery_rotation_commits_only_after_the_key_is_typed_back() {
    let inst = Instance::prepare().start();
    inst.bootstrap();
    assert_eq!(
        code(&inst.keyward(&["recovery", "rotate", "data"], b"")),
        Some(2),
        "escrow needs --show for now"
    );

    // A wrong confirmation: nothing committed; the key stays pending, and the run can be repeated.
    let out = inst.keyward(
        &["recovery", "rotate", "data", "--show", "--confirm-stdin"],
        b"wrong\n",
    );
    assert_eq!(code(&out), Some(4), "{}", stderr(&out));
    let k1 = shown_key(&out);
    keyward_core::recovery_key::parse(k1.as_bytes()).unwrap();
    let pending = recovery_holders(&inst);
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0]["state"], "pending");
    let meta = std::fs::metadata(inst.path("state/pending/data")).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777,
        0o600
    );

    // The same key again (idempotent), confirmed with its last group: committed.
    let last = k1.rsplit('-').next().unwrap().to_uppercase();
    let out = inst.keyward(
        &["recovery", "rotate", "data", "--show", "--confirm-stdin"],
        format!(" {last} \n").as_bytes(),
    );
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    assert_eq!(shown_key(&out), k1);
    let active = recovery_holders(&inst);
    assert_eq!(active.len(), 1);
    assert_eq!(active[0]["state"], "active");
    let s1 = active[0]["slot"].as_u64().unwrap();
    assert!(
        inst.opens(s1, k1.as_bytes()),
        "stock cryptsetup opens the committed key"
    );
    assert!(
        !inst.path("state/pending/data").exists(),
        "the pending copy is gone"
    );

    // Rotate again: the new key works, the old one opens nothing.
    let k2 = rotate_recovery(&inst);
    let active = recovery_holders(&inst);
    assert_eq!(active.len(), 1);
    let s2 = active[0]["slot"].as_u64().unwrap();
    assert!(inst.opens(s2, k2.as_bytes()));
    assert!(!inst.opens(s1, k1.as_bytes()) && !inst.opens(s2, k1.as_bytes()));

    // Abort: the pending key goes, the committed one stays.
    let out = inst.keyward(
        &["recovery", "rotate", "data", "--show", "--confirm-stdin"],
        b"no\n",
    );
    assert_eq!(code(&out), Some(4));
    assert_eq!(recovery_holders(&inst).len(), 2);
    let out = inst.keyward(&["recovery", "abort", "data"], b"");
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    let left = recovery_holders(&inst);
    assert_eq!(left.len(), 1);
    assert_eq!(left[0]["slot"].as_u64().unwrap(), s2);
    assert!(inst.opens(s2, k2.as_bytes()));
    // The key never reached the audit log.
    let audit = inst.audit_lines().join("\n");
    assert!(!audit.contains(&k1) && !audit.contains(&k2));
}

#[test]
fn crash_at_every_step_of_a_recovery_rotation() {
    // (failpoint, during begin?) — begin steps crash the `rotate --show` call before the key is
    // shown; commit steps crash after the admin typed the group back.
    const STEPS: &[(&str, bool)] = &[
        ("recovery-begin.sealed", true),
        ("grant.intent-written", true),
        ("grant.slot-added", true),
        ("grant.verified", true),
        ("grant.committed", true),
        ("recovery-commit.committed", false),
        ("revoke.intent-written", false),
        ("revoke.slot-destroyed", false),
    ];
    let (mut exercised, mut lockouts) = (0, 0);
    for (step, in_begin) in STEPS {
        let mut inst = Instance::prepare().start();
        inst.bootstrap();
        // A committed recovery key K1 to begin with.
        let k1 = rotate_recovery(&inst);

        // Rotate to K2, with the helper dying at `step`.
        let mut k2 = None;
        if !in_begin {
            let out = inst.keyward(
                &["recovery", "rotate", "data", "--show", "--confirm-stdin"],
                b"",
            );
            k2 = Some(shown_key(&out));
        }
        inst.stop_helper();
        inst.helper_env = vec![("KEYWARD_FAILPOINT".into(), (*step).into())];
        assert!(inst.try_start());
        let confirm = k2
            .as_deref()
            .map(|k| format!("{}\n", k.rsplit('-').next().unwrap()))
            .unwrap_or_default();
        let out = inst.keyward(
            &["recovery", "rotate", "data", "--show", "--confirm-stdin"],
            confirm.as_bytes(),
        );
        assert_eq!(code(&out), Some(5), "{step}: {}", stderr(&out));
        assert!(inst.helper_died(), "{step}");
        exercised += 1;
        inst.helper_env.clear();
        assert!(inst.try_start());

        // A key the admin holds still opens the disk: K1, or K2 once it was confirmed.
        let holders = recovery_holders(&inst);
        let works = |k: &str| {
            holders.iter().any(|h| {
                h["state"] == "active" && inst.opens(h["slot"].as_u64().unwrap(), k.as_bytes())
            })
        };
        if !(works(&k1) || k2.as_deref().is_some_and(works)) {
            lockouts += 1;
        }
        // The start-up reconcile finished an interrupted commit: one committed recovery key,
        // and a key that is no longer pending is not left on disk.
        let active = holders.iter().filter(|h| h["state"] == "active").count();
        assert_eq!(active, 1, "{step}: {holders:?}");
        if !holders.iter().any(|h| h["state"] == "pending") {
            assert!(
                !inst.path("state/pending/data").exists(),
                "{step}: a committed recovery key is still stored in state/pending"
            );
        }
        // And the rotation can be finished.
        let k3 = rotate_recovery(&inst);
        let holders = recovery_holders(&inst);
        assert_eq!(holders.len(), 1, "{step}: {holders:?}");
        assert!(
            inst.opens(holders[0]["slot"].as_u64().unwrap(), k3.as_bytes()),
            "{step}"
        );
    }
    println!("recovery rotation: {exercised} crash points exercised, {lockouts} lockouts");
    assert_eq!(lockouts, 0);
}

#[test]
fn a_drifted_service_slot_is_replaced_with_a_holders_passphrase() {
    let inst = Instance::prepare().start();
    inst.bootstrap();
    let out = inst.keyward(
        &["grant", "data", "daemon", "--passphrase-stdin"],
        b"daemon pw\n",
    );
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    let nothing = inst.keyward(
        &["service", "repair", "data", "--passphrase-stdin"],
        b"daemon pw\n",
    );
    assert_eq!(
        code(&nothing),
        Some(4),
        "a working slot is not replaced: {}",
        stderr(&nothing)
    );

    // The stored secret is lost (replaced by another one): drift.
    let stale = service_slots(&inst)[0]["slot"].as_u64().unwrap();
    std::fs::write(inst.path("state/service/data"), "0".repeat(64)).unwrap();
    let out = inst.keyward(&["verify", "--json"], b"");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["volumes"][0]["service"], "drift", "{v}");
    let grant = inst.keyward(&["grant", "data", "bin", "--passphrase-stdin"], b"pw\n");
    assert_ne!(
        code(&grant),
        Some(0),
        "nothing is granted while the service secret drifts"
    );

    // A wrong passphrase changes nothing; a user's passphrase repairs it.
    let wrong = inst.keyward(
        &["service", "repair", "data", "--passphrase-stdin"],
        b"not a passphrase\n",
    );
    assert_ne!(code(&wrong), Some(0));
    assert_eq!(service_slots(&inst)[0]["slot"].as_u64().unwrap(), stale);
    let out = inst.keyward(
        &["service", "repair", "data", "--passphrase-stdin"],
        b"daemon pw\n",
    );
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    assert!(service_works(&inst));
    assert_ne!(service_slots(&inst)[0]["slot"].as_u64().unwrap(), stale);
    let out = inst.keyward(&["verify", "--json"], b"");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["volumes"][0]["service"], "ok", "{v}");
    assert!(inst.opens(0, INSTALL_PASS.as_bytes()));
    let grant = inst.keyward(&["grant", "data", "bin", "--passphrase-stdin"], b"pw\n");
    assert_eq!(code(&grant), Some(0), "{}", stderr(&grant));
}
