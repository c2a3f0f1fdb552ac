//! Hostile review of the I1 and audit-log changes: each test here demonstrates a problem found
//! in review (it fails until the product is fixed).
#![allow(clippy::unwrap_used)]

mod common;

use common::*;

fn op_of(line: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    v["op"].as_str().unwrap_or_default().to_owned()
}

/// The fold keys on `op volume user result`, and the volume is the agent's to choose: a
/// well-formed name that is not configured is answered with an error naming it, so every
/// request is a new key and a new record. The agent's reads still grow the log without bound.
#[test]
fn the_agent_cannot_flood_the_log_by_naming_unknown_volumes() {
    let inst = Instance::prepare().start();
    inst.bootstrap();
    let before = inst.audit_lines().len();
    for i in 0..30 {
        let name = format!("nosuch{i}");
        let _ = inst.keyward_as(Some(NOBODY), &["status", &name, "--json"], b"");
    }
    let lines = inst.audit_lines();
    let reads = lines[before..]
        .iter()
        .filter(|l| op_of(l) == "status")
        .count();
    assert!(
        reads <= 2,
        "30 agent reads within a minute left {reads} records: {:?}",
        &lines[before..]
    );
}

/// Only Status, Audit and PolicyShow are folded. Everything else the agent sends — an idempotent
/// Verify, an operation its class is refused, a repeated RecoveryBegin — is written in full every
/// time, so the agent can still grow the log without bound (and, once the log's file system is
/// down to keyward's reserve, have every grant and rekey refused).
#[test]
fn the_agent_cannot_flood_the_log_with_verifies_or_refused_requests() {
    let inst = Instance::prepare().start();
    inst.bootstrap();
    let before = inst.audit_lines().len();
    for _ in 0..15 {
        let _ = inst.keyward_as(Some(NOBODY), &["verify", "data", "--json"], b"");
        let _ = inst.keyward_as(Some(NOBODY), &["revoke", "data", "alice"], b"");
    }
    let lines = inst.audit_lines();
    let added = lines.len() - before;
    assert!(
        added <= 4,
        "30 agent requests within a minute left {added} records: {:?}",
        &lines[before..]
    );
}

/// The helper changes the header first and appends the audit record afterwards, and the
/// start-up reconcile that finishes an interrupted operation records nothing. A power cut right
/// after a revoke destroyed the user's keyslot leaves that user's unlock right gone with no
/// trace in the chain: no `revoke` record, no reconcile record, and `audit --verify` passes.
#[test]
fn a_revoke_cut_short_by_a_crash_is_still_recorded() {
    let mut inst = Instance::prepare().start();
    inst.bootstrap();
    let out = inst.keyward(
        &["grant", "data", "daemon", "--passphrase-stdin"],
        b"daemon pw\n",
    );
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    let before = inst.audit_lines().len();

    inst.stop_helper();
    inst.helper_env = vec![("KEYWARD_FAILPOINT".into(), "revoke.slot-destroyed".into())];
    assert!(inst.try_start());
    let out = inst.keyward(&["revoke", "data", "daemon"], b"");
    assert_eq!(code(&out), Some(5), "the helper should have died");
    assert!(inst.helper_died());
    inst.helper_env.clear();
    assert!(inst.try_start(), "{}", inst.helper_stderr());

    // The right is gone...
    let status = inst.keyward(&["status", "data", "--json"], b"");
    assert!(
        !String::from_utf8_lossy(&status.stdout).contains("\"daemon\""),
        "daemon's slot should be gone: {}",
        String::from_utf8_lossy(&status.stdout)
    );
    // ...and the chain should say so.
    let lines = inst.audit_lines();
    let mentions = lines[before..]
        .iter()
        .filter(|l| l.contains("daemon") && !l.contains("\"op\":\"status\""))
        .count();
    assert!(
        mentions > 0,
        "daemon's unlock right was removed with no audit record: {:?}",
        &lines[before..]
    );
}
