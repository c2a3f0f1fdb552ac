//! Crash safety on real headers: the tool is SIGKILLed at every named failpoint of grant, rekey
//! and revoke; reconcile then leaves a header where I1–I3 hold, unmanaged slots are untouched,
//! the service secret opens its slot, and each user holds exactly one working slot.
//! Needs `--features keyward-luks/failpoints` (the README's test command sets it).
#![cfg(feature = "failpoints")]
#![allow(clippy::unwrap_used)]

mod common;

use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};

use common::*;
use keyward_core::invariants::check_state;
use keyward_core::store::GrantRequest;
use keyward_core::Authority;
use keyward_core::{HolderRole, Role, SlotId, Uid, UnlockStore, UserName};

const CASES: &[(&str, &str)] = &[
    ("grant.intent-written", "grant"),
    ("grant.slot-added", "grant"),
    ("grant.verified", "grant"),
    ("grant.committed", "grant"),
    ("rekey.intent-written", "rekey"),
    ("rekey.slot-added", "rekey"),
    ("rekey.verified", "rekey"),
    ("rekey.token-moved", "rekey"),
    ("rekey.old-destroyed", "rekey"),
    ("revoke.intent-written", "revoke"),
    ("revoke.slot-destroyed", "revoke"),
];

fn user(name: &str, uid: u32) -> Role {
    Role::User {
        name: UserName::parse(name).unwrap(),
        uid: Uid::new(uid).unwrap(),
    }
}

fn user_slots(store: &mut keyward_luks::LuksStore, name: &str) -> Vec<SlotId> {
    store
        .state()
        .unwrap()
        .holders()
        .into_iter()
        .filter(|h| matches!(&h.role, HolderRole::User { name: n, .. } if n.as_str() == name))
        .map(|h| h.slot)
        .collect()
}

#[test]
fn sigkill_at_every_failpoint_then_reconcile() {
    let mut exercised = 0;
    let mut lockouts = 0;
    for (failpoint, op) in CASES {
        let img = Image::luks2();
        img.add_key_with_cryptsetup("an admin's key");
        let mut store = img.store();
        let service = keyward_sys::random::service_secret().unwrap();
        let req = |role| GrantRequest {
            role,
            pending: false,
        };
        let svc = store
            .grant(
                &req(Role::Service),
                Authority::Holder(&secret(INSTALL_PASS)),
                &service,
            )
            .unwrap();
        let alice = store
            .grant(
                &req(user("alice", 1001)),
                Authority::Service(&service),
                &secret("alice old"),
            )
            .unwrap();
        let untouched = img.unmanaged_snapshot();

        let (args, input): (Vec<String>, String) = match *op {
            "grant" => (
                vec!["grant-user".into(), "bob".into(), "1002".into()],
                "bob pass\n".into(),
            ),
            "rekey" => (
                vec!["rekey".into(), alice.to_string()],
                "alice new\n".into(),
            ),
            _ => (vec!["revoke".into(), alice.to_string()], String::new()),
        };
        let mut child = Command::new(env!("CARGO_BIN_EXE_keyward-luks-tool"))
            .arg("--danger-fast-kdf")
            .arg(&img.path)
            .arg(&img.lock)
            .args(&args)
            .env("KEYWARD_FAILPOINT", failpoint)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(service.expose()).unwrap();
        stdin.write_all(format!("\n{input}").as_bytes()).unwrap();
        drop(stdin);
        let out = child.wait_with_output().unwrap();
        assert_eq!(
            out.status.signal(),
            Some(9),
            "{failpoint}: not killed: {out:?}"
        );
        exercised += 1;

        store.reconcile().unwrap();
        let state = store.state().unwrap();
        assert_eq!(check_state(&state), vec![], "{failpoint}");
        assert_eq!(
            img.unmanaged_snapshot(),
            untouched,
            "{failpoint}: unmanaged slot changed"
        );
        if !img.opens(svc, service.expose()) {
            lockouts += 1;
        }
        // Alice holds exactly one slot, opened by her old or her new passphrase — unless her
        // slot was being revoked, in which case it is gone.
        let slots = user_slots(&mut store, "alice");
        if *op == "revoke" {
            assert!(
                slots.is_empty(),
                "{failpoint}: revoke must complete forward"
            );
        } else {
            assert_eq!(slots.len(), 1, "{failpoint}: alice has {slots:?}");
            let s = slots[0];
            let old = img.opens(s, b"alice old");
            let new = img.opens(s, b"alice new");
            assert!(
                old ^ new,
                "{failpoint}: alice's slot opens with old={old} new={new}"
            );
        }
        // Bob either got a working slot or nothing at all.
        for s in user_slots(&mut store, "bob") {
            assert!(img.opens(s, b"bob pass"), "{failpoint}");
        }
        // No slot is left that no holder accounts for.
        let holders = state.holders();
        assert_eq!(holders.len(), img.slot_ids().len());
    }
    println!("crash points exercised: {exercised}, lockouts found: {lockouts}");
    assert_eq!(exercised, CASES.len());
    assert_eq!(lockouts, 0);
}
