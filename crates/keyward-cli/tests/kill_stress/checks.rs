//! The checks after each kill: keyward's own views first, then stock cryptsetup on every way
//! in, then the header's slots and tokens, against a model of what the admin and the users
//! hold.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use serde_json::Value;

use super::{Op, Outcome};
use crate::common::*;

/// What the admin and the users hold, and what the volume must look like.
pub struct Model {
    /// Users holding a keyward slot, with their passphrase; `None` for a user whose killed
    /// revoke wiped the slot's key material but left it in the header (reported once, then
    /// tolerated until a later revoke removes it).
    pub users: BTreeMap<String, Option<String>>,
    /// Recovery keys that open a committed recovery slot (normally one; two after a crash
    /// between committing the new key and retiring the old one).
    pub recovery: Vec<String>,
    /// Every recovery key the admin was shown (they may hold any of them).
    pub shown: Vec<String>,
    /// How many audit-discontinuity records the log had at the last check.
    pub audit_breaks: usize,
    /// Keyslot 0 (the installer's) as luksDump shows it: never to change.
    pub slot0: Value,
    pub first_audit_line: String,
    pub grants: u64,
}

impl Model {
    /// A fresh passphrase for a grant (every grant gets a new one).
    pub fn next_passphrase(&mut self, op: &Op) -> String {
        self.grants += 1;
        match op {
            Op::Grant(u) => format!("{u} passphrase {}", self.grants),
            _ => String::new(),
        }
    }
}

pub fn status(inst: &Instance) -> Result<Value, String> {
    let out = inst.keyward(&["status", "data", "--json"], b"");
    if code(&out) != Some(0) {
        return Err(format!("status: exit {:?}: {}", code(&out), stderr(&out)));
    }
    let v: Value = serde_json::from_slice(&out.stdout).map_err(|e| format!("status: {e}"))?;
    Ok(v["volumes"][0].clone())
}

pub fn holders<'a>(vol: &'a Value, role: &str) -> Vec<&'a Value> {
    vol["holders"]
        .as_array()
        .map(|hs| hs.iter().filter(|h| h["role"] == role).collect())
        .unwrap_or_default()
}

fn slot_of(h: &Value) -> u64 {
    h["slot"].as_u64().unwrap()
}

/// Every check after a restart. Failures are returned (and collected by the caller) so one
/// run reports all that went wrong; `lockout` marks those where a way in was lost.
#[derive(Default)]
pub struct Findings {
    pub failures: Vec<String>,
    pub lockouts: Vec<String>,
    pub notes: Vec<String>,
}

impl Findings {
    fn fail(&mut self, what: impl Into<String>) {
        self.failures.push(what.into());
    }

    /// Something worth knowing that is not a failure.
    fn note(&mut self, what: &str) {
        self.notes.push(what.to_owned());
    }

    fn lockout(&mut self, what: impl Into<String>) {
        let what = what.into();
        self.lockouts.push(what.clone());
        self.failures.push(format!("LOCKOUT: {what}"));
    }
}

/// Check the restarted volume against the model, and bring the model up to date with the
/// outcome of `op` (a killed operation may have finished or not; both are fine).
///
/// keyward's own views (status, verify, audit) are taken first: stock cryptsetup, run after,
/// silently rewrites a header copy it finds damaged or older, which would hide from keyward
/// what the kill left behind.
pub fn check(
    inst: &mut Instance,
    model: &mut Model,
    op: &Op,
    out: &Outcome,
    new_pass: &str,
) -> Findings {
    let mut f = Findings::default();
    model.shown.extend(out.shown_key.clone());
    let Some(vol) = keyward_views(inst, model, &mut f) else {
        return f;
    };
    let meta = inst.metadata();
    installer_and_service(inst, model, &vol, &meta, &mut f);
    users(inst, model, op, out, new_pass, &vol, &meta, &mut f);
    let recovery_slots = recovery(inst, model, op, out, &vol, &meta, &mut f);
    no_leaks(model, &meta, recovery_slots, &mut f);
    f
}

