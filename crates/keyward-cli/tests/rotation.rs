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
