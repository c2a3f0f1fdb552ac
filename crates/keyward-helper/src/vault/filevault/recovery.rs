//! FileVault's personal recovery key, rotated with the same protocol as a LUKS2 recovery slot
//! (`ops::recovery`), with the one difference macOS imposes: `fdesetup changerecovery` retires
//! the old key the moment it makes the new one. So the new key is validated before keyward
//! forgets the old one's record (keyward-macos), sealed root-only in `pending/<volume>` straight
//! after, and stays `pending` — never counted as a way in — until the receipt or the
//! confirmation. The account holders (at least the service account) are the ways in throughout.
//!
//! A pending key whose sealed copy is lost (a crash between `changerecovery` and the seal), or
//! that is older than `[policy] pending_max_age_secs`, or that is aborted, is recorded as in
//! force and *not escrowed* (FileVault cannot go back); status says so and the agent's schedule
//! rotates again.

use keyward_core::config::{Config, Volume};
use keyward_core::token::{Role, TokenState};
use keyward_core::{Secret, SlotId};
use keyward_macos::registry::Journal;

use super::{mac_failure, Store};
use crate::error::OpError;
use crate::pending_key;

/// The pending recovery key's slot and creation time, from keyward's registry.
fn pending_entry(s: &mut Store<'_>) -> Result<Option<(SlotId, std::time::SystemTime)>, OpError> {
    let reg = s.journal_mut().load().map_err(mac_failure)?;
    Ok(reg
        .entries
        .iter()
        .filter(|e| e.token.role == Role::Recovery && e.token.state == TokenState::Pending)
        .find_map(|e| e.token.keyslot.map(|slot| (slot, e.token.created))))
}

/// The pending key and its slot, if the sealed copy is there and still the key in force;
/// a pending record without it (or past its age) is given up (in force, not escrowed).
pub(super) fn settle_pending(
    c: &Config,
    v: &Volume,
    s: &mut Store<'_>,
) -> Result<Option<(SlotId, Secret)>, OpError> {
    // No reconcile here: `working` (begin) and `commit_recovery` (commit) each run one, and an
    // interrupted intent is never `pending`.
    let key = pending_key::load(c, &v.name)?;
    let Some((slot, created)) = pending_entry(s)? else {
        pending_key::drop(c, &v.name)?;
        return Ok(None);
    };
    let max = std::time::Duration::from_secs(c.policy.pending_max_age_secs);
    let expired = std::time::SystemTime::now()
        .duration_since(created)
        .is_ok_and(|age| age > max);
    let found = match key {
        Some(k) if !expired && s.verify_slot(slot, &k).map_err(mac_failure)? => Some((slot, k)),
        _ => None,
    };
    if found.is_none() {
        s.abandon_pending_recovery(slot).map_err(mac_failure)?;
        pending_key::drop(c, &v.name)?;
        eprintln!(
            "keyward-helper: {}: pending FileVault recovery key (slot {slot}) given up; it stays in force, not escrowed, until the next rotation",
            v.name
        );
    }
    Ok(found)
}

/// A stored key with no pending record is a committed (or given-up) key that a crash left on
/// disk between the registry's save and the key's deletion: it is deleted. Part of settling
/// the service standing, at start-up and before every operation.
pub(super) fn drop_unpending(c: &Config, v: &Volume, s: &mut Store<'_>) -> Result<(), OpError> {
    if pending_key::load(c, &v.name)?.is_some() && pending_entry(s)?.is_none() {
        pending_key::drop(c, &v.name)?;
        eprintln!(
            "keyward-helper: {}: deleted a stored recovery key that is no longer pending",
            v.name
        );
    }
    Ok(())
}

/// A new key from `fdesetup changerecovery`, sealed straight after.
pub(super) fn new_pending(
    c: &Config,
    v: &Volume,
    s: &mut Store<'_>,
) -> Result<(SlotId, Secret), OpError> {
    let p = s.rotate_recovery().map_err(mac_failure)?;
    if let Err(e) = pending_key::seal(c, &v.name, &p.key) {
        // The key is in force and known to nobody: record it so, and say what failed.
        s.abandon_pending_recovery(p.slot).map_err(mac_failure)?;
        return Err(e);
    }
    Ok((p.slot, p.key))
}

/// Give up on the pending key: FileVault cannot go back, so it stays in force, not escrowed.
pub(super) fn abort(s: &mut Store<'_>) -> Result<Option<SlotId>, OpError> {
    let pending = pending_entry(s)?;
    if let Some((slot, _)) = pending {
        s.abandon_pending_recovery(slot).map_err(mac_failure)?;
    }
    Ok(pending.map(|(slot, _)| slot))
}
