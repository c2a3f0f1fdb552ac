//! The service slot and its secret: finding the pair that works, finishing or undoing what an
//! interrupted bootstrap or rotation left behind, making, rotating, repairing and releasing it.
//!
//! Rotation (DESIGN.md section 5): generate → store it as `next` → add a *pending* service
//! slot, opened by the current secret → verify (part of the grant) → promote `next` to the
//! current secret → commit the new slot → revoke the old one. After a crash at any step,
//! [`settle`] tests which stored secret opens which service slot and goes forward where a
//! newer secret's slot exists, back where it does not; the volume always keeps a service slot
//! whose secret is stored (`tests/secret_orderings_props.rs` crashes at every step).
//!
//! A service slot has LUKS2 priority `ignore` (issue 18): its random secret is never typed, so
//! a passphrase typed at boot must not pay for it before the users' slots; keyward opens it by
//! number, and so does the admin's way out (the helper's `vault/luks/boot_order.rs`). It is
//! set as soon as the slot exists, and [`settle`] — at start-up and before every operation —
//! sets it on a service slot made before this (an upgrade) or left `normal` by a crash or by
//! hand.

use super::{host, recovery, Host, ProtocolError, ServiceStanding};
use crate::ids::{SlotId, VolumeName};
use crate::invariants;
use crate::model::SlotPriority;
use crate::secret::Secret;
use crate::store::{Authority, GrantRequest, UnlockStore};
use crate::token::{Role, TokenState};

type Result<T, E> = std::result::Result<T, ProtocolError<E>>;

/// Find the working service slot and secret, tidying up after an interrupted bootstrap or
/// rotation: a pending slot the newest stored secret opens is committed, and service slots no
/// stored secret opens are revoked (never the last way in: revoke checks I1). Expired pending
/// recovery slots go too ([`recovery::expire_pending`]).
pub fn settle<S: UnlockStore, H: Host>(
    store: &mut S,
    h: &mut H,
) -> Result<ServiceStanding, H::Error> {
    // First whatever an interrupted header operation left (grant, rekey, revoke).
    store.reconcile()?;
    recovery::expire_pending(store, h)?;
    let header = store.state()?;
    let slots: Vec<(SlotId, TokenState)> = header
        .keyward_tokens()
        .filter(|(_, t)| t.role == Role::Service)
        .filter_map(|(_, t)| t.keyslot.map(|s| (s, t.state)))
        .collect();
    let Some(&(first, _)) = slots.first() else {
        h.discard_next_service_secret().map_err(host)?;
        return Ok(ServiceStanding::Missing);
    };
    let mut opens = |secret: &Option<Secret>| -> Result<Option<(SlotId, TokenState)>, H::Error> {
        let Some(secret) = secret else {
            return Ok(None);
        };
        for (s, st) in &slots {
            if store.verify(*s, secret)? {
                return Ok(Some((*s, *st)));
            }
        }
        Ok(None)
    };
    let current = h.service_secret().map_err(host)?;
    let next = h.next_service_secret().map_err(host)?;
    let (by_current, by_next) = (opens(&current)?, opens(&next)?);
    let (slot, state, secret) = match (by_next, next, by_current, current) {
        // A newer secret whose slot exists: finish going forward.
        (Some((s, st)), Some(n), _, _) => {
            h.promote_next_service_secret().map_err(host)?;
            h.failpoint("service-settle.promoted").map_err(host)?;
            (s, st, n)
        }
        (_, _, Some((s, st)), Some(cur)) => {
            h.discard_next_service_secret().map_err(host)?;
            (s, st, cur)
        }
        _ => return Ok(ServiceStanding::Drift(first)),
    };
    if state == TokenState::Pending {
        store.commit(slot, None)?;
        h.failpoint("service-settle.committed").map_err(host)?;
    }
    for (other, _) in slots.iter().filter(|(s, _)| *s != slot) {
        store.revoke(*other)?;
    }
    if header
        .slot(slot)
        .is_some_and(|s| s.priority != SlotPriority::Ignore)
    {
        store.ignore_at_boot(slot)?;
    }
    Ok(ServiceStanding::Working(slot, secret))
}

