//! Property tests: random sequences of operations — including crashes at every named
//! failpoint followed by reconcile — on the in-memory backend never violate I1–I3, never touch
//! an unmanaged slot or a foreign token, and every committed holder's secret keeps opening its
//! slot.

use std::collections::{BTreeMap, BTreeSet};

use keyward_core::fake::MemoryBackend;
use keyward_core::invariants::{check_state, check_transition};
use keyward_core::orderings::SlotStore;
use keyward_core::store::GrantRequest;
use keyward_core::{
    Authority, Refusal, Role, Secret, SlotId, SlotOwner, StoreError, Uid, UnlockStore, UserName,
};
use proptest::prelude::*;

const FAILPOINTS: &[&str] = &[
    "grant.intent-written",
    "grant.slot-added",
    "grant.verified",
    "grant.committed",
    "rekey.intent-written",
    "rekey.slot-added",
    "rekey.verified",
    "rekey.token-moved",
    "rekey.old-destroyed",
    "revoke.intent-written",
    "revoke.slot-destroyed",
];

/// Reconcile's own steps: a crash while it finishes what an earlier crash left.
const RECONCILE_FAILPOINTS: &[&str] = &["reconcile.slot-destroyed", "reconcile.token-written"];

#[derive(Debug, Clone)]
enum Op {
    GrantUser(u8),
    GrantUserViaService(u8),
    GrantService,
    GrantPendingRecovery,
    Commit(u8),
    GrantWithWrongAuthority(u8),
    Rekey(u8),
    Revoke(u8),
    ForeignAdd,
    Crash(usize, Box<Op>),
    /// A crash at failpoint `.0`, then another at reconcile step `.1` while the next run
    /// reconciles, then a reconcile that finishes.
    CrashTwice(usize, usize, Box<Op>),
}

fn op() -> impl Strategy<Value = Op> {
    let base = prop_oneof![
        (0u8..6).prop_map(Op::GrantUser),
        (0u8..6).prop_map(Op::GrantUserViaService),
        Just(Op::GrantService),
        Just(Op::GrantPendingRecovery),
        (0u8..32).prop_map(Op::Commit),
        (0u8..6).prop_map(Op::GrantWithWrongAuthority),
        (0u8..32).prop_map(Op::Rekey),
        (0u8..32).prop_map(Op::Revoke),
        Just(Op::ForeignAdd),
    ];
    base.prop_flat_map(|o| {
        prop_oneof![
            3 => Just(o.clone()),
            1 => (0..FAILPOINTS.len()).prop_map({
                let o = o.clone();
                move |f| Op::Crash(f, Box::new(o.clone()))
            }),
            1 => (0..FAILPOINTS.len(), 0..RECONCILE_FAILPOINTS.len())
                .prop_map(move |(f, g)| Op::CrashTwice(f, g, Box::new(o.clone()))),
        ]
    })
}

fn secret(tag: &str, n: u32) -> Secret {
    Secret::from_string(format!("{tag}-{n}"))
}

fn user(n: u8) -> Role {
    Role::User {
        name: UserName::parse(&format!("user{n}")).expect("valid"),
        uid: Uid::new(1000 + u32::from(n)).expect("valid"),
    }
}

struct World {
    store: SlotStore<MemoryBackend>,
    /// What keyward or another tool set each slot to: the model the real header must match.
    expected: BTreeMap<SlotId, Secret>,
    counter: u32,
    /// The counter value the current service secret was made with.
    service_n: u32,
    /// The slots keyward did not make (the installer's, another tool's): the only ones that
    /// may have no keyward token. Any other such slot leaked.
    foreign: BTreeSet<SlotId>,
}

impl World {
    fn authority(&self) -> Secret {
        // Slot 0 is the installer's passphrase; it always exists (keyward never touches it).
        secret("install", 0)
    }

