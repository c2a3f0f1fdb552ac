//! Regression tests from a hostile review of the I1 and audit-log work (issue 14). Each test's
//! comment describes the problem as it was found; each failed on the code of that time and
//! guards the fix now: the agent's records are folded by outcome, never by names it chooses;
//! its reads and refusals never eat the space kept for change records; and the start-up
//! reconcile records what it finishes, naming whose right it touched.
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

/// Records of the agent's reads, refusals and bad frames are appended with no regard to the
/// space keyward keeps for change records. With the log's file system just above that reserve,
/// the agent's own unfoldable requests eat it, and from then on the helper refuses every change
/// (grants, rekeys at password change, rotations) — the agent has switched keyward off. (The
/// same records, appended between a change's room check and its record, make the change's own
/// record fail after the change was made.)
#[test]
fn the_agent_cannot_eat_the_space_kept_for_change_records() {
    let mut inst = Instance::prepare();
    let log_dir = log_dir_on_tmpfs(&mut inst, "2m");
    let inst = inst.start();
    inst.bootstrap();
    // Leave 1 MiB + 96 KiB free: above the reserve, so changes are allowed.
    fill_log_dir_leaving(&inst, &log_dir, "1120K");
    let out = inst.keyward(&["service", "rotate", "data"], b"");
    assert_eq!(code(&out), Some(0), "room for a change: {}", stderr(&out));

    // The agent: requests its class is refused, each recorded in full (~250 bytes).
    for _ in 0..500 {
        let _ = inst.keyward_as(
            Some(NOBODY),
            &["revoke", "data", "someone-with-a-long-name"],
            b"",
        );
    }
    let out = inst.keyward(&["service", "rotate", "data"], b"");
    assert_eq!(
        code(&out),
        Some(0),
        "the agent's flood has made the helper refuse an admin's change: {}",
        stderr(&out)
    );
}