/// `status` (repairing the header if keyward refuses it), `verify`, `audit --verify`.
fn keyward_views(inst: &mut Instance, model: &mut Model, f: &mut Findings) -> Option<Value> {
    let mut vol = match status(inst) {
        Ok(v) => v,
        Err(e) => {
            f.fail(e);
            return None;
        }
    };
    if !vol["error"].is_null() {
        // keyward refuses a header with a damaged or out-of-step copy. Record it, then do what
        // the refusal tells an admin to do (`cryptsetup repair`, then restart the helper, whose
        // start-up reconcile failed on that header) so the other checks still run.
        f.fail(format!(
            "keyward cannot read the volume after the restart: {}",
            vol["error"]
        ));
        let out = run(
            Command::new("cryptsetup")
                .args(["repair", "--batch-mode"])
                .arg(&inst.image),
            b"",
        );
        inst.stop_helper();
        assert!(
            inst.try_start(),
            "restart after repair: {}",
            inst.helper_stderr()
        );
        vol = match status(inst) {
            Ok(v) if v["error"].is_null() => v,
            other => {
                f.fail(format!(
                    "still unreadable after cryptsetup repair ({}): {other:?}",
                    stderr(&out).trim()
                ));
                return None;
            }
        };
    }
    if vol["violations"] != serde_json::json!([]) {
        f.fail(format!("invariant violations: {}", vol["violations"]));
    }
    let all = vol["holders"].as_array().cloned().unwrap_or_default();
    for h in &all {
        let ok = match h["role"].as_str().unwrap_or("") {
            "recovery" => h["state"] == "active" || h["state"] == "pending",
            "user" | "service" => h["state"] == "active",
            _ => h["state"] == "unmanaged",
        };
        if !ok {
            f.fail(format!("unsettled holder after restart: {h}"));
        }
    }
    let v = inst.keyward(&["verify", "--json"], b"");
    if code(&v) != Some(0) {
        f.fail(format!(
            "keyward verify: exit {:?}: {} {}",
            code(&v),
            String::from_utf8_lossy(&v.stdout).replace(char::is_whitespace, ""),
            stderr(&v).trim()
        ));
    }
    let a = inst.keyward(&["audit", "--verify"], b"");
    if code(&a) != Some(0) {
        f.fail(format!(
            "keyward audit --verify: exit {:?}: {}",
            code(&a),
            stderr(&a).trim()
        ));
    }
    let log = std::fs::read_to_string(inst.path("log/audit.jsonl")).unwrap_or_default();
    if log.lines().next() != Some(model.first_audit_line.as_str()) {
        f.fail("the audit log's first line changed");
    }
    if !log.ends_with('\n') {
        f.fail("the audit log ends in a torn line");
    }
    let breaks: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("\"audit-discontinuity\""))
        .collect();
    if breaks.len() > model.audit_breaks {
        f.fail(format!(
            "the restarted helper found the audit log and its head out of step and logged: {}",
            breaks[breaks.len() - 1]
        ));
    }
    model.audit_breaks = breaks.len();

    Some(vol)
}

