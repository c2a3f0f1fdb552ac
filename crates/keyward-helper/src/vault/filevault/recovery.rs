//! FileVault's personal recovery key, rotated with the same protocol as a LUKS2 recovery slot
//! (`ops::recovery`), with the one difference macOS imposes: `fdesetup changerecovery` retires
//! the old key the moment it makes the new one. The registry's side — validation before the
//! old key's record goes, the pending entry, when a pending key is given up (in force, not
//! escrowed) — is keyward-macos's (`keyward_macos::recovery`). The helper adds the key's sealed
//! copy in `pending/<volume>` (`pending_key`), made straight after `changerecovery`, and the
//! age limit `[policy] pending_max_age_secs`.

use keyward_core::config::{Config, Volume};
use keyward_core::{Secret, SlotId};
use keyward_macos::recovery::PendingSettled;

use super::{mac_failure, Store};
use crate::error::OpError;
use crate::pending_key;
use keyward_sys::failpoint::failpoint;

/// The pending key and its slot, if the sealed copy is there and still the key in force;
/// a pending record without it (or past its age) is given up (in force, not escrowed).
pub(super) fn settle_pending(
    c: &Config,
    v: &Volume,
    s: &mut Store<'_>,
) -> Result<Option<(SlotId, Secret)>, OpError> {
    let key = pending_key::load(c, &v.name)?;
    let max = std::time::Duration::from_secs(c.policy.pending_max_age_secs);
    let slot = match s.settle_pending_recovery(key, max).map_err(mac_failure)? {
        PendingSettled::Kept(p) => return Ok(Some((p.slot, p.key))),
        PendingSettled::NonePending => None,
        PendingSettled::Abandoned(slot) => Some(slot),
    };
    pending_key::drop(c, &v.name)?;
    if let Some(slot) = slot {
        eprintln!(
            "keyward-helper: {}: pending FileVault recovery key (slot {slot}) given up; it stays in force, not escrowed, until the next rotation",
            v.name
        );
    }
    Ok(None)
}

/// A stored key with no pending record is a committed (or given-up) key that a crash left on
/// disk between the registry's save and the key's deletion: it is deleted. Part of settling
/// the service standing, at start-up and before every operation.
pub(super) fn drop_unpending(c: &Config, v: &Volume, s: &mut Store<'_>) -> Result<(), OpError> {
    let stored = pending_key::load(c, &v.name)?.is_some();
    if stored && s.pending_recovery().map_err(mac_failure)?.is_none() {
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
    let seal = |key: &Secret| {
        pending_key::seal(c, &v.name, key)?;
        failpoint("recovery-begin.sealed");
        Ok(())
    };
    let p = s.rotate_recovery_kept(seal, mac_failure)?;
    Ok((p.slot, p.key))
}
