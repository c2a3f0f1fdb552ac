//! [`FileVaultStore`]: keyward's [`UnlockStore`] on a Mac. It owns reading the Mac (through a
//! [`Runner`]), keyward's registry (through a [`Journal`]) and the service password (through
//! a [`Keychain`]); the steps of each operation live in `rights`, `recovery`, `service` and
//! `reconcile`. It decides nothing about policy (who should hold a token): callers do.

use std::path::Path;
use std::time::SystemTime;

use keyward_core::invariants::check_transition;
use keyward_core::store::{Authority, GrantRequest, ReconcileAction, UnlockStore};
use keyward_core::token::EscrowRef;
use keyward_core::{Role, Secret, SlotId, StoreError, Uid, VolumeState};

use crate::build::{diskutil, dscl, fdesetup, sysadminctl};
use crate::command::Invocation;
use crate::error::MacError;
use crate::inventory::{build_view, Account, Inventory, View};
use crate::keychain::{Keychain, KeychainItem};
use crate::names::{GeneratedUid, ShortName, VolumeOperand};
use crate::parse;
use crate::registry::{Journal, Registry};
use crate::runner::{Output, Runner};

/// Where keyward's Mac-side pieces are.
#[derive(Debug, Clone)]
pub struct MacConfig {
    /// The hidden service account (`_keyward`).
    pub service_user: ShortName,
    /// The volume `diskutil -verify` tests (`/`).
    pub volume: VolumeOperand,
}

impl MacConfig {
    /// The defaults: `_keyward` on `/`.
    pub fn new(service_user: ShortName) -> Self {
        MacConfig {
            service_user,
            volume: VolumeOperand::default(),
        }
    }

    /// The service account `account` and the volume `device` (a mount point or `diskNsM`) as a
    /// keyward config names them, each checked as an operand.
    pub fn parse(account: &str, device: &Path) -> Result<Self, MacError> {
        let service_user = ShortName::parse(account)?;
        let volume = device
            .to_str()
            .ok_or_else(|| MacError::BadName(device.display().to_string()))
            .and_then(VolumeOperand::parse)?;
        Ok(MacConfig {
            service_user,
            volume,
        })
    }
}

/// The FileVault volume of one Mac.
#[derive(Debug)]
pub struct FileVaultStore<R, J, K> {
    pub(crate) runner: R,
    pub(crate) journal: J,
    pub(crate) keychain: K,
    pub(crate) config: MacConfig,
    pub(crate) clock: fn() -> SystemTime,
    pub(crate) holder_account: Option<ShortName>,
}

impl<R: Runner, J: Journal, K: Keychain> FileVaultStore<R, J, K> {
    /// A store over these seams.
    pub fn new(runner: R, journal: J, keychain: K, config: MacConfig) -> Self {
        FileVaultStore {
            runner,
            journal,
            keychain,
            config,
            clock: SystemTime::now,
            holder_account: None,
        }
    }

    /// Use another clock (tests).
    pub fn with_clock(mut self, clock: fn() -> SystemTime) -> Self {
        self.clock = clock;
        self
    }

    /// Name the token holder whose password an [`Authority::Holder`] carries: a Secure Token
    /// grant needs the administrator's *name* as well (`-adminUser`), and keyward never tries
    /// a password against several accounts in turn (that would count as failed logins).
    pub fn set_holder_account(&mut self, name: Option<ShortName>) {
        self.holder_account = name;
    }

    /// The runner (tests inspect the simulated Mac).
    pub fn runner(&self) -> &R {
        &self.runner
    }

    /// The runner, mutably.
    pub fn runner_mut(&mut self) -> &mut R {
        &mut self.runner
    }

    /// The journal.
    pub fn journal_mut(&mut self) -> &mut J {
        &mut self.journal
    }

    /// The keychain.
    pub fn keychain_mut(&mut self) -> &mut K {
        &mut self.keychain
    }

    /// The configuration.
    pub fn config(&self) -> &MacConfig {
        &self.config
    }

    pub(crate) fn exec(&mut self, inv: &Invocation) -> Result<Output, MacError> {
        Ok(self.runner.run(inv)?)
    }

    /// `-secureTokenStatus` of one account.
    pub fn token_status(&mut self, name: &ShortName) -> Result<bool, MacError> {
        let out = self.exec(&sysadminctl::token_status(name))?;
        Ok(parse::sysadminctl::token_status(&out)?.enabled)
    }

