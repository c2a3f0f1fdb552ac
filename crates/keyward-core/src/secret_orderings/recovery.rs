//! The recovery slots: a pending slot beside the active one until the rotation's proof (the
//! helper's `ops::recovery`), expiry of a pending rotation left too long, and the start-up
//! pass that finishes a commit a crash cut short. The pending key is sealed by the [`Host`]
//! before its slot exists; the previous key stays valid until the commit, and a pending slot
//! is never counted as a way in (I1, [`crate::invariants::committed_paths`]).

use std::time::SystemTime;

use super::{host, Host, ProtocolError};
use crate::error::StoreError;
use crate::ids::SlotId;
use crate::secret::Secret;
use crate::store::{Authority, GrantRequest, UnlockStore};
use crate::token::{EscrowRef, Role, TokenState};

type Result<T, E> = std::result::Result<T, ProtocolError<E>>;

/// Recovery slots by state.
fn slots<S: UnlockStore>(
    store: &mut S,
    state: TokenState,
) -> std::result::Result<Vec<SlotId>, StoreError> {
    let s = store.state()?;
    Ok(s.keyward_tokens()
        .filter(|(_, t)| t.role == Role::Recovery && t.state == state)
        .filter_map(|(_, t)| t.keyslot)
        .collect())
}

/// Drop a pending rotation older than the host's `pending_max_age`: its slot is revoked and
/// its key forgotten (the previous key was valid all along; the agent begins afresh). Part of
/// the settling run at start-up and before every operation. Step `recovery-expire.revoked`.
pub fn expire_pending<S: UnlockStore, H: Host>(store: &mut S, h: &mut H) -> Result<(), H::Error> {
    let (now, max) = (h.now(), h.pending_max_age());
    let s = store.state()?;
    let stale: Vec<SlotId> = s
        .keyward_tokens()
        .filter(|(_, t)| t.role == Role::Recovery && t.state == TokenState::Pending)
        .filter(|(_, t)| now.duration_since(t.created).is_ok_and(|age| age > max))
        .filter_map(|(_, t)| t.keyslot)
        .collect();
    if stale.is_empty() {
        return Ok(());
    }
    for slot in &stale {
        store.revoke(*slot)?;
        h.expired(*slot);
    }
    h.failpoint("recovery-expire.revoked").map_err(host)?;
    h.drop_pending_key().map_err(host)
}

/// Start-up: finish what a crash in the middle of a rotation's commit left behind. The
/// commit marks the new slot active, then retires the previous recovery slots, then deletes
/// the stored key; a crash between those steps leaves two committed recovery keys, or the
/// committed key still stored (allowed only while pending). The newest committed slot
/// stays — the one the stored key opens, else the most recently made — and the others go, as
/// the commit would have done; a stored key with no pending slot is deleted. Returns what was
/// done, for the audit log.
pub fn settle_at_start<S: UnlockStore, H: Host>(
    store: &mut S,
    h: &mut H,
) -> Result<Vec<String>, H::Error> {
    let mut done = Vec::new();
    let key = h.pending_key().map_err(host)?;
    let state = store.state()?;
    let mut active: Vec<(SystemTime, SlotId)> = state
        .keyward_tokens()
        .filter(|(_, t)| t.role == Role::Recovery && t.state == TokenState::Active)
        .filter_map(|(_, t)| t.keyslot.map(|s| (t.created, s)))
        .collect();
    active.sort();
    if active.len() > 1 {
        let mut newest = None;
        if let Some(k) = &key {
            for (_, s) in &active {
                if store.verify(*s, k)? {
                    newest = Some(*s);
                }
            }
        }
        let by_age = match active.as_slice() {
            [.., (a, _), (b, last)] if a < b => Some(*last),
            _ => None,
        };
        if let Some(keep) = newest.or(by_age) {
            for (_, s) in active.iter().filter(|(_, s)| *s != keep) {
                store.revoke(*s)?;
                done.push(format!(
                    "retired recovery keyslot {s}, which an interrupted commit of keyslot {keep} had left"
                ));
            }
        }
    }
    if key.is_some() && slots(store, TokenState::Pending)?.is_empty() {
        h.drop_pending_key().map_err(host)?;
        done.push("deleted a stored recovery key that is no longer pending".into());
    }
    Ok(done)
}

/// The pending slot the stored pending key opens, revoking pending slots nobody holds a key
/// for and forgetting a stored key whose slot never came to be.
pub fn settle_pending<S: UnlockStore, H: Host>(
    store: &mut S,
    h: &mut H,
) -> Result<Option<(SlotId, Secret)>, H::Error> {
    expire_pending(store, h)?;
    let key = h.pending_key().map_err(host)?;
    let mut found = None;
    for slot in slots(store, TokenState::Pending)? {
        let opens = match &key {
            Some(k) if found.is_none() => store.verify(slot, k)?,
            _ => false,
        };
        if opens {
            found = Some(slot);
        } else {
            store.revoke(slot)?;
        }
    }
    match (found, key) {
        (Some(slot), Some(k)) => Ok(Some((slot, k))),
        _ => {
            h.drop_pending_key().map_err(host)?;
            Ok(None)
        }
    }
}

/// A new pending key, sealed before its slot exists (step `recovery-begin.sealed`), its slot
/// granted through the service secret; a failed grant forgets the key again.
pub fn new_pending<S: UnlockStore, H: Host>(
    store: &mut S,
    h: &mut H,
    service: &Secret,
) -> Result<(SlotId, Secret), H::Error> {
    let key = h.new_recovery_key().map_err(host)?;
    h.seal_pending_key(&key).map_err(host)?;
    h.failpoint("recovery-begin.sealed").map_err(host)?;
    let req = GrantRequest {
        role: Role::Recovery,
        pending: true,
    };
    match store.grant(&req, Authority::Service(service), &key) {
        Ok(slot) => Ok((slot, key)),
        Err(e) => {
            h.drop_pending_key().map_err(host)?;
            Err(e.into())
        }
    }
}

