//! The LUKS2 service slot and its secret: finding the pair that works, finishing or undoing
//! what an interrupted bootstrap or rotation left behind, making, rotating and repairing it.
//!
//! Rotation (DESIGN.md section 5): generate → write `<volume>.next` (fsync) → add a *pending*
//! service slot, opened by the current secret → verify (part of the grant) → rename `.next`
//! over the current secret (fsync dir) → commit the new slot → revoke the old one. After a crash
//! at any step, [`settle`] tests which stored secret opens which service slot and goes forward
//! where a newer secret's slot exists, back where it does not; the volume always keeps a
//! service slot whose secret is stored.
//!
//! A service slot has LUKS2 priority `ignore` (issue 18): its random secret is never typed, so
//! a passphrase typed at boot must not pay for it before the users' slots; keyward opens it by
//! number, and so does the admin's way out (`vault/luks/boot_order.rs`). It is set as soon as
//! the slot exists, and [`settle`] — at start-up and before every operation — sets it on a
//! service slot made before this (an upgrade) or left `normal` by a crash or by hand.

use keyward_core::store::GrantRequest;
use keyward_core::token::{Role, TokenState};
use keyward_core::{Authority, Secret, SlotId, SlotPriority, UnlockStore};

use super::recovery;
use super::LuksVault;
use crate::error::OpError;
use crate::failpoint::failpoint;
use crate::service_secret;
use crate::vault::ServiceStanding;

fn io(source: std::io::Error) -> OpError {
    OpError::io("service secret")(source)
}

/// Find the working service slot and secret, tidying up after an interrupted bootstrap or
/// rotation: a pending slot the newest stored secret opens is committed, and service slots no
/// stored secret opens are revoked (never the last way in: revoke checks I1).
pub fn settle<S: UnlockStore>(vault: &mut LuksVault<'_, S>) -> Result<ServiceStanding, OpError> {
    let (c, name) = (vault.c, &vault.v.name);
    // First whatever an interrupted header operation left (grant, rekey, revoke).
    vault.store.reconcile()?;
    recovery::expire_pending(vault)?;
    let store = &mut vault.store;
    let header = store.state()?;
    let slots: Vec<(SlotId, TokenState)> = header
        .keyward_tokens()
        .filter(|(_, t)| t.role == Role::Service)
        .filter_map(|(_, t)| t.keyslot.map(|s| (s, t.state)))
        .collect();
    if slots.is_empty() {
        service_secret::discard_next(c, name).map_err(io)?;
        return Ok(ServiceStanding::Missing);
    }
    let mut opens = |secret: &Secret| -> Result<Option<(SlotId, TokenState)>, OpError> {
        for (s, st) in &slots {
            if store.verify(*s, secret)? {
                return Ok(Some((*s, *st)));
            }
        }
        Ok(None)
    };
    let current = service_secret::load(c, name).map_err(io)?;
    let next = service_secret::load_next(c, name).map_err(io)?;
    let by_current = match &current {
        Some(s) => opens(s)?,
        None => None,
    };
    let by_next = match &next {
        Some(s) => opens(s)?,
        None => None,
    };
    let (slot, state, secret) = match (by_next, next, by_current, current) {
        // A newer secret whose slot exists: finish going forward.
        (Some((s, st)), Some(n), _, _) => {
            service_secret::promote_next(c, name).map_err(io)?;
            failpoint("service-settle.promoted");
            (s, st, n)
        }
        (_, _, Some((s, st)), Some(cur)) => {
            service_secret::discard_next(c, name).map_err(io)?;
            (s, st, cur)
        }
        _ => return Ok(ServiceStanding::Drift(slots[0].0)),
    };
    if state == TokenState::Pending {
        store.commit(slot, None)?;
        failpoint("service-settle.committed");
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

/// Make a new service secret, durable as `<volume>.next` before the slot that needs it
/// exists, and add its slot (`pending` or not) opened by `authority`. A failed grant drops the
/// new secret again.
fn add_service_slot<S: UnlockStore>(
    vault: &mut LuksVault<'_, S>,
    pending: bool,
    authority: Authority<'_>,
    step: &str,
) -> Result<SlotId, OpError> {
    let (c, name) = (vault.c, &vault.v.name);
    let secret = keyward_sys::random::service_secret()?;
    service_secret::store_next(c, name, &secret).map_err(io)?;
    failpoint(&format!("{step}.next-written"));
    let req = GrantRequest {
        role: Role::Service,
        pending,
    };
    match vault.store.grant(&req, authority, &secret) {
        Ok(slot) => {
            failpoint(&format!("{step}.slot-added"));
            // Never tried for a typed passphrase from the start; a crash before this leaves
            // it `normal`, which the next settle corrects.
            vault.store.ignore_at_boot(slot)?;
            Ok(slot)
        }
        Err(e) => {
            service_secret::discard_next(c, name).map_err(io)?;
            Err(e.into())
        }
    }
}

/// Bootstrap: the first service slot, granted by a holder's passphrase.
pub fn create<S: UnlockStore>(
    vault: &mut LuksVault<'_, S>,
    passphrase: &Secret,
) -> Result<SlotId, OpError> {
    let slot = add_service_slot(vault, false, Authority::Holder(passphrase), "bootstrap")?;
    service_secret::promote_next(vault.c, &vault.v.name).map_err(io)?;
    Ok(slot)
}

/// `keyward service rotate`: a new secret and slot, then the old slot goes.
pub fn rotate<S: UnlockStore>(
    vault: &mut LuksVault<'_, S>,
    old: SlotId,
    current: &Secret,
) -> Result<SlotId, OpError> {
    let slot = add_service_slot(vault, true, Authority::Service(current), "service-rotate")?;
    service_secret::promote_next(vault.c, &vault.v.name).map_err(io)?;
    failpoint("service-rotate.renamed");
    vault.store.commit(slot, None)?;
    failpoint("service-rotate.committed");
    vault.store.revoke(old)?;
    Ok(slot)
}

/// `keyward service repair`: a drifted service slot (no stored secret opens it) is replaced.
/// The new secret is durable before its slot exists; the new slot is granted by the holder's
/// passphrase; only then does settling revoke the stale one.
pub fn repair<S: UnlockStore>(
    vault: &mut LuksVault<'_, S>,
    passphrase: &Secret,
) -> Result<(SlotId, SlotId), OpError> {
    let name = vault.v.name.clone();
    let stale = match settle(vault)? {
        ServiceStanding::Drift(slot) => slot,
        ServiceStanding::Working(slot, _) => {
            return Err(OpError::Refused(format!("service slot {slot} works; nothing to repair (rotate it with `keyward service rotate`)")))
        }
        ServiceStanding::Missing => {
            return Err(OpError::Refused(format!(
                "{name} has no service slot; run `keyward bootstrap {name}`"
            )))
        }
    };
    let new = add_service_slot(vault, true, Authority::Holder(passphrase), "service-repair")?;
    // A pending slot beside the stale one (a volume has one committed service holder); the
    // new secret opens it, so settle promotes the secret, commits the slot, revokes the stale.
    match settle(vault)? {
        ServiceStanding::Working(slot, _) if slot == new => Ok((stale, new)),
        other => Err(OpError::Failed(format!(
            "after repair the service slot is {other:?}; run `keyward verify`"
        ))),
    }
}
