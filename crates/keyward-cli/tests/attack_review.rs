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