    fn apply(&mut self, op: &Op) -> Result<(), StoreError> {
        self.counter += 1;
        let n = self.counter;
        let grant = |role: Role| GrantRequest {
            role,
            pending: false,
        };
        let install = self.authority();
        let service = secret("service", self.service_n);
        match op {
            Op::GrantUser(u) => {
                let s = secret("user", n);
                let slot = self
                    .store
                    .grant(&grant(user(*u)), Authority::Holder(&install), &s)?;
                self.expected.insert(slot, s);
            }
            Op::GrantUserViaService(u) => {
                let s = secret("user", n);
                let slot = self
                    .store
                    .grant(&grant(user(*u)), Authority::Service(&service), &s)?;
                self.expected.insert(slot, s);
            }
            Op::GrantService => {
                let s = secret("service", n);
                let slot =
                    self.store
                        .grant(&grant(Role::Service), Authority::Holder(&install), &s)?;
                self.service_n = n;
                self.expected.insert(slot, s);
            }
            Op::GrantPendingRecovery => {
                let s = secret("recovery", n);
                let req = GrantRequest {
                    role: Role::Recovery,
                    pending: true,
                };
                let slot = self.store.grant(&req, Authority::Holder(&install), &s)?;
                self.expected.insert(slot, s);
            }
            Op::Commit(s) => {
                let slot = SlotId::new(u32::from(*s)).expect("in range");
                self.store.commit(slot, None)?;
            }
            Op::GrantWithWrongAuthority(u) => {
                let wrong = secret("wrong", n);
                let r =
                    self.store
                        .grant(&grant(user(*u)), Authority::Holder(&wrong), &secret("x", n));
                match r {
                    Err(StoreError::Failpoint(_)) => return r.map(drop),
                    Err(StoreError::AuthenticationFailed | StoreError::Refused(_)) => {}
                    other => panic!("wrong authority gave {other:?}"),
                }
            }
            Op::Rekey(s) => {
                let slot = SlotId::new(u32::from(*s)).expect("in range");
                let new = secret("rekey", n);
                let to = self.store.rekey(slot, Authority::Holder(&install), &new)?;
                self.expected.remove(&slot);
                self.expected.insert(to, new);
            }
            Op::Revoke(s) => {
                let slot = SlotId::new(u32::from(*s)).expect("in range");
                self.store.revoke(slot)?;
                self.expected.remove(&slot);
            }
            Op::ForeignAdd => {
                let s = secret("foreign", n);
                if let Some(slot) = self.store.backend_mut().insert_unmanaged(None, &s) {
                    self.foreign.insert(slot);
                    self.expected.insert(slot, s);
                }
            }
            Op::Crash(f, inner) => {
                self.store.backend_mut().fail_at(FAILPOINTS[*f]);
                let r = self.apply(inner);
                // A crash between steps: the process is gone; the next run reconciles.
                let crashed = matches!(r, Err(StoreError::Failpoint(_)));
                self.store.backend_mut().fail_at("never");
                self.store.reconcile().expect("reconcile succeeds");
                if crashed {
                    self.resync_after_crash();
                    return Ok(());
                }
                return r;
            }
            Op::CrashTwice(f, g, inner) => {
                self.store.backend_mut().fail_at(FAILPOINTS[*f]);
                let r = self.apply(inner);
                let crashed = matches!(r, Err(StoreError::Failpoint(_)));
                self.store.backend_mut().fail_at(RECONCILE_FAILPOINTS[*g]);
                match self.store.reconcile() {
                    Ok(_) | Err(StoreError::Failpoint(_)) => {}
                    Err(e) => panic!("reconcile failed: {e}"),
                }
                self.store.backend_mut().fail_at("never");
                self.store.reconcile().expect("reconcile succeeds");
                if crashed {
                    self.resync_after_crash();
                    return Ok(());
                }
                return r;
            }
        }
        Ok(())
    }