/// Commit `pending`, then revoke the recovery slots it replaces (steps
/// `recovery-commit.committed`, `recovery-commit.retired`). The caller drops the stored key
/// afterwards. Returns the slots retired.
pub fn commit<S: UnlockStore, H: Host>(
    store: &mut S,
    h: &mut H,
    pending: SlotId,
    escrow: Option<EscrowRef>,
) -> Result<Vec<SlotId>, H::Error> {
    let old = slots(store, TokenState::Active)?;
    store.commit(pending, escrow)?;
    h.failpoint("recovery-commit.committed").map_err(host)?;
    for s in &old {
        store.revoke(*s)?;
    }
    h.failpoint("recovery-commit.retired").map_err(host)?;
    Ok(old)
}

/// Revoke the pending slots (step `recovery-abort.revoked`); the first of them, if any. The
/// caller drops the stored key afterwards.
pub fn abort<S: UnlockStore, H: Host>(
    store: &mut S,
    h: &mut H,
) -> Result<Option<SlotId>, H::Error> {
    let pending = slots(store, TokenState::Pending)?;
    for s in &pending {
        store.revoke(*s)?;
    }
    h.failpoint("recovery-abort.revoked").map_err(host)?;
    Ok(pending.first().copied())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::expect_used)]
    use std::time::Duration;

    use super::*;
    use crate::fake::MemoryBackend;
    use crate::orderings::{SlotBackend, SlotStore};
    use crate::secret_orderings::memory::MemoryHost;
    use crate::secret_orderings::{service, ServiceStanding};

    type Store = SlotStore<MemoryBackend>;

    /// A bootstrapped volume, its host and the service secret.
    fn bootstrapped() -> (Store, MemoryHost, Secret) {
        let install = Secret::copy_from(b"installer passphrase");
        let mut store = SlotStore::new(MemoryBackend::formatted(&install));
        let mut h = MemoryHost::new(store.backend().now());
        service::create(&mut store, &mut h, &install).expect("bootstrap");
        match service::settle(&mut store, &mut h).expect("settle") {
            ServiceStanding::Working(_, secret) => (store, h, secret),
            other => panic!("not working: {other:?}"),
        }
    }

    #[test]
    fn a_pending_key_is_sealed_before_its_slot_and_found_again() {
        let (mut store, mut h, service) = bootstrapped();
        h.fail_at("recovery-begin.sealed");
        assert!(new_pending(&mut store, &mut h, &service).is_err());
        assert!(h.pending.is_some(), "sealed first");
        assert_eq!(
            slots(&mut store, TokenState::Pending).expect("read"),
            vec![]
        );
        // The next begin drops the key whose slot never came to be.
        assert!(settle_pending(&mut store, &mut h)
            .expect("settle")
            .is_none());
        assert!(h.pending.is_none());
        let (slot, key) = new_pending(&mut store, &mut h, &service).expect("begin");
        let (again, key2) = settle_pending(&mut store, &mut h)
            .expect("settle")
            .expect("pending");
        assert_eq!(again, slot);
        assert!(key2.ct_eq(&key));
    }

    #[test]
    fn a_pending_rotation_past_its_age_is_revoked() {
        let (mut store, mut h, service) = bootstrapped();
        let (slot, _) = new_pending(&mut store, &mut h, &service).expect("begin");
        h.now += h.max_age;
        assert!(settle_pending(&mut store, &mut h)
            .expect("settle")
            .is_some());
        h.now += Duration::from_secs(1);
        assert!(settle_pending(&mut store, &mut h)
            .expect("settle")
            .is_none());
        assert!(store.state().expect("read").slot(slot).is_none());
        assert!(h.pending.is_none());
        assert_eq!(h.expired, vec![slot]);
    }

    #[test]
    fn a_commit_cut_before_retiring_is_finished_at_start() {
        let (mut store, mut h, service) = bootstrapped();
        let (first, _) = new_pending(&mut store, &mut h, &service).expect("begin");
        commit(&mut store, &mut h, first, None).expect("commit");
        h.pending = None;
        let (second, _) = new_pending(&mut store, &mut h, &service).expect("begin");
        h.fail_at("recovery-commit.committed");
        assert!(commit(&mut store, &mut h, second, None).is_err());
        let active = slots(&mut store, TokenState::Active).expect("read");
        assert_eq!(
            active.len(),
            2,
            "both keys in force until the start-up pass"
        );
        let done = settle_at_start(&mut store, &mut h).expect("settle");
        assert_eq!(done.len(), 2, "{done:?}");
        assert_eq!(
            slots(&mut store, TokenState::Active).expect("read"),
            vec![second]
        );
        assert!(h.pending.is_none(), "the committed key is no longer stored");
    }

    #[test]
    fn abort_revokes_the_pending_slot_only() {
        let (mut store, mut h, service) = bootstrapped();
        let (first, _) = new_pending(&mut store, &mut h, &service).expect("begin");
        commit(&mut store, &mut h, first, None).expect("commit");
        let (pending, _) = new_pending(&mut store, &mut h, &service).expect("begin");
        assert_eq!(abort(&mut store, &mut h).expect("abort"), Some(pending));
        assert_eq!(
            slots(&mut store, TokenState::Pending).expect("read"),
            vec![]
        );
        assert_eq!(
            slots(&mut store, TokenState::Active).expect("read"),
            vec![first]
        );
        assert_eq!(abort(&mut store, &mut h).expect("abort"), None);
    }
}
