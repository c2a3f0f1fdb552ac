//! The hidden service account's life: create it, give it a Secure Token from a holder's
//! password (used once, never stored), rotate its password by a change with the old one, and
//! delete it only while another way in remains. Its password lives only in the System keychain;
//! a new one is written there (as `next`) *before* the account gets it, so a crash never leaves
//! a password nobody knows, and [`FileVaultStore::settle_service_password`] finds out afterwards
//! which one the account has.
//!
//! Creation order matters: `IsHidden 1`, a uid below 500, admin membership (sysadminctl wants an
//! administrator as `-adminUser`) and `;DisabledTags;SecureToken` are all set **before** the
//! first password, so the account cannot become a volume's first token holder by accident.

use keyward_core::store::Authority;
use keyward_core::{Role, Secret, SlotId};

use crate::build::dscl::ServiceAttr;
use crate::build::{dscl, sysadminctl};
use crate::command::Purpose;
use crate::error::MacError;
use crate::inventory::{Target, View};
use crate::keychain::{Keychain, KeychainItem};
use crate::names::{ServiceUid, ShortName};
use crate::parse;
use crate::registry::Journal;
use crate::runner::Runner;
use crate::store::FileVaultStore;

/// 256 random bits as 64 lowercase hex characters: a service password that passes every
/// stdin form unchanged.
pub fn generate_service_password() -> Result<Secret, MacError> {
    let mut raw = zeroize::Zeroizing::new([0u8; 32]);
    getrandom::fill(&mut raw[..]).map_err(|e| MacError::Keychain(format!("getrandom: {e}")))?;
    let mut hex = zeroize::Zeroizing::new(Vec::with_capacity(64));
    keyward_core::hex::encode_into(&raw[..], &mut hex);
    Ok(Secret::copy_from(&hex))
}

/// What [`FileVaultStore::settle_service_password`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ServicePassword {
    /// No rotation was pending.
    Current,
    /// The account has the new password: it is now the current one.
    Promoted,
    /// The account kept the old password: the new one was dropped.
    Dropped,
}

/// Where the service account stands once what a crash interrupted is finished
/// ([`FileVaultStore::service_standing`]): `Missing` (no Secure Token), `Drift` (a token the
/// keychain's password does not unlock, or no password for it), `Working` (a token and the
/// password that unlocks it). keyward-core's one type for every kind of volume.
pub use keyward_core::store::ServiceStanding;

impl<R: Runner, J: Journal, K: Keychain> FileVaultStore<R, J, K> {
    /// Finish whatever a crash interrupted (reconcile the registry, settle a half-done password
    /// rotation), then say where the service account stands: its token's slot, and whether the
    /// keychain's password unlocks it (`diskutil -verify`).
    pub fn service_standing(&mut self) -> Result<ServiceStanding, MacError> {
        self.reconcile_now()?;
        match self.settle_service_password() {
            // No password to settle against (none current, and `next` does not unlock the
            // token): the standing below says so.
            Ok(_) | Err(MacError::NoServicePassword) => {}
            Err(e) => return Err(e),
        }
        let service = self.config.service_user.clone();
        let (_, view) = self.view()?;
        let Some(slot) = view.slot_of(&service) else {
            return Ok(ServiceStanding::Missing);
        };
        let Some(password) = self.keychain.read(KeychainItem::ServiceCurrent)? else {
            return Ok(ServiceStanding::Drift(slot));
        };
        Ok(if self.verify_in(&view, slot, &password)? {
            ServiceStanding::Working(slot, password)
        } else {
            ServiceStanding::Drift(slot)
        })
    }

    fn write(&mut self, inv: &crate::command::Invocation) -> Result<(), MacError> {
        let out = self.exec(inv)?;
        parse::dscl::write(&out).map(drop)
    }

