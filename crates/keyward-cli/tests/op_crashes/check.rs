//! The checks after each restart: keyward's own views, then stock cryptsetup on every way in,
//! then the header. Shared by `op_crashes.rs` and `op_crashes_more.rs`; each uses a part.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::process::Command;

use serde_json::Value;

use crate::common::*;
use crate::fixture::Held;

/// Whether any keyslot opens with `pass` (stock cryptsetup, trying every slot).
pub fn opens_any(inst: &Instance, pass: impl AsRef<[u8]>) -> bool {
    run(
        Command::new("cryptsetup")
            .args(["open", "--test-passphrase"])
            .arg(&inst.image)
            .args(["--key-file", "-"]),
        pass.as_ref(),
    )
    .status
    .success()
}

/// `keyward status data --json`: the volume's report.
pub fn status(inst: &Instance) -> Value {
    let out = inst.keyward(&["status", "data", "--json"], b"");
    assert_eq!(code(&out), Some(0), "status: {}", stderr(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v["volumes"][0].clone()
}

fn slots_where(vol: &Value, keep: impl Fn(&Value) -> bool) -> Vec<u64> {
    vol["holders"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| keep(h))
        .map(|h| h["slot"].as_u64().unwrap())
        .collect()
}

pub fn service_slot(vol: &Value) -> Option<u64> {
    let s = slots_where(vol, |h| h["role"] == "service");
    assert!(s.len() <= 1, "more than one service slot: {vol}");
    s.first().copied()
}

pub fn user_slots(vol: &Value, user: &str) -> Vec<u64> {
    slots_where(vol, |h| h["user"] == user)
}

pub fn active_recovery(vol: &Value) -> Vec<u64> {
    slots_where(vol, |h| h["role"] == "recovery" && h["state"] == "active")
}

pub fn pending_recovery(vol: &Value) -> Option<u64> {
    slots_where(vol, |h| h["role"] == "recovery" && h["state"] == "pending")
        .first()
        .copied()
}

/// What an interrupted operation may rightly leave for the admin to re-run.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Unfinished {
    /// Nothing: the volume is fully settled.
    None,
    /// An undone bootstrap: no service slot (verify says `missing`).
    ServiceMissing,
    /// An undone repair: this stale service slot is still there (verify says `drift`).
    ServiceDrift(u64),
    /// A release under way: some of keyward's slots, the service slot too, may be gone.
    Releasing,
}

/// Every check after a restart; returns the volume's status report.
pub fn check(inst: &Instance, held: &Held, step: &str, allowed: Unfinished) -> Value {
    let vol = status(inst);
    assert_eq!(vol["violations"], serde_json::json!([]), "{step}: {vol}");
    assert!(vol["error"].is_null(), "{step}: {vol}");

    // Every keyslot in the header is a reported holder, none half-made: no slot leaked.
    let meta = inst.metadata();
    let header: BTreeSet<u64> = meta["keyslots"]
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.parse().unwrap())
        .collect();
    let reported: BTreeSet<u64> = slots_where(&vol, |_| true).into_iter().collect();
    assert_eq!(header, reported, "{step}: {vol}");
    // No keyward token is left mid-change or names a keyslot that is gone: one settled token
    // for each keyslot keyward holds.
    let mut named = BTreeSet::new();
    for t in meta["tokens"].as_object().unwrap().values() {
        if t["type"] != "keyward" {
            continue;
        }
        assert!(
            t["state"] == "active" || t["state"] == "pending",
            "{step}: a token left mid-change: {t}"
        );
        let slots = t["keyslots"].as_array().unwrap();
        assert_eq!(slots.len(), 1, "{step}: {t}");
        let slot: u64 = slots[0].as_str().unwrap().parse().unwrap();
        assert!(header.contains(&slot), "{step}: an orphan token: {t}");
        assert!(named.insert(slot), "{step}: two tokens name keyslot {slot}");
    }
    // A keyslot keyward made and lost track of would show as unmanaged: only the installer's is.
    let unmanaged = slots_where(&vol, |h| h["role"] == "unmanaged");
    let installer: &[u64] = if held.no_installer { &[] } else { &[0] };
    assert_eq!(unmanaged, installer, "{step}: a keyslot leaked: {vol}");
    let pending_key = std::fs::read(inst.path("state/pending/data")).ok();
    for h in vol["holders"].as_array().unwrap() {
        let settled = h["state"] == "active" || h["state"] == "unmanaged";
        // A pending recovery key is settled too while its stored key opens it.
        let pending_ok = h["role"] == "recovery"
            && h["state"] == "pending"
            && pending_key
                .as_ref()
                .is_some_and(|k| inst.opens(h["slot"].as_u64().unwrap(), k));
        assert!(settled || pending_ok, "{step}: unsettled holder {h}");
    }
    if pending_key.is_some() {
        assert!(
            pending_recovery(&vol).is_some(),
            "{step}: a stored key with no slot"
        );
    }

    // Stock cryptsetup on every way in a person holds; `proven` collects those that opened.
    let mut proven = Vec::new();
    if !held.no_installer {
        assert!(
            inst.opens(0, INSTALL_PASS.as_bytes()),
            "{step}: installer slot"
        );
        proven.push(0);
    }
    let releasing = allowed == Unfinished::Releasing;
    for (user, pw) in &held.users {
        let mine = user_slots(&vol, user);
        if releasing && mine.is_empty() {
            continue;
        }
        assert_eq!(mine.len(), 1, "{step}: {user}: {vol}");
        assert!(
            inst.opens(mine[0], pw.as_bytes()),
            "{step}: {user} locked out"
        );
        proven.push(mine[0]);
    }
    let active = active_recovery(&vol);
    assert!(
        active.len() <= 1,
        "{step}: two committed recovery keys: {vol}"
    );
    if let Some(key) = &held.recovery {
        if !(releasing && active.is_empty()) {
            let works: Vec<u64> = active
                .iter()
                .copied()
                .filter(|s| inst.opens(*s, key.as_bytes()))
                .collect();
            assert!(
                !works.is_empty(),
                "{step}: the recovery key opens nothing: {vol}"
            );
            proven.extend(works);
        }
    }
    // The volume is never left with keyward's service slot as its only way in.
    assert!(
        !proven.is_empty(),
        "{step}: only the service slot is left: {vol}"
    );
    let service = service_slot(&vol);
    let verify_says = match service {
        Some(s) => {
            let secret = std::fs::read(inst.path("state/service/data")).unwrap_or_default();
            if inst.opens(s, &secret) {
                "ok"
            } else {
                assert_eq!(allowed, Unfinished::ServiceDrift(s), "{step}: {vol}");
                "drift"
            }
        }
        None => {
            let may = [Unfinished::ServiceMissing, Unfinished::Releasing];
            assert!(may.contains(&allowed), "{step}: no service slot: {vol}");
            "missing"
        }
    };

    let out = inst.keyward(&["verify", "--json"], b"");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let report = &v["volumes"][0];
    assert_eq!(report["service"], verify_says, "{step}: {v}");
    assert_eq!(report["violations"], serde_json::json!([]), "{step}: {v}");
    if verify_says == "ok" {
        assert_eq!(code(&out), Some(0), "{step}: verify: {v}");
    }
    let out = inst.keyward(&["audit", "--verify"], b"");
    assert_eq!(code(&out), Some(0), "{step}: audit: {}", stderr(&out));
    vol
}