/// The installer's slot: untouched, and it opens. The service secret: one slot, which the
/// stored secret opens.
fn installer_and_service(
    inst: &Instance,
    model: &Model,
    vol: &Value,
    meta: &Value,
    f: &mut Findings,
) {
    let unmanaged = holders(vol, "unmanaged");
    if unmanaged.len() != 1 || slot_of(unmanaged[0]) != 0 {
        f.fail(format!("unmanaged holders changed: {unmanaged:?}"));
    }
    if !inst.opens(0, INSTALL_PASS.as_bytes()) {
        f.lockout("the installer passphrase no longer opens keyslot 0");
    }
    if meta["keyslots"]["0"] != model.slot0 {
        f.fail(format!("keyslot 0 changed: {}", meta["keyslots"]["0"]));
    }

    let service = holders(vol, "service");
    let secret = std::fs::read(inst.path("state/service/data")).unwrap_or_default();
    match service.as_slice() {
        [h] if inst.opens(slot_of(h), &secret) => {}
        [h] => f.fail(format!(
            "the stored service secret does not open service keyslot {}",
            slot_of(h)
        )),
        hs => f.fail(format!("{} service slots after restart: {hs:?}", hs.len())),
    }
    if inst.path("state/service/data.next").exists() {
        f.fail("state/service/data.next left after the restart's settle");
    }
}

/// Whatever the killed operation did, each user keyward reports holds a slot their passphrase
/// opens.
#[allow(clippy::too_many_arguments)]
fn users(
    inst: &Instance,
    model: &mut Model,
    op: &Op,
    out: &Outcome,
    new_pass: &str,
    vol: &Value,
    meta: &Value,
    f: &mut Findings,
) {
    let found: BTreeMap<String, u64> = holders(vol, "user")
        .iter()
        .map(|h| (h["user"].as_str().unwrap().to_owned(), slot_of(h)))
        .collect();
    if found.len() != holders(vol, "user").len() {
        f.fail("a user holds two keyward slots");
    }
    let mut expected = model.users.clone();
    match op {
        Op::Grant(u) if out.code == Some(0) || found.contains_key(u) => {
            expected.insert(u.clone(), Some(new_pass.to_owned()));
        }
        Op::Revoke(u) if out.code == Some(0) || !found.contains_key(u) => {
            expected.remove(u);
        }
        _ => {}
    }
    let names = |m: &BTreeMap<String, _>| m.keys().cloned().collect::<BTreeSet<_>>();
    if names(&expected) != found.keys().cloned().collect::<BTreeSet<_>>() {
        f.fail(format!(
            "user holders {:?}, expected {:?} (cli exit {:?})",
            found.keys().collect::<Vec<_>>(),
            expected.keys().collect::<Vec<_>>(),
            out.code
        ));
    }
    for (user, pass) in expected.iter_mut() {
        let Some(known) = pass.as_deref() else {
            continue;
        };
        match found.get(user) {
            Some(slot) if inst.opens(*slot, known.as_bytes()) => {}
            // The user of a killed revoke may lose their way in (that was asked for), but then
            // keyward must not go on reporting a slot for them: it counts for I1.
            Some(slot) if *op == Op::Revoke(user.clone()) => {
                f.fail(format!(
                    "after a killed revoke keyward still reports {user} holding keyslot {slot} \
                     ({}), but their passphrase no longer opens it",
                    describe_slot(meta, *slot)
                ));
                *pass = None;
            }
            Some(slot) => f.lockout(format!(
                "{user}'s passphrase does not open keyslot {slot} ({})",
                describe_slot(meta, *slot)
            )),
            None => f.lockout(format!("{user} lost their keyslot")),
        }
    }
    model.users = expected;
}