    /// Create the hidden service account (no token yet) with `password`. Idempotent: an
    /// existing account that is hidden, below uid 500 and keyward's is left as it is. The
    /// password goes to the keychain (as `next`) before the account is made, so an account
    /// that a crash left half-made (no token, an attribute, its admin membership or its
    /// password missing) is known as keyward's by that password and finished, not refused as
    /// someone else's or taken as it is.
    pub fn create_service_account(&mut self, password: &Secret) -> Result<ServiceUid, MacError> {
        let name = self.config.service_user.clone();
        let mut uid = None;
        if let Some(rec) = self.read_account(&name)? {
            let existing = rec.unique_id.and_then(|u| u32::try_from(u.get()).ok());
            // Every step again (each is idempotent): which one the crash cut short is unknown.
            match existing.map(ServiceUid::new) {
                known if self.interrupted_creation(&name)? => uid = known.and_then(Result::ok),
                Some(Ok(uid)) if rec.hidden => return Ok(uid),
                _ => return Err(MacError::AccountConflict(name.to_string())),
            }
        }
        self.keychain.write(KeychainItem::ServiceNext, password)?;
        let uid = match uid {
            Some(uid) => uid,
            None => {
                let out = self.exec(&dscl::list_unique_ids())?;
                let used: Vec<_> = parse::dscl::list_unique_ids(&out)?
                    .into_iter()
                    .map(|(_, u)| u)
                    .collect();
                ServiceUid::pick_free(used.iter().copied()).ok_or(MacError::NoFreeServiceUid)?
            }
        };
        let out = self.exec(&dscl::read_group(&name))?;
        if parse::dscl::read_account(&out)?.is_none() {
            for inv in dscl::create_group(&name, uid) {
                self.write(&inv)?;
            }
        }
        self.write(&dscl::create_account(&name))?;
        for attr in [
            ServiceAttr::UniqueId(uid),
            ServiceAttr::PrimaryGroupId(uid),
            ServiceAttr::NoShell,
            ServiceAttr::NoHome,
            ServiceAttr::RealName,
            ServiceAttr::Hidden,
            ServiceAttr::TokenDisabledTag,
        ] {
            self.write(&dscl::set_attr(&name, attr))?;
        }
        self.write(&dscl::add_to_admin_group(&name))?;
        let out = self.exec(&dscl::set_initial_password(&name, password)?)?;
        let _claim = parse::dscl::passwd(Purpose::SetInitialPassword, &out)?;
        self.keychain
            .write(KeychainItem::ServiceCurrent, password)?;
        self.keychain.delete(KeychainItem::ServiceNext)?;
        let rec = self
            .read_account(&name)?
            .ok_or_else(|| MacError::PhantomSuccess {
                purpose: Purpose::DirectoryWrite,
                detail: format!("{name} does not exist after creation"),
            })?;
        if !rec.hidden
            || !rec.token_disabled_tag()
            || rec.unique_id.map(|u| u.get()) != Some(i64::from(uid.get()))
        {
            return Err(MacError::PhantomSuccess {
                purpose: Purpose::DirectoryWrite,
                detail: format!("{name} lacks IsHidden, its uid or its token tag"),
            });
        }
        Ok(uid)
    }

    /// An account named like the service account, holding no token, while keyward's keychain
    /// holds a service password: the account a crashed creation left behind.
    fn interrupted_creation(&mut self, name: &ShortName) -> Result<bool, MacError> {
        let stored = self.keychain.read(KeychainItem::ServiceNext)?.is_some()
            || self.keychain.read(KeychainItem::ServiceCurrent)?.is_some();
        Ok(stored && !self.token_status(name)?)
    }

    /// Give the service account a Secure Token, authorised by `holder` with `holder_password`
    /// (captured from the admin for this call only). Returns the service slot.
    pub fn grant_service_token(
        &mut self,
        holder: &ShortName,
        holder_password: &Secret,
    ) -> Result<SlotId, MacError> {
        let name = self.config.service_user.clone();
        let password = self.service_password()?;
        self.grant_token(
            &name,
            Role::Service,
            Authority::Holder(holder_password),
            &password,
            holder,
            holder_password,
        )
    }

    /// Bootstrap: create the service account (if needed) and give it a Secure Token authorised
    /// by `holder` with `holder_password`. A service password already in the keychain (made by
    /// an interrupted bootstrap: the account may already have it) is kept; otherwise a new one
    /// is generated.
    pub fn bootstrap_service(
        &mut self,
        holder: &ShortName,
        holder_password: &Secret,
    ) -> Result<SlotId, MacError> {
        let password = match self.keychain.read(KeychainItem::ServiceCurrent)? {
            Some(p) => p,
            None => generate_service_password()?,
        };
        self.create_service_account(&password)?;
        self.grant_service_token(holder, holder_password)
    }

    /// Rotate the service password to `new` by a change with the old one.
    pub fn rotate_service_password(&mut self, new: &Secret) -> Result<SlotId, MacError> {
        self.settle_service_password()?;
        let old = self.service_password()?;
        let (_, view) = self.view()?;
        let slot = view.slot_of(&self.config.service_user).ok_or_else(|| {
            MacError::NoSuchAccount(format!("{} with a Secure Token", self.config.service_user))
        })?;
        self.keychain.write(KeychainItem::ServiceNext, new)?;
        match self.change_password(slot, Authority::Service(&old), new) {
            Ok(new_slot) => {
                self.keychain.write(KeychainItem::ServiceCurrent, new)?;
                self.keychain.delete(KeychainItem::ServiceNext)?;
                Ok(new_slot)
            }
            Err(
                e @ (MacError::AuthenticationFailed(_)
                | MacError::TornPasswordChange { reverted: true, .. }),
            ) => {
                // Nothing changed (or it was put back): the old password stays in force.
                self.keychain.delete(KeychainItem::ServiceNext)?;
                Err(e)
            }
            // Unknown outcome: keep `next`, settle_service_password decides later.
            Err(e) => Err(e),
        }
    }