    /// After a crash the model cannot know which way reconcile went; re-derive it from what
    /// reconcile left, checking that each surviving slot opens with a secret we issued.
    fn resync_after_crash(&mut self) {
        let state = self.store.state().expect("read");
        let mut issued: Vec<Secret> = self.expected.values().map(Secret::duplicate).collect();
        for k in ["user", "service", "rekey", "recovery"] {
            issued.push(secret(k, self.counter));
            issued.push(secret(k, self.counter - 1));
        }
        let mut fresh = BTreeMap::new();
        for s in &state.slots {
            let found = issued
                .iter()
                .find(|c| self.store.verify(s.id, c).unwrap_or(false))
                .map(Secret::duplicate);
            let found =
                found.unwrap_or_else(|| panic!("slot {} opens with no issued secret", s.id));
            fresh.insert(s.id, found);
        }
        self.expected = fresh;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn random_operations_keep_invariants(ops in proptest::collection::vec(op(), 1..40)) {
        let install = secret("install", 0);
        let mut backend = MemoryBackend::formatted(&install);
        let foreign_slot = backend.insert_unmanaged(None, &secret("foreign", 0)).expect("room");
        backend.insert_foreign_token("systemd-recovery", foreign_slot).expect("room");
        let mut w = World { store: SlotStore::new(backend), expected: BTreeMap::new(), counter: 0, service_n: 0, foreign: BTreeSet::new() };
        w.expected.insert(SlotId::new(0).expect("0"), install);
        w.expected.insert(foreign_slot, secret("foreign", 0));
        w.foreign.extend([SlotId::new(0).expect("0"), foreign_slot]);

        for op in &ops {
            let before = w.store.state().expect("read");
            match w.apply(op) {
                Ok(()) => {}
                Err(StoreError::Refused(Refusal::Unmanaged(s))) => {
                    prop_assert_eq!(before.owner_of(s), SlotOwner::Unmanaged);
                }
                Err(StoreError::Refused(_) | StoreError::NoSuchSlot(_) | StoreError::NoFreeSlot
                    | StoreError::NoServiceSlot
                    | StoreError::AuthenticationFailed | StoreError::TokenAreaFull) => {}
                Err(e) => prop_assert!(false, "unexpected error {e}"),
            }
            let after = w.store.state().expect("read");
            let v = check_transition(&before, &after);
            prop_assert!(v.is_empty(), "{:?} after {:?}", v, op);
            prop_assert!(check_state(&after).is_empty());
            for s in &after.slots {
                let leaked = after.owner_of(s.id) == SlotOwner::Unmanaged && !w.foreign.contains(&s.id);
                prop_assert!(!leaked, "keyslot {} leaked after {:?}", s.id, op);
            }
            // Every slot opens with exactly the secret the model says.
            prop_assert_eq!(after.slots.len(), w.expected.len());
            for (slot, s) in &w.expected {
                prop_assert!(w.store.verify(*slot, s).expect("verify"), "slot {} drifted", slot);
            }
        }
    }
}

#[test]
fn every_failpoint_is_reachable() {
    let install = secret("install", 0);
    let mut store = SlotStore::new(MemoryBackend::formatted(&install));
    let req = GrantRequest {
        role: user(1),
        pending: false,
    };
    let auth = Authority::Holder(&install);
    let slot = store.grant(&req, auth, &secret("a", 1)).expect("grant");
    let slot = store.rekey(slot, auth, &secret("a", 2)).expect("rekey");
    store.revoke(slot).expect("revoke");
    let trace = &store.backend().trace;
    for f in FAILPOINTS {
        assert!(trace.contains(f), "{f} never passed");
    }
    // Reconcile's steps: a rekey cut after its new slot was added is undone.
    let slot = store.grant(&req, auth, &secret("b", 1)).expect("grant");
    store.backend_mut().fail_at("rekey.slot-added");
    let r = store.rekey(slot, auth, &secret("b", 2));
    assert!(matches!(r, Err(StoreError::Failpoint(_))), "{r:?}");
    store.reconcile().expect("reconcile");
    let trace = &store.backend().trace;
    for f in RECONCILE_FAILPOINTS {
        assert!(trace.contains(f), "{f} never passed");
    }
}

#[test]
fn revoke_refuses_last_committed_path_and_unmanaged_slots() {
    let install = secret("install", 0);
    let mut store = SlotStore::new(MemoryBackend::formatted(&install));
    let zero = SlotId::new(0).expect("0");
    assert!(matches!(
        store.revoke(zero),
        Err(StoreError::Refused(Refusal::Unmanaged(_)))
    ));
    let req = GrantRequest {
        role: Role::Service,
        pending: false,
    };
    let svc = store
        .grant(&req, Authority::Holder(&install), &secret("svc", 1))
        .expect("grant");
    // Another tool removes the installer's slot: the service slot is now the only path.
    keyward_core::orderings::SlotBackend::destroy_slot(store.backend_mut(), zero).expect("kill");
    assert!(matches!(
        store.revoke(svc),
        Err(StoreError::Refused(Refusal::WouldLockOut(_)))
    ));
    assert!(store.verify(svc, &secret("svc", 1)).expect("verify"));
}

/// Issue 14: a user gets a slot, the admin removes the installer passphrase, the user leaves.
/// Revoking the user's slot would leave only keyward's service slot, whose secret lives in the
/// helper's state (usually on this very volume): refused, and the state reports nothing wrong
/// until then. Once only the service slot is left (removed by hand), the state is a violation.
#[test]
fn the_service_slot_is_not_a_way_in() {
    let install = secret("install", 0);
    let mut store = SlotStore::new(MemoryBackend::formatted(&install));
    let zero = SlotId::new(0).expect("0");
    let service = GrantRequest {
        role: Role::Service,
        pending: false,
    };
    store
        .grant(&service, Authority::Holder(&install), &secret("svc", 1))
        .expect("service slot");
    let alice = GrantRequest {
        role: user(1),
        pending: false,
    };
    let slot = store
        .grant(
            &alice,
            Authority::Service(&secret("svc", 1)),
            &secret("alice", 1),
        )
        .expect("grant");
    keyward_core::orderings::SlotBackend::destroy_slot(store.backend_mut(), zero).expect("kill");
    assert_eq!(check_state(&store.state().expect("read")), vec![]);
    assert!(matches!(
        store.revoke(slot),
        Err(StoreError::Refused(Refusal::WouldLockOut(s))) if s == slot
    ));
    assert!(store.verify(slot, &secret("alice", 1)).expect("verify"));
    // The user's slot removed behind keyward's back: only the service slot is left.
    keyward_core::orderings::SlotBackend::destroy_slot(store.backend_mut(), slot).expect("kill");
    store.reconcile().expect("reconcile");
    assert_eq!(
        check_state(&store.state().expect("read")),
        vec![keyward_core::invariants::Violation::NoCommittedPath]
    );
    // The service secret still rotates there (new slot, commit, old slot out), but the last
    // service slot, the only thing still opening the volume, is never removed.
    let svc = store
        .state()
        .expect("read")
        .holders()
        .into_iter()
        .find(|h| h.role == keyward_core::HolderRole::Service)
        .expect("service slot")
        .slot;
    let rotating = GrantRequest {
        role: Role::Service,
        pending: true,
    };
    let next = store
        .grant(
            &rotating,
            Authority::Service(&secret("svc", 1)),
            &secret("svc", 2),
        )
        .expect("new service slot");
    store.commit(next, None).expect("commit");
    store.revoke(svc).expect("the old service slot goes");
    assert!(matches!(
        store.revoke(next),
        Err(StoreError::Refused(Refusal::WouldLockOut(s))) if s == next
    ));
    // Operations that do not remove a way in still run on such a volume (a grant repairs it).
    store
        .grant(
            &alice,
            Authority::Service(&secret("svc", 2)),
            &secret("alice", 2),
        )
        .expect("grant repairs");
    assert_eq!(check_state(&store.state().expect("read")), vec![]);
}

/// Issue 18: `prefer` makes exactly one user slot the first a typed passphrase tries, never
/// touching unmanaged slots. (The service slot is `ignore`, never tried by a typed passphrase;
/// an admin's way out names it: `cryptsetup luksAddKey --key-slot N --new-key-slot M`.)
#[test]
fn boot_order_prefers_one_user_slot() {
    use keyward_core::SlotPriority;
    let install = secret("install", 0);
    let mut store = SlotStore::new(MemoryBackend::formatted(&install));
    let zero = SlotId::new(0).expect("0");
    let service = GrantRequest {
        role: Role::Service,
        pending: false,
    };
    let svc = store
        .grant(&service, Authority::Holder(&install), &secret("svc", 1))
        .expect("service slot");
    let priority = |store: &mut SlotStore<MemoryBackend>, slot: SlotId| {
        store
            .state()
            .expect("read")
            .slot(slot)
            .expect("slot")
            .priority
    };
    assert_eq!(priority(&mut store, svc), SlotPriority::Normal);
    let mut users = Vec::new();
    for n in 1..=3 {
        let req = GrantRequest {
            role: user(n),
            pending: false,
        };
        users.push(
            store
                .grant(
                    &req,
                    Authority::Service(&secret("svc", 1)),
                    &secret("u", u32::from(n)),
                )
                .expect("grant"),
        );
    }
    for &u in &users {
        assert_eq!(priority(&mut store, u), SlotPriority::Normal);
    }
    store.prefer(users[0]).expect("prefer");
    store.prefer(users[2]).expect("prefer another");
    let preferred: Vec<SlotId> = store
        .state()
        .expect("read")
        .slots
        .iter()
        .filter(|s| s.priority == SlotPriority::Prefer)
        .map(|s| s.id)
        .collect();
    assert_eq!(
        preferred,
        vec![users[2]],
        "exactly one user slot is preferred"
    );
    assert_eq!(
        priority(&mut store, zero),
        SlotPriority::Normal,
        "unmanaged untouched"
    );
    // Only active user slots are preferred.
    assert!(store.prefer(svc).is_err());
    assert!(matches!(
        store.prefer(zero),
        Err(StoreError::Refused(Refusal::Unmanaged(_)))
    ));
    assert_eq!(check_state(&store.state().expect("read")), vec![]);
}

#[test]
fn token_area_full_leaves_nothing_behind() {
    let install = secret("install", 0);
    let mut backend = MemoryBackend::formatted(&install);
    backend.set_max_tokens(0);
    let mut store = SlotStore::new(backend);
    let before = store.state().expect("read");
    let req = GrantRequest {
        role: user(1),
        pending: false,
    };
    let r = store.grant(&req, Authority::Holder(&install), &secret("a", 1));
    assert!(matches!(r, Err(StoreError::TokenAreaFull)), "{r:?}");
    assert_eq!(store.state().expect("read"), before);
}

#[test]
fn service_authority_opens_only_the_service_slot() {
    let install = secret("install", 0);
    let mut store = SlotStore::new(MemoryBackend::formatted(&install));
    let req = |role| GrantRequest {
        role,
        pending: false,
    };
    // No service slot yet: the service secret cannot be used at all.
    let r = store.grant(&req(user(1)), Authority::Service(&install), &secret("a", 1));
    assert!(matches!(r, Err(StoreError::NoServiceSlot)), "{r:?}");
    let svc = secret("svc", 1);
    store
        .grant(&req(Role::Service), Authority::Holder(&install), &svc)
        .expect("bootstrap");
    // The installer's passphrase opens slot 0, but is not the service secret: refused.
    let r = store.grant(&req(user(1)), Authority::Service(&install), &secret("a", 1));
    assert!(matches!(r, Err(StoreError::AuthenticationFailed)), "{r:?}");
    let slot = store
        .grant(&req(user(1)), Authority::Service(&svc), &secret("a", 1))
        .expect("grant via service");
    let state = store.state().expect("read");
    let (_, token) = state.managed_token(slot).expect("managed");
    assert_eq!(token.granted_by, keyward_core::token::GrantedBy::Service);
}

fn arbitrary_json() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        "[a-z0-9\"\\\\/ .-]{0,12}".prop_map(Value::String),
        prop_oneof![
            Just("keyward"),
            Just("keyslots"),
            Just("31"),
            Just("user"),
            Just("active"),
            Just("adding")
        ]
        .prop_map(|s| Value::String(s.to_owned())),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        let key = prop_oneof![
            Just("type".to_owned()),
            Just("keyslots".to_owned()),
            Just("tokens".to_owned()),
            Just("kdf".to_owned()),
            Just("role".to_owned()),
            Just("state".to_owned()),
            Just("next_keyslot".to_owned()),
            "[0-9]{1,2}",
        ];
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map(key, inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    /// Hostile header JSON never panics the parsers; whatever parses satisfies the checkers
    /// without panicking either.
    #[test]
    fn parsers_never_panic(v in arbitrary_json()) {
        let _ = keyward_core::KeywardToken::from_json(&v);
        if let Ok(state) = keyward_core::VolumeState::from_luks2_json(&v) {
            let _ = state.holders();
            let _ = check_state(&state);
            let _ = state.free_slot();
        }
    }
}

/// THREAT-MODEL.md ("lock the disk by withholding"): a recovery key the escrow server has not
/// acknowledged is no way in. While the only other slot is a user's, that user's slot cannot
/// be revoked; once the recovery key is committed (a receipt), it can.
#[test]
fn a_pending_recovery_slot_is_not_a_way_in() {
    let install = secret("install", 0);
    let mut store = SlotStore::new(MemoryBackend::formatted(&install));
    let alice = GrantRequest {
        role: user(1),
        pending: false,
    };
    let slot = store
        .grant(&alice, Authority::Holder(&install), &secret("alice", 1))
        .expect("grant");
    let pending = GrantRequest {
        role: Role::Recovery,
        pending: true,
    };
    let recovery = store
        .grant(
            &pending,
            Authority::Holder(&install),
            &secret("recovery", 1),
        )
        .expect("pending recovery slot");
    let zero = SlotId::new(0).expect("0");
    keyward_core::orderings::SlotBackend::destroy_slot(store.backend_mut(), zero).expect("kill");
    assert_eq!(check_state(&store.state().expect("read")), vec![]);
    assert!(matches!(
        store.revoke(slot),
        Err(StoreError::Refused(Refusal::WouldLockOut(s))) if s == slot
    ));
    assert!(store.verify(slot, &secret("alice", 1)).expect("verify"));
    store.commit(recovery, None).expect("commit");
    store
        .revoke(slot)
        .expect("the committed recovery key is a way in");
    assert_eq!(check_state(&store.state().expect("read")), vec![]);
}
