//! The LUKS2 recovery slots: a pending slot beside the active one until the rotation's proof
//! (`ops::recovery`), expiry of a pending rotation left too long, and the start-up pass that
//! finishes a commit a crash cut short. The key itself is sealed in `pending_key`.

use keyward_core::store::GrantRequest;
use keyward_core::token::{EscrowRef, Role, TokenState};
use keyward_core::{Authority, Secret, SlotId, UnlockStore};

use super::LuksVault;
use crate::error::OpError;
use crate::failpoint::failpoint;
use crate::pending_key;

/// Recovery slots by state.
fn slots<S: UnlockStore>(store: &mut S, state: TokenState) -> Result<Vec<SlotId>, OpError> {
    let s = store.state()?;
    Ok(s.keyward_tokens()
        .filter(|(_, t)| t.role == Role::Recovery && t.state == state)
        .filter_map(|(_, t)| t.keyslot)
        .collect())
}

/// Drop a pending rotation older than `[policy] pending_max_age_secs`: its slot is revoked and
/// its key forgotten (the previous key was valid all along; the agent begins afresh). Part of
/// the settling run at start-up and before every operation.
pub fn expire_pending<S: UnlockStore>(vault: &mut LuksVault<'_, S>) -> Result<(), OpError> {
    let (c, v) = (vault.c, vault.v);
    let now = std::time::SystemTime::now();
    let max = std::time::Duration::from_secs(c.policy.pending_max_age_secs);
    let s = vault.store.state()?;
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
        vault.store.revoke(*slot)?;
        eprintln!(
            "keyward-helper: {}: pending recovery key in keyslot {slot} is older than {}s; revoked",
            v.name, c.policy.pending_max_age_secs
        );
    }
    failpoint("recovery-expire.revoked");
    pending_key::drop(c, &v.name)
}

/// Start-up: finish what a crash in the middle of a rotation's commit left behind. The
/// commit marks the new slot active, then retires the previous recovery slots, then deletes
/// the stored key; a crash between those steps leaves two committed recovery keys, or the
/// committed key still on disk (allowed there only while pending). The newest committed slot
/// stays — the one the stored key opens, else the most recently made — and the others go, as
/// the commit would have done; a stored key with no pending slot is deleted. Returns what was
/// done, for the audit log.
pub fn settle_at_start<S: UnlockStore>(
    vault: &mut LuksVault<'_, S>,
) -> Result<Vec<String>, OpError> {
    let (c, v) = (vault.c, vault.v);
    let store = &mut vault.store;
    let mut done = Vec::new();
    let key = pending_key::load(c, &v.name)?;
    let state = store.state()?;
    let mut active: Vec<(std::time::SystemTime, SlotId)> = state
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
    let pending_slots = slots(store, TokenState::Pending)?;
    if key.is_some() && pending_slots.is_empty() {
        pending_key::drop(c, &v.name)?;
        done.push("deleted a stored recovery key that is no longer pending".into());
    }
    Ok(done)
}

/// The pending slot the stored pending key opens, revoking pending slots nobody holds a key
/// for and forgetting a stored key whose slot never came to be.
pub fn settle_pending<S: UnlockStore>(
    vault: &mut LuksVault<'_, S>,
) -> Result<Option<(SlotId, Secret)>, OpError> {
    expire_pending(vault)?;
    let (c, v) = (vault.c, vault.v);
    let key = pending_key::load(c, &v.name)?;
    let mut found = None;
    for slot in slots(&mut vault.store, TokenState::Pending)? {
        let opens = match &key {
            Some(k) if found.is_none() => vault.store.verify(slot, k)?,
            _ => false,
        };
        if opens {
            found = Some(slot);
        } else {
            vault.store.revoke(slot)?;
        }
    }
    match (found, key) {
        (Some(slot), Some(k)) => Ok(Some((slot, k))),
        _ => {
            pending_key::drop(c, &v.name)?;
            Ok(None)
        }
    }
}

/// A new pending key, sealed before its slot exists; a failed grant forgets it again.
pub fn new_pending<S: UnlockStore>(
    vault: &mut LuksVault<'_, S>,
    service: &Secret,
) -> Result<(SlotId, Secret), OpError> {
    let (c, v) = (vault.c, vault.v);
    let key = keyward_sys::random::recovery_key()?;
    pending_key::seal(c, &v.name, &key)?;
    let req = GrantRequest {
        role: Role::Recovery,
        pending: true,
    };
    match vault.store.grant(&req, Authority::Service(service), &key) {
        Ok(slot) => Ok((slot, key)),
        Err(e) => {
            pending_key::drop(c, &v.name)?;
            Err(e.into())
        }
    }
}

/// Commit `pending`, then revoke the recovery slots it replaces.
pub fn commit<S: UnlockStore>(
    vault: &mut LuksVault<'_, S>,
    pending: SlotId,
    escrow: Option<EscrowRef>,
) -> Result<Vec<SlotId>, OpError> {
    let old = slots(&mut vault.store, TokenState::Active)?;
    vault.store.commit(pending, escrow)?;
    failpoint("recovery-commit.committed");
    for s in &old {
        vault.store.revoke(*s)?;
    }
    failpoint("recovery-commit.retired");
    Ok(old)
}

/// Revoke the pending slots.
pub fn abort<S: UnlockStore>(vault: &mut LuksVault<'_, S>) -> Result<Option<SlotId>, OpError> {
    let pending = slots(&mut vault.store, TokenState::Pending)?;
    for s in &pending {
        vault.store.revoke(*s)?;
    }
    failpoint("recovery-abort.revoked");
    Ok(pending.first().copied())
}