    /// After a crash or a failed rotation: which password does the account have? Promotes
    /// `next` if it unlocks FileVault (or, for an account without a token yet, sets it),
    /// drops it if the current one does.
    pub fn settle_service_password(&mut self) -> Result<ServicePassword, MacError> {
        let Some(next) = self.keychain.read(KeychainItem::ServiceNext)? else {
            return Ok(ServicePassword::Current);
        };
        let name = self.config.service_user.clone();
        if self.read_account(&name)?.is_none() {
            // A creation that crashed before the account was made: the password reached no one.
            self.keychain.delete(KeychainItem::ServiceNext)?;
            return Ok(ServicePassword::Dropped);
        }
        let (_, view) = self.view()?;
        let account = view.slot_of(&name).and_then(|s| match view.target(s) {
            Some(Target::Account(a)) => Some(a.clone()),
            _ => None,
        });
        let promote = match account.and_then(|a| a.crypto_uuid) {
            Some(uuid) => {
                if self.unlocks(&uuid, &next)? {
                    true
                } else if let Some(current) = self.keychain.read(KeychainItem::ServiceCurrent)? {
                    if self.unlocks(&uuid, &current)? {
                        false
                    } else {
                        return Err(MacError::TornPasswordChange {
                            account: name.to_string(),
                            reverted: false,
                        });
                    }
                } else {
                    return Err(MacError::NoServicePassword);
                }
            }
            None if !self.token_status(&name)? => {
                // No token yet (a crash during creation): setting the password breaks nothing.
                let out = self.exec(&dscl::set_initial_password(&name, &next)?)?;
                let _claim = parse::dscl::passwd(Purpose::SetInitialPassword, &out)?;
                true
            }
            None => {
                return Err(MacError::Unsupported(
                    "settling the password of a token holder that is not a FileVault user",
                ))
            }
        };
        if promote {
            self.keychain.write(KeychainItem::ServiceCurrent, &next)?;
            self.keychain.delete(KeychainItem::ServiceNext)?;
            Ok(ServicePassword::Promoted)
        } else {
            self.keychain.delete(KeychainItem::ServiceNext)?;
            Ok(ServicePassword::Dropped)
        }
    }

    /// Delete the service account, only if another committed token holder or an escrowed
    /// recovery key remains. The account authenticates its own deletion.
    pub fn delete_service_account(&mut self) -> Result<(), MacError> {
        self.reconcile_now()?;
        let name = self.config.service_user.clone();
        let (mut reg, view) = self.view()?;
        if !Self::another_way_in(&reg, &view, &name) {
            return Err(MacError::WouldStrand);
        }
        let password = self.service_password()?;
        let out = self.exec(&sysadminctl::delete_user(&name, &name, &password)?)?;
        let _claim = parse::sysadminctl::claimed_change(Purpose::DeleteUser, &out)?;
        if self.read_account(&name)?.is_some() {
            return Err(MacError::PhantomSuccess {
                purpose: Purpose::DeleteUser,
                detail: format!("{name} still exists"),
            });
        }
        let _ = self.write(&dscl::delete_group(&name));
        reg.entries.retain(|e| e.token.role != Role::Service);
        self.journal.save(&reg)?;
        self.keychain.delete(KeychainItem::ServiceCurrent)?;
        self.keychain.delete(KeychainItem::ServiceNext)?;
        Ok(())
    }

    /// Uninstall on a Mac: delete the service account (its token's slot, if it holds one),
    /// refused — a `dry_run` too — unless another committed token holder or an escrowed
    /// recovery key remains. Users keep their own tokens (macOS would need each user's
    /// password). Without a token there is nothing of keyward's to delete.
    pub fn release_service_account(&mut self, dry_run: bool) -> Result<Option<SlotId>, MacError> {
        let name = self.config.service_user.clone();
        let (reg, view) = self.view()?;
        let Some(slot) = view.slot_of(&name) else {
            return Ok(None);
        };
        if !Self::another_way_in(&reg, &view, &name) {
            return Err(MacError::WouldStrand);
        }
        if !dry_run {
            // It reconciles and checks again before it deletes anything.
            self.delete_service_account()?;
        }
        Ok(Some(slot))
    }

    fn another_way_in(reg: &crate::registry::Registry, view: &View, service: &ShortName) -> bool {
        let service_slot = view.slot_of(service);
        keyward_core::invariants::committed_paths(&view.state)
            .into_iter()
            .filter(|s| Some(*s) != service_slot)
            .any(|s| match view.target(s) {
                Some(Target::Account(_)) => true,
                Some(Target::RecoveryKey) => reg.entries.iter().any(|e| {
                    e.token.role == Role::Recovery
                        && e.token.keyslot == Some(s)
                        && e.token.escrow.is_some()
                }),
                None => false,
            })
    }
}