/// Make a new service secret, durable as `next` before the slot that needs it exists, and add
/// its slot (`pending` or not) opened by `authority`. A failed grant drops the new secret
/// again. Steps `<step>.next-written`, `<step>.slot-added`.
fn add_service_slot<S: UnlockStore, H: Host>(
    store: &mut S,
    h: &mut H,
    pending: bool,
    authority: Authority<'_>,
    step: &str,
) -> Result<SlotId, H::Error> {
    let secret = h.new_service_secret().map_err(host)?;
    h.store_next_service_secret(&secret).map_err(host)?;
    h.failpoint(&format!("{step}.next-written")).map_err(host)?;
    let req = GrantRequest {
        role: Role::Service,
        pending,
    };
    match store.grant(&req, authority, &secret) {
        Ok(slot) => {
            h.failpoint(&format!("{step}.slot-added")).map_err(host)?;
            // Never tried for a typed passphrase from the start; a crash before this leaves
            // it `normal`, which the next settle corrects.
            store.ignore_at_boot(slot)?;
            Ok(slot)
        }
        Err(e) => {
            h.discard_next_service_secret().map_err(host)?;
            Err(e.into())
        }
    }
}

/// Bootstrap: the first service slot, granted by a holder's passphrase.
pub fn create<S: UnlockStore, H: Host>(
    store: &mut S,
    h: &mut H,
    passphrase: &Secret,
) -> Result<SlotId, H::Error> {
    let slot = add_service_slot(store, h, false, Authority::Holder(passphrase), "bootstrap")?;
    h.promote_next_service_secret().map_err(host)?;
    Ok(slot)
}

/// `keyward service rotate`: a new secret and slot, then the old slot goes.
pub fn rotate<S: UnlockStore, H: Host>(
    store: &mut S,
    h: &mut H,
    old: SlotId,
    current: &Secret,
) -> Result<SlotId, H::Error> {
    let slot = add_service_slot(
        store,
        h,
        true,
        Authority::Service(current),
        "service-rotate",
    )?;
    h.promote_next_service_secret().map_err(host)?;
    h.failpoint("service-rotate.renamed").map_err(host)?;
    store.commit(slot, None)?;
    h.failpoint("service-rotate.committed").map_err(host)?;
    store.revoke(old)?;
    Ok(slot)
}

/// `keyward service repair` of volume `name`: a drifted service slot (no stored secret opens
/// it) is replaced. The new secret is durable before its slot exists; the new slot is granted
/// by the holder's passphrase; only then does settling revoke the stale one. Returns (stale,
/// new).
pub fn repair<S: UnlockStore, H: Host>(
    store: &mut S,
    h: &mut H,
    name: &VolumeName,
    passphrase: &Secret,
) -> Result<(SlotId, SlotId), H::Error> {
    let stale = match settle(store, h)? {
        ServiceStanding::Drift(slot) => slot,
        ServiceStanding::Working(slot, _) => return Err(ProtocolError::NothingToRepair(slot)),
        ServiceStanding::Missing => return Err(ProtocolError::NoServiceSlot(name.clone())),
    };
    let new = add_service_slot(
        store,
        h,
        true,
        Authority::Holder(passphrase),
        "service-repair",
    )?;
    // A pending slot beside the stale one (a volume has one committed service holder); the
    // new secret opens it, so settle promotes the secret, commits the slot, revokes the stale.
    match settle(store, h)? {
        ServiceStanding::Working(slot, _) if slot == new => Ok((stale, new)),
        other => Err(ProtocolError::RepairUnsettled(other)),
    }
}

