//! `keyward status --json` has one shape on both platforms: a LUKS2 volume (the metadata of a
//! real image, fixtures/luks2-header.json) and a FileVault volume (the simulated Mac) produce
//! the same keys with the same value types, holder role by holder role. The JSON is built the
//! way keyward-cli's `output::status` prints it: `keyward_core::json_view::StatusJson`. One field is
//! LUKS2's alone: `unlock_cost` (the boot prompt's try order; FileVault has none), `null` there.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;

use keyward_core::store::{Authority, GrantRequest, UnlockStore};
use keyward_core::token::EscrowRef;
use keyward_core::{Role, Uid, UserName, VolumeState};
use keyward_macos::report::volume_report;
use serde_json::{json, Value};

use common::*;

fn status_json(reports: Vec<keyward_core::ipc::VolumeReport>) -> Value {
    serde_json::to_value(keyward_core::json_view::StatusJson::new(&reports)).unwrap()
}

/// The shape of a value: objects by key, arrays by their elements' shapes, scalars by type.
fn shape(v: &Value) -> Value {
    match v {
        Value::Null => json!("null"),
        Value::Bool(_) => json!("bool"),
        Value::Number(n) if n.is_u64() => json!("unsigned"),
        Value::Number(_) => json!("number"),
        Value::String(_) => json!("string"),
        Value::Array(a) => {
            let mut shapes: Vec<Value> = a.iter().map(shape).collect();
            shapes.sort_by_key(ToString::to_string);
            shapes.dedup();
            Value::Array(shapes)
        }
        Value::Object(o) => Value::Object(o.iter().map(|(k, v)| (k.clone(), shape(v))).collect()),
    }
}

fn luks2() -> Value {
    let meta: Value = serde_json::from_str(include_str!("../fixtures/luks2-header.json")).unwrap();
    let state = VolumeState::from_luks2_json(&meta).unwrap();
    status_json(vec![volume_report("root", &state)])
}

fn filevault() -> Value {
    let mut s = bootstrapped();
    let alice = GrantRequest {
        role: Role::User {
            name: UserName::parse("alice").unwrap(),
            uid: Uid::new(1001).unwrap(),
        },
        pending: false,
    };
    s.grant(
        &alice,
        Authority::Service(&secret(SERVICE_PW)),
        &secret("alice-pw"),
    )
    .unwrap();
    let p = s.rotate_recovery().unwrap();
    s.commit(
        p.slot,
        Some(EscrowRef {
            id: "e-7f3a".into(),
            sha256: "a".repeat(64),
        }),
    )
    .unwrap();
    status_json(vec![s.report("root")])
}

fn holders_by_role(status: &Value) -> BTreeMap<String, Value> {
    status["volumes"][0]["holders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| (h["role"].as_str().unwrap().to_owned(), shape(h)))
        .collect()
}

#[test]
fn status_json_has_the_same_shape_for_luks2_and_filevault() {
    let (l, f) = (luks2(), filevault());
    // Same keys and value types throughout (the holder arrays compared per role below).
    let strip = |v: &Value| {
        let mut v = v.clone();
        v["volumes"][0]["holders"] = json!([]);
        v["volumes"][0]["unlock_cost"] = Value::Null;
        shape(&v)
    };
    assert_eq!(strip(&l), strip(&f));
    assert!(l["volumes"][0]["unlock_cost"].is_object(), "{l}");
    assert_eq!(f["volumes"][0]["unlock_cost"], Value::Null);
    let (lh, fh) = (holders_by_role(&l), holders_by_role(&f));
    assert_eq!(
        lh.keys().collect::<Vec<_>>(),
        ["recovery", "service", "unmanaged", "user"],
        "the LUKS2 image has one holder of each role"
    );
    assert_eq!(
        lh, fh,
        "each role's holder has the same keys and value types on both"
    );
    // And the values mean the same things.
    let user = |s: &Value| {
        s["volumes"][0]["holders"]
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h["role"] == "user")
            .cloned()
            .unwrap()
    };
    let (lu, fu) = (user(&l), user(&f));
    for k in ["user", "uid", "state"] {
        assert_eq!(lu[k], fu[k], "{k}");
    }
    let rec = |s: &Value| {
        s["volumes"][0]["holders"]
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h["role"] == "recovery")
            .cloned()
            .unwrap()
    };
    assert_eq!(rec(&l)["escrow_id"], rec(&f)["escrow_id"]);
    assert_eq!(f["volumes"][0]["violations"], json!([]));
    assert_eq!(l["volumes"][0]["violations"], json!([]));
}

#[test]
fn an_unreadable_mac_reports_an_error_in_the_same_shape() {
    let mut s = store(keyward_macos::fake::FakeMac::typical());
    s.runner_mut().script(
        keyward_macos::command::Purpose::DirectoryList,
        "dscl-write-permission",
        false,
    );
    let report = s.report("root");
    assert!(report.error.is_some() && report.holders.is_empty());
    let v = status_json(vec![report]);
    assert_eq!(shape(&v)["volumes"][0]["error"], json!("string"));
}
