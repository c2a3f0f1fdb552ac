//! The JSON views against docs/MACHINE-OUTPUT.md's own examples: the set of field paths a full
//! report prints must be the set the document shows, both ways.

use std::collections::BTreeSet;

use serde_json::Value;

use super::*;

const DOC: &str = include_str!("../../../../docs/MACHINE-OUTPUT.md");

/// The first ```json block after the heading that starts with `heading`.
fn doc_example(heading: &str) -> Value {
    let at = DOC
        .find(heading)
        .unwrap_or_else(|| panic!("no {heading} in MACHINE-OUTPUT.md"));
    let rest = &DOC[at..];
    let start = rest.find("```json\n").expect("a json block") + "```json\n".len();
    let len = rest[start..].find("```").expect("the block's end");
    // The examples shorten ids with an ellipsis inside strings; that is still JSON.
    serde_json::from_str(&rest[start..start + len]).expect("the example is JSON")
}

/// Every field path in `v`: `volumes[].holders[].slot`, …
fn paths(v: &Value, prefix: &str, out: &mut BTreeSet<String>) {
    match v {
        Value::Object(o) => {
            for (k, v) in o {
                let p = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                out.insert(p.clone());
                paths(v, &p, out);
            }
        }
        Value::Array(a) => {
            for v in a {
                paths(v, &format!("{prefix}[]"), out);
            }
        }
        _ => {}
    }
}

fn all_paths(v: &Value) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    paths(v, "", &mut out);
    out
}

fn work() -> WorkReport {
    WorkReport {
        slots: 2,
        argon2_kib_passes: 1024,
        pbkdf2_iterations: 1000,
        unknown_slots: 0,
    }
}

fn a_finding() -> FindingReport {
    FindingReport {
        finding: "weak-kdf".into(),
        slot: 1,
        role: "unmanaged".into(),
        user: Some("alice".into()),
        kdf: "pbkdf2".into(),
        hash: Some("sha256".into()),
        iterations: Some(1000),
        time: Some(1),
        memory_kib: Some(1024),
        cpus: Some(1),
        detail: "below the floor".into(),
    }
}

/// A status report with every optional field set and every list non-empty.
fn full_status() -> Vec<VolumeReport> {
    vec![VolumeReport {
        volume: "data".into(),
        holders: vec![HolderReport {
            slot: 30,
            role: "user".into(),
            user: Some("alice".into()),
            uid: Some(1000),
            kdf: "argon2id".into(),
            state: "active".into(),
            escrow_id: Some("esc-1".into()),
            created: Some(1),
            priority: "prefer".into(),
            standing: Some("managed".into()),
        }],
        violations: vec!["I1".into()],
        findings: vec![a_finding()],
        error: Some("cannot read".into()),
        unlock_cost: Some(UnlockCostReport {
            order: vec![30],
            last_user: Some("alice".into()),
            last_user_slot: Some(30),
            last_user_cost: Some(work()),
            wrong_password: work(),
        }),
    }]
}

fn full_verify() -> Vec<VerifyReport> {
    vec![VerifyReport {
        volume: "data".into(),
        service: "drift".into(),
        detail: Some("no longer opens".into()),
        users: vec![UserReport {
            user: "alice".into(),
            slot: 30,
            status: "managed".into(),
            revoked: false,
            detail: Some("kept".into()),
        }],
        violations: vec!["I1".into()],
        findings: vec![a_finding()],
    }]
}

#[test]
fn status_json_has_exactly_the_documented_fields() {
    let reports = full_status();
    let printed = serde_json::to_value(StatusJson::new(&reports)).expect("serializes");
    let documented = doc_example("## `keyward status [VOLUME] --json`");
    // The example shows a healthy volume: its lists of problems are empty, so their fields
    // are documented in the findings example and the tables, not in this block.
    let mut want = all_paths(&documented);
    want.extend(
        all_paths(&doc_example("## `keyward verify [VOLUME] --json`"))
            .into_iter()
            .filter(|p| p.starts_with("volumes[].findings[]")),
    );
    assert_eq!(all_paths(&printed), want);
}

#[test]
fn verify_json_has_exactly_the_documented_fields() {
    let reports = full_verify();
    let printed = serde_json::to_value(VerifyJson::new(&reports)).expect("serializes");
    let documented = doc_example("## `keyward verify [VOLUME] --json`");
    assert_eq!(all_paths(&printed), all_paths(&documented));
}

#[test]
fn the_views_carry_the_reports_values() {
    let reports = full_status();
    let v = serde_json::to_value(StatusJson::new(&reports)).expect("serializes");
    let h = &v["volumes"][0]["holders"][0];
    assert_eq!(h["slot"], 30);
    assert_eq!(h["user"], "alice");
    assert_eq!(h["standing"], "managed");
    assert_eq!(
        v["volumes"][0]["unlock_cost"]["last_user_cost"]["argon2_kib_passes"],
        1024
    );
    assert_eq!(v["volumes"][0]["findings"][0]["memory_kib"], 1024);
    let reports = full_verify();
    let v = serde_json::to_value(VerifyJson::new(&reports)).expect("serializes");
    assert_eq!(v["volumes"][0]["service"], "drift");
    assert_eq!(v["volumes"][0]["users"][0]["revoked"], false);
}
