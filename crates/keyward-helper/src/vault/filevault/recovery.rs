//! FileVault's personal recovery key, rotated with the same protocol as a LUKS2 recovery slot
//! (`ops::recovery`), with the one difference macOS imposes: `fdesetup changerecovery` retires
//! the old key the moment it makes the new one. The registry's side — validation before the
//! old key's record goes, the pending entry, when a pending key is given up (in force, not
//! escrowed) — is keyward-macos's (`keyward_macos::recovery`). The helper adds the key's sealed
//! copy in `pending/<volume>` (`pending_key`), made straight after `changerecovery`, and the
//! age limit `[policy] pending_max_age_secs`.

use keyward_core::{Secret, SlotId};
use keyward_macos::recovery::PendingSettled;

use super::MacVault;
use crate::error::OpError;
use crate::pending_key;
use keyward_sys::failpoint::failpoint;

impl MacVault<'_, '_, '_> {
    /// The pending key and its slot, if the sealed copy is there and still the key in force;
    /// a pending record without it (or past its age) is given up (in force, not escrowed).
    pub(super) fn settle_pending(&mut self) -> Result<Option<(SlotId, Secret)>, OpError> {
        let (c, name) = (self.c, &self.v.name);
        let key = pending_key::load(c, name)?;
        let max = std::time::Duration::from_secs(c.policy.pending_max_age_secs);
        let slot = match self.s.settle_pending_recovery(key, max)? {
            PendingSettled::Kept(p) => return Ok(Some((p.slot, p.key))),
            PendingSettled::NonePending => None,
            PendingSettled::Abandoned(slot) => Some(slot),
        };
        pending_key::drop(c, name)?;
        if let Some(slot) = slot {
            eprintln!(
                "keyward-helper: {name}: pending FileVault recovery key (slot {slot}) given up; it stays in force, not escrowed, until the next rotation"
            );
        }
        Ok(None)
    }

    /// A stored key with no pending record is a committed (or given-up) key that a crash left
    /// on disk between the registry's save and the key's deletion: it is deleted. Part of
    /// settling the service standing, at start-up and before every operation.
    pub(super) fn drop_unpending(&mut self) -> Result<(), OpError> {
        let (c, name) = (self.c, &self.v.name);
        let stored = pending_key::load(c, name)?.is_some();
        if stored && self.s.pending_recovery()?.is_none() {
            pending_key::drop(c, name)?;
            eprintln!(
                "keyward-helper: {name}: deleted a stored recovery key that is no longer pending"
            );
        }
        Ok(())
    }

    /// A new key from `fdesetup changerecovery`, sealed straight after.
    pub(super) fn new_pending(&mut self) -> Result<(SlotId, Secret), OpError> {
        let (c, name) = (self.c, &self.v.name);
        let seal = |key: &Secret| {
            pending_key::seal(c, name, key)?;
            failpoint("recovery-begin.sealed");
            Ok::<_, OpError>(())
        };
        let p = self.s.rotate_recovery_kept(seal)?;
        Ok((p.slot, p.key))
    }
}