    /// `fdesetup status`.
    pub fn filevault_state(&mut self) -> Result<parse::fdesetup::FileVaultState, MacError> {
        let out = self.exec(&fdesetup::status())?;
        parse::fdesetup::status(&out)
    }

    /// `dscl . -read` of one account (`None`: no such account).
    pub fn read_account(
        &mut self,
        name: &ShortName,
    ) -> Result<Option<parse::dscl::AccountRecord>, MacError> {
        let out = self.exec(&dscl::read_account(name))?;
        parse::dscl::read_account(&out)
    }

    /// The uid (`UniqueID`) of a local account, as keyward's [`Uid`]; `None` for no such
    /// account, or one whose id is not a uid keyward can hold (none, or negative).
    pub fn local_uid(&mut self, name: &ShortName) -> Result<Option<Uid>, MacError> {
        Ok(self
            .read_account(name)?
            .and_then(|a| a.unique_id)
            .and_then(|u| u32::try_from(u.get()).ok())
            .and_then(|u| Uid::new(u).ok()))
    }

    /// Read the Mac: candidate accounts, their token status, crypto UUIDs, the recovery key.
    pub fn inventory(&mut self, reg: &Registry) -> Result<Inventory, MacError> {
        let out = self.exec(&dscl::list_unique_ids())?;
        let ids = parse::dscl::list_unique_ids(&out)?;
        let out = self.exec(&dscl::list_generated_uids())?;
        let guids = parse::dscl::list_generated_uids(&out)?;
        let out = self.exec(&fdesetup::list())?;
        let fv_users = parse::fdesetup::list(&out)?;
        let named = |n: &ShortName| {
            *n == self.config.service_user
                || reg
                    .entries
                    .iter()
                    .any(|e| e.account.as_ref().is_some_and(|a| &a.name == n))
        };
        let candidates: Vec<_> = ids
            .into_iter()
            .filter(|(n, uid)| uid.get() >= 500 || named(n))
            .collect();
        let mut accounts = Vec::with_capacity(candidates.len());
        for (name, uid) in candidates {
            let token = self.token_status(&name)?;
            let generated_uid = guids
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, g)| g.clone());
            let crypto_uuid = fv_users
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, g)| g.clone());
            accounts.push(Account {
                name,
                uid,
                generated_uid,
                token,
                crypto_uuid,
            });
        }
        let out = self.exec(&fdesetup::has_personal_recovery_key())?;
        let recovery_key = parse::fdesetup::has_personal_recovery_key(&out)?;
        Ok(Inventory {
            accounts,
            recovery_key,
        })
    }

    /// The registry and the Mac in keyward's model.
    pub fn view(&mut self) -> Result<(Registry, View), MacError> {
        let reg = self.journal.load()?;
        let inv = self.inventory(&reg)?;
        let view = build_view(&inv, &reg)?;
        Ok((reg, view))
    }

    /// Does `password` unlock the volume for this crypto user? (`diskutil -verify`)
    pub fn unlocks(&mut self, user: &GeneratedUid, password: &Secret) -> Result<bool, MacError> {
        let inv = diskutil::verify_unlock(&self.config.volume, user, password);
        let out = self.exec(&inv)?;
        parse::diskutil::verify(&out)
    }

    /// The service password in force.
    pub(crate) fn service_password(&mut self) -> Result<Secret, MacError> {
        self.keychain
            .read(KeychainItem::ServiceCurrent)?
            .ok_or(MacError::NoServicePassword)
    }

    /// Re-read and check I1–I3 against the state before the operation.
    pub(crate) fn check_after(&mut self, before: &VolumeState) -> Result<View, MacError> {
        let (_, after) = self.view()?;
        let violations = check_transition(before, &after.state);
        if violations.is_empty() {
            Ok(after)
        } else {
            let text: Vec<String> = violations.iter().map(ToString::to_string).collect();
            Err(MacError::InvariantViolated(text.join("; ")))
        }
    }

    pub(crate) fn now(&self) -> SystemTime {
        (self.clock)()
    }

    /// Mark a pending recovery key committed, recording where it is escrowed.
    pub fn commit_recovery(
        &mut self,
        slot: SlotId,
        escrow: Option<EscrowRef>,
    ) -> Result<(), MacError> {
        self.reconcile_now()?;
        let (mut reg, view) = self.view()?;
        let entry = reg
            .entries
            .iter_mut()
            .find(|e| e.token.keyslot == Some(slot) && e.token.role == Role::Recovery)
            .ok_or_else(|| match view.target(slot) {
                Some(_) => MacError::Refused(keyward_core::Refusal::Unmanaged(slot)),
                None => MacError::NoSuchSlot(slot),
            })?;
        if entry.token.state != keyward_core::TokenState::Pending {
            return Err(keyward_core::Refusal::NotPending(slot).into());
        }
        entry.token.state = keyward_core::TokenState::Active;
        if escrow.is_some() {
            entry.token.escrow = escrow;
        }
        self.journal.save(&reg)?;
        self.check_after(&view.state).map(drop)
    }

    /// Does `secret` open `slot`: an account's password (diskutil) or the recovery key
    /// (`fdesetup validaterecovery`).
    pub fn verify_slot(&mut self, slot: SlotId, secret: &Secret) -> Result<bool, MacError> {
        let (_, view) = self.view()?;
        self.verify_in(&view, slot, secret)
    }

    /// [`Self::verify_slot`] against a view the caller has just read (one inventory, not two).
    pub fn verify_in(
        &mut self,
        view: &View,
        slot: SlotId,
        secret: &Secret,
    ) -> Result<bool, MacError> {
        match view.target(slot) {
            None => Err(MacError::NoSuchSlot(slot)),
            Some(crate::inventory::Target::RecoveryKey) => {
                let out = self.exec(&fdesetup::validate_recovery(secret)?)?;
                parse::fdesetup::validate_recovery(&out)
            }
            Some(crate::inventory::Target::Account(a)) => match a.crypto_uuid.clone() {
                Some(uuid) => self.unlocks(&uuid, secret),
                // Not a FileVault user: nothing unlocks the volume for it.
                None => Ok(false),
            },
        }
    }
}