/// A key the admin was shown opens a committed slot, and every committed slot opens with such
/// a key; a pending slot opens with the sealed pending key. Returns the number of recovery
/// slots.
fn recovery(
    inst: &Instance,
    model: &mut Model,
    op: &Op,
    out: &Outcome,
    vol: &Value,
    meta: &Value,
    f: &mut Findings,
) -> usize {
    let known = &model.shown;
    let mut working = Vec::new();
    let active: Vec<_> = holders(vol, "recovery")
        .into_iter()
        .filter(|h| h["state"] == "active")
        .collect();
    let mut dead = Vec::new();
    for h in &active {
        match known.iter().find(|k| inst.opens(slot_of(h), k.as_bytes())) {
            Some(k) => working.push(k.clone()),
            None => dead.push(slot_of(h)),
        }
    }
    if !model.recovery.is_empty() && working.is_empty() {
        f.lockout(format!(
            "no recovery key the admin holds opens a committed slot ({} active)",
            active.len()
        ));
    }
    for slot in dead {
        f.fail(format!(
            "keyward reports committed recovery keyslot {slot} ({}), but no key the admin was \
             shown opens it",
            describe_slot(meta, slot)
        ));
    }
    if let (Op::RecoveryRotate, Some(0)) = (op, out.code) {
        if working != [out.shown_key.clone().unwrap_or_default()] {
            f.fail("a confirmed recovery rotation did not leave exactly the new key committed");
        }
    }
    if working.len() > 2 {
        f.fail(format!(
            "{} working committed recovery slots",
            working.len()
        ));
    }
    if !working.is_empty() {
        model.recovery = working;
    }
    let pending: Vec<_> = holders(vol, "recovery")
        .into_iter()
        .filter(|h| h["state"] == "pending")
        .collect();
    let sealed = std::fs::read(inst.path("state/pending/data")).ok();
    match (pending.as_slice(), &sealed) {
        ([], None) => {}
        ([h], Some(key)) if inst.opens(slot_of(h), key) => {}
        ([], Some(key)) => {
            if let Some(h) = active.iter().find(|h| inst.opens(slot_of(h), key)) {
                f.fail(format!(
                    "the committed recovery key (keyslot {}) is still stored in \
                     state/pending/data after the restart",
                    slot_of(h)
                ));
            } else {
                // Harmless (it opens nothing) and removed by the next rotation's begin; noted
                // once, after the rotation that left it.
                if *op == Op::RecoveryRotate {
                    f.note("a killed begin left a sealed pending key whose slot never came to be");
                }
            }
        }
        (hs, key) => f.fail(format!(
            "pending recovery slots {hs:?}, sealed key present: {}",
            key.is_some()
        )),
    }

    active.len() + pending.len()
}

/// No leaked slots: installer + users + service + recovery, each keyward slot named by
/// exactly one settled keyward token.
fn no_leaks(model: &Model, meta: &Value, recovery_slots: usize, f: &mut Findings) {
    let slots: BTreeSet<u64> = meta["keyslots"]
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.parse().unwrap())
        .collect();
    let want = 1 + model.users.len() + 1 + recovery_slots;
    if slots.len() != want {
        f.fail(format!(
            "{} keyslots {slots:?}, expected {want} (1 installer + {} users + 1 service + {} recovery)",
            slots.len(),
            model.users.len(),
            recovery_slots
        ));
    }
    let mut named = BTreeMap::<u64, usize>::new();
    for t in meta["tokens"].as_object().unwrap().values() {
        if t["type"] != "keyward" {
            f.fail(format!("foreign token appeared: {t}"));
            continue;
        }
        if t["state"] != "active" && t["state"] != "pending" {
            f.fail(format!("unsettled token after restart: {t}"));
        }
        for s in t["keyslots"].as_array().unwrap() {
            *named
                .entry(s.as_str().unwrap().parse().unwrap())
                .or_default() += 1;
        }
    }
    for s in slots.iter().filter(|s| **s != 0) {
        if named.get(s) != Some(&1) {
            f.fail(format!(
                "keyslot {s} is named by {:?} keyward tokens",
                named.get(s)
            ));
        }
    }
}

/// A keyslot as the header (luksDump) describes it, and the keyward token naming it.
fn describe_slot(meta: &Value, slot: u64) -> String {
    let token = meta["tokens"]
        .as_object()
        .unwrap()
        .values()
        .find(|t| t["keyslots"] == serde_json::json!([slot.to_string()]))
        .map(|t| format!("{}/{}/{}", t["role"], t["user"], t["state"]))
        .unwrap_or_else(|| "no token".into());
    let present = meta["keyslots"].get(slot.to_string()).is_some();
    format!("in the header: {present}, token {token}")
}
