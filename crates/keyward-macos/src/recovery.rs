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

impl<R: Runner, J: Journal, K: Keychain> FileVaultStore<R, J, K> {
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