impl<R: Runner, J: Journal, K: Keychain> UnlockStore for FileVaultStore<R, J, K> {
    fn state(&mut self) -> Result<VolumeState, StoreError> {
        Ok(self.view()?.1.state)
    }

    fn grant(
        &mut self,
        req: &GrantRequest,
        authority: Authority<'_>,
        secret: &Secret,
    ) -> Result<SlotId, StoreError> {
        Ok(self.grant_right(req, authority, secret)?)
    }

    fn rekey(
        &mut self,
        slot: SlotId,
        authority: Authority<'_>,
        secret: &Secret,
    ) -> Result<SlotId, StoreError> {
        Ok(self.change_password(slot, authority, secret)?)
    }

    fn revoke(&mut self, slot: SlotId) -> Result<(), StoreError> {
        Ok(self.revoke_right(slot, None)?)
    }

    fn commit(&mut self, slot: SlotId, escrow: Option<EscrowRef>) -> Result<(), StoreError> {
        Ok(self.commit_recovery(slot, escrow)?)
    }

    fn verify(&mut self, slot: SlotId, secret: &Secret) -> Result<bool, StoreError> {
        Ok(self.verify_slot(slot, secret)?)
    }

    fn reconcile(&mut self) -> Result<Vec<ReconcileAction>, StoreError> {
        Ok(self.reconcile_now()?)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;

    use super::*;

    #[test]
    fn a_config_names_an_account_and_a_volume_macos_takes_as_operands() {
        let c = MacConfig::parse("_keyward", Path::new("/System/Volumes/Data")).unwrap();
        assert_eq!(c.service_user.as_str(), "_keyward");
        assert_eq!(c.volume.as_str(), "/System/Volumes/Data");
        assert_eq!(
            MacConfig::parse("_kw", Path::new("disk3s5"))
                .unwrap()
                .volume
                .as_str(),
            "disk3s5"
        );
        let refused = |account: &str, device: &Path| {
            MacConfig::parse(account, device).unwrap_err().to_string()
        };
        assert_eq!(refused("-x", Path::new("/")), "invalid name or id \"-x\"");
        assert_eq!(
            refused("_kw", Path::new("-verify")),
            "invalid name or id \"-verify\""
        );
        let not_utf8 = Path::new(OsStr::from_bytes(b"/Volumes/\xff"));
        assert_eq!(
            refused("_kw", not_utf8),
            "invalid name or id /Volumes/\u{fffd}"
        );
    }
}