/// Uninstall from volume `name`: every keyward slot goes (users and recovery first, the
/// service slot last), then the stored service secrets, but only if a slot keyward does not
/// manage remains as a way in (I1); otherwise nothing is removed. With `dry_run`, only the
/// plan. Returns the slots, in the order they go.
pub fn release<S: UnlockStore, H: Host>(
    store: &mut S,
    h: &mut H,
    name: &VolumeName,
    dry_run: bool,
) -> Result<Vec<SlotId>, H::Error> {
    if !dry_run {
        store.reconcile()?;
    }
    let ours = invariants::release_order(&store.state()?)
        .ok_or_else(|| ProtocolError::EveryWayInIsKeywards(name.clone()))?;
    if dry_run {
        return Ok(ours);
    }
    for slot in &ours {
        store.revoke(*slot)?;
    }
    h.failpoint("release.revoked").map_err(host)?;
    h.discard_next_service_secret().map_err(host)?;
    h.forget_service_secret().map_err(host)?;
    Ok(ours)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::expect_used)]
    use super::*;
    use crate::fake::MemoryBackend;
    use crate::orderings::{SlotBackend, SlotStore};
    use crate::secret_orderings::memory::{MemoryHost, MemoryHostError};

    type Store = SlotStore<MemoryBackend>;

    fn installer() -> Secret {
        Secret::copy_from(b"installer passphrase")
    }

    /// A volume as an installer leaves it, bootstrapped, and its host.
    fn bootstrapped() -> (Store, MemoryHost) {
        let mut store = SlotStore::new(MemoryBackend::formatted(&installer()));
        let mut h = MemoryHost::new(store.backend().now());
        create(&mut store, &mut h, &installer()).expect("bootstrap");
        (store, h)
    }

    fn working(store: &mut Store, h: &mut MemoryHost) -> (SlotId, Secret) {
        match settle(store, h).expect("settle") {
            ServiceStanding::Working(slot, secret) => (slot, secret),
            other => panic!("not working: {other:?}"),
        }
    }

    fn service_slots(store: &mut Store) -> Vec<(SlotId, TokenState)> {
        let state = store.state().expect("read");
        state
            .keyward_tokens()
            .filter(|(_, t)| t.role == Role::Service)
            .filter_map(|(_, t)| t.keyslot.map(|s| (s, t.state)))
            .collect()
    }

    #[test]
    fn settling_goes_forward_to_a_pending_service_slot_the_next_secret_opens() {
        let (mut store, mut h) = bootstrapped();
        let (old, current) = working(&mut store, &mut h);
        // An interrupted rotation: `next` stored, its pending slot added, nothing else.
        let next = Secret::copy_from(b"next");
        h.next = Some(next.duplicate());
        let req = GrantRequest {
            role: Role::Service,
            pending: true,
        };
        let new = store
            .grant(&req, Authority::Service(&current), &next)
            .expect("grant");
        let (slot, secret) = working(&mut store, &mut h);
        assert_eq!(slot, new);
        assert!(secret.ct_eq(&next));
        assert!(
            h.current.as_ref().is_some_and(|c| c.ct_eq(&next)),
            "promoted"
        );
        assert!(h.next.is_none());
        assert_eq!(service_slots(&mut store), vec![(new, TokenState::Active)]);
        assert_ne!(new, old);
        let ignored = store.state().expect("read").slot(new).map(|s| s.priority);
        assert_eq!(ignored, Some(SlotPriority::Ignore));
    }

    #[test]
    fn settling_goes_back_when_the_next_secret_has_no_slot() {
        let (mut store, mut h) = bootstrapped();
        let (slot, current) = working(&mut store, &mut h);
        h.next = Some(Secret::copy_from(b"next"));
        let (s, secret) = working(&mut store, &mut h);
        assert_eq!(s, slot);
        assert!(secret.ct_eq(&current));
        assert!(h.next.is_none(), "the orphaned next secret is dropped");
    }

    #[test]
    fn a_rotation_stopped_after_the_rename_settles_forward() {
        let (mut store, mut h) = bootstrapped();
        let (old, current) = working(&mut store, &mut h);
        h.fail_at("service-rotate.renamed");
        let r = rotate(&mut store, &mut h, old, &current);
        assert!(
            matches!(r, Err(ProtocolError::Host(MemoryHostError::Stopped(_)))),
            "{r:?}"
        );
        let (slot, secret) = working(&mut store, &mut h);
        assert_ne!(slot, old);
        assert!(!secret.ct_eq(&current));
        assert_eq!(service_slots(&mut store), vec![(slot, TokenState::Active)]);
        assert!(h.trace.iter().any(|s| s == "service-settle.committed"));
    }

    #[test]
    fn a_failed_grant_drops_the_next_secret_again() {
        let mut store = SlotStore::new(MemoryBackend::formatted(&installer()));
        let mut h = MemoryHost::new(store.backend().now());
        let wrong = Secret::copy_from(b"not the passphrase");
        let r = create(&mut store, &mut h, &wrong);
        assert!(
            matches!(
                r,
                Err(ProtocolError::Store(
                    crate::StoreError::AuthenticationFailed
                ))
            ),
            "{r:?}"
        );
        assert!(h.next.is_none() && h.current.is_none());
        assert!(matches!(
            settle(&mut store, &mut h).expect("settle"),
            ServiceStanding::Missing
        ));
    }

    #[test]
    fn repair_is_refused_unless_the_service_slot_drifted_and_then_replaces_it() {
        let name = VolumeName::parse("root").expect("valid");
        let mut store = SlotStore::new(MemoryBackend::formatted(&installer()));
        let mut h = MemoryHost::new(store.backend().now());
        let r = repair(&mut store, &mut h, &name, &installer());
        assert!(matches!(r, Err(ProtocolError::NoServiceSlot(_))), "{r:?}");
        create(&mut store, &mut h, &installer()).expect("bootstrap");
        let (stale, _) = working(&mut store, &mut h);
        let r = repair(&mut store, &mut h, &name, &installer());
        assert!(
            matches!(r, Err(ProtocolError::NothingToRepair(s)) if s == stale),
            "{r:?}"
        );
        h.current = None;
        let (old, new) = repair(&mut store, &mut h, &name, &installer()).expect("repair");
        assert_eq!(old, stale);
        let (slot, _) = working(&mut store, &mut h);
        assert_eq!(slot, new);
        assert_eq!(service_slots(&mut store), vec![(new, TokenState::Active)]);
    }

    #[test]
    fn release_refuses_when_every_way_in_is_keywards_and_otherwise_forgets_the_secret() {
        let name = VolumeName::parse("root").expect("valid");
        let (mut store, mut h) = bootstrapped();
        let (slot, _) = working(&mut store, &mut h);
        assert_eq!(
            release(&mut store, &mut h, &name, true).expect("plan"),
            vec![slot]
        );
        assert!(h.current.is_some(), "a dry run forgets nothing");
        let zero = SlotId::new(0).expect("0");
        let install = installer();
        // Another tool's second way in, then the installer's slot removed behind keyward.
        store
            .backend_mut()
            .insert_unmanaged(None, &install)
            .expect("room");
        assert_eq!(
            release(&mut store, &mut h, &name, false).expect("release"),
            vec![slot]
        );
        assert!(h.current.is_none() && h.next.is_none());
        assert!(h.trace.iter().any(|s| s == "release.revoked"));
        let (mut store, mut h) = bootstrapped();
        store.backend_mut().destroy_slot(zero).expect("kill");
        let r = release(&mut store, &mut h, &name, false);
        assert!(
            matches!(r, Err(ProtocolError::EveryWayInIsKeywards(_))),
            "{r:?}"
        );
        assert!(h.current.is_some(), "nothing forgotten");
    }
}
