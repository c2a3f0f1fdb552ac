//! Rotating FileVault's personal recovery key, escrow before commit.
//!
//! `fdesetup changerecovery -personal` retires the old key the moment it makes the new one,
//! so "the old key stays valid until the escrow receipt" (LUKS2) cannot hold on a Mac. What
//! keyward keeps instead:
//!
//! 1. intent in the registry (`adding`), then `changerecovery` authenticated with the service
//!    password in an `-inputplist`, the new key read from the `-outputplist`;
//! 2. `fdesetup validaterecovery` with the new key must say `true` **before** keyward forgets
//!    the old key's record (and its escrow id); if it does not, nothing is forgotten;
//! 3. the new key is recorded `pending` and handed to the caller (the helper seals it in
//!    `pending/` and the agent escrows it); only a receipt commits it (`commit_recovery`).
//!
//! Every account holder keeps working throughout, so I1 holds as long as one committed
//! account holder (the service account) exists, which the rotation requires.
//!
//! A pending key that cannot be escrowed any more is *abandoned*: recorded in force and not
//! escrowed, since FileVault cannot go back. That is its fate when the caller's copy is lost (a
//! crash between `changerecovery` and the seal), when the seal itself fails
//! ([`FileVaultStore::rotate_recovery_kept`]), when the copy is older than the caller's limit or
//! no longer the key ([`FileVaultStore::settle_pending_recovery`]), and on an abort
//! ([`FileVaultStore::abandon_pending`]). The caller's copy itself (the helper's sealed file)
//! is the caller's; these take it, or the sealing, as inputs.

use std::time::{Duration, SystemTime};

use keyward_core::token::GrantedBy;
use keyward_core::token::KeywardToken;
use keyward_core::{Refusal, Role, Secret, SlotId, TokenState};

use crate::build::fdesetup;
use crate::error::MacError;
use crate::inventory::Target;
use crate::keychain::Keychain;
use crate::parse;
use crate::parse::fdesetup::FileVaultState;
use crate::registry::Journal;
use crate::runner::Runner;
use crate::store::FileVaultStore;

/// A new recovery key, pending until its escrow receipt.
#[derive(Debug)]
pub struct PendingRecovery {
    /// Its slot.
    pub slot: SlotId,
    /// The key, in FileVault's `XXXX-XXXX-XXXX-XXXX-XXXX-XXXX` form.
    pub key: Secret,
}

/// What settling a pending key against the caller's copy found.
#[derive(Debug)]
pub enum PendingSettled {
    /// No key is pending.
    NonePending,
    /// The key is pending and the caller's copy is still the key in force.
    Kept(PendingRecovery),
    /// The pending key in this slot was given up: in force, not escrowed.
    Abandoned(SlotId),
}

impl<R: Runner, J: Journal, K: Keychain> FileVaultStore<R, J, K> {
    /// The pending recovery key's slot and when it was made, from keyward's registry.
    pub fn pending_recovery(&mut self) -> Result<Option<(SlotId, SystemTime)>, MacError> {
        let reg = self.journal.load()?;
        Ok(reg
            .entries
            .iter()
            .filter(|e| e.token.role == Role::Recovery && e.token.state == TokenState::Pending)
            .find_map(|e| e.token.keyslot.map(|slot| (slot, e.token.created))))
    }

    /// Settle the pending key, if any, against the caller's copy `key`: kept while the copy is
    /// there, no older than `max_age` and still the key FileVault takes; abandoned otherwise.
    /// No reconcile here: the operations around it run one, and an interrupted intent is never
    /// `pending`.
    pub fn settle_pending_recovery(
        &mut self,
        key: Option<Secret>,
        max_age: Duration,
    ) -> Result<PendingSettled, MacError> {
        let Some((slot, created)) = self.pending_recovery()? else {
            return Ok(PendingSettled::NonePending);
        };
        let expired = self
            .now()
            .duration_since(created)
            .is_ok_and(|age| age > max_age);
        match key {
            Some(key) if !expired && self.verify_slot(slot, &key)? => {
                Ok(PendingSettled::Kept(PendingRecovery { slot, key }))
            }
            _ => {
                self.abandon_pending_recovery(slot)?;
                Ok(PendingSettled::Abandoned(slot))
            }
        }
    }

    /// [`Self::rotate_recovery`], then `keep` the new key (the helper seals it) straight
    /// after. If keeping fails, the key is in force and known to nobody: it is abandoned, and
    /// `keep`'s error returned. A backend error is said as the caller's (`E: From<MacError>`).
    pub fn rotate_recovery_kept<E: From<MacError>>(
        &mut self,
        keep: impl FnOnce(&Secret) -> Result<(), E>,
    ) -> Result<PendingRecovery, E> {
        let p = self.rotate_recovery()?;
        if let Err(e) = keep(&p.key) {
            self.abandon_pending_recovery(p.slot)?;
            return Err(e);
        }
        Ok(p)
    }

    /// Give up on the pending key, if there is one (an abort): its slot.
    pub fn abandon_pending(&mut self) -> Result<Option<SlotId>, MacError> {
        let pending = self.pending_recovery()?;
        if let Some((slot, _)) = pending {
            self.abandon_pending_recovery(slot)?;
        }
        Ok(pending.map(|(slot, _)| slot))
    }

    /// Make a new personal recovery key (see the module doc for the ordering).
    pub fn rotate_recovery(&mut self) -> Result<PendingRecovery, MacError> {
        self.reconcile_now()?;
        match self.filevault_state()? {
            FileVaultState::On => {}
            other => return Err(MacError::FileVaultNotOn(format!("{other:?}"))),
        }
        let (mut reg, before) = self.view()?;
        if let Some(e) = reg
            .entries
            .iter()
            .find(|e| e.token.role == Role::Recovery && e.token.state == TokenState::Pending)
        {
            // The helper holds the pending key in `pending/`; a second begin returns that.
            return Err(
                Refusal::InTransition(e.token.keyslot.unwrap_or(before.pick_slot()?)).into(),
            );
        }
        let accounts_remain = keyward_core::invariants::committed_paths(&before.state)
            .iter()
            .any(|s| matches!(before.target(*s), Some(Target::Account(_))));
        if !accounts_remain {
            let slot = before.pick_slot()?;
            return Err(Refusal::WouldLockOut(slot).into());
        }
        let authority = self.service_password()?;
        let inv = fdesetup::change_recovery(&authority)?;
        let next = before.pick_slot()?;
        let mut token = KeywardToken::new(Role::Recovery, self.now(), GrantedBy::Service);
        token.state = TokenState::Adding { next };
        let tid = reg.add(token.clone(), None)?;
        self.journal.save(&reg)?;
        let key = match self
            .exec(&inv)
            .and_then(|out| parse::fdesetup::change_recovery(&out))
        {
            Ok(key) => key,
            Err(e) => {
                reg.remove(tid);
                self.journal.save(&reg)?;
                return Err(e);
            }
        };
        let valid = self
            .exec(&fdesetup::validate_recovery(&key)?)
            .and_then(|out| parse::fdesetup::validate_recovery(&out));
        if !matches!(valid, Ok(true)) {
            reg.remove(tid);
            self.journal.save(&reg)?;
            return Err(valid.err().unwrap_or(MacError::RecoveryKeyNotValidated));
        }
        // Validated: now, and only now, forget the old key's record.
        reg.entries
            .retain(|e| e.id == tid || e.token.role != Role::Recovery);
        token.keyslot = Some(next);
        token.state = TokenState::Pending;
        if let Some(e) = reg.get_mut(tid) {
            e.token = token;
        }
        self.journal.save(&reg)?;
        Ok(PendingRecovery { slot: next, key })
    }

    /// Give up on a pending key's escrow. FileVault cannot go back to the old key, so the key
    /// stays in force, recorded as active and *not escrowed* (status says so), for the next
    /// scheduled rotation to replace.
    pub fn abandon_pending_recovery(&mut self, slot: SlotId) -> Result<(), MacError> {
        let mut reg = self.journal.load()?;
        let entry = reg
            .entries
            .iter_mut()
            .find(|e| e.token.role == Role::Recovery && e.token.keyslot == Some(slot))
            .ok_or(MacError::NoSuchSlot(slot))?;
        if entry.token.state != TokenState::Pending {
            return Err(Refusal::NotPending(slot).into());
        }
        entry.token.state = TokenState::Active;
        entry.token.escrow = None;
        self.journal.save(&reg)
    }
}
