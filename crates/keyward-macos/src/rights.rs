//! Grant, change and revoke an account's Secure Token — the orderings of DESIGN.md section 5
//! as they must be on a Mac:
//!
//! * **Grant**: intent in the registry → `sysadminctl -secureTokenOn` → *read back*
//!   `-secureTokenStatus` (sysadminctl prints "Done!" also when nothing happened) → commit.
//! * **Rekey** is a password change **with the old password** (`passwd USER OLD NEW` on the
//!   stdin of `dscl -q .`), then proof with `diskutil -verify` that the new password unlocks.
//!   Never a reset: a reset of a token holder changes the login password but leaves FileVault
//!   on the old one. A change that turns out torn (login changed, FileVault not) is reverted.
//! * **Revoke** needs the holder's own password (Apple's rule), so [`UnlockStore::revoke`]
//!   cannot do it for an account; `revoke_right` with the password can.

use keyward_core::store::{Authority, GrantRequest};
use keyward_core::token::KeywardToken;
use keyward_core::{Refusal, Role, Secret, SlotId, TokenId, TokenState};

use crate::build::{dscl, fdesetup, sysadminctl};
use crate::command::Purpose;
use crate::error::MacError;
use crate::inventory::{Target, View};
use crate::keychain::Keychain;
use crate::names::ShortName;
use crate::parse;
use crate::registry::{AccountRef, Journal, Registry};
use crate::runner::Runner;
use crate::store::FileVaultStore;

/// The managed entry owning `slot`, or why there is none.
pub(crate) fn managed_entry(
    reg: &Registry,
    view: &View,
    slot: SlotId,
) -> Result<TokenId, MacError> {
    if view.target(slot).is_none() {
        return Err(MacError::NoSuchSlot(slot));
    }
    match view.state.owner_of(slot) {
        keyward_core::SlotOwner::Managed(id) if reg.get(id).is_some() => Ok(id),
        keyward_core::SlotOwner::Managed(_) | keyward_core::SlotOwner::Unmanaged => {
            Err(Refusal::Unmanaged(slot).into())
        }
        _ => Err(Refusal::InTransition(slot).into()),
    }
}

/// I1: some committed path other than `slot` stays.
pub(crate) fn another_path_remains(view: &View, slot: SlotId) -> bool {
    keyward_core::invariants::committed_paths(&view.state)
        .iter()
        .any(|s| *s != slot)
}

impl<R: Runner, J: Journal, K: Keychain> FileVaultStore<R, J, K> {
    /// The administrator and password an authority stands for.
    fn admin_for(&mut self, authority: Authority<'_>) -> Result<(ShortName, Secret), MacError> {
        match authority {
            Authority::Service(s) => Ok((self.config.service_user.clone(), s.duplicate())),
            Authority::Holder(s) => self
                .holder_account
                .clone()
                .map(|n| (n, s.duplicate()))
                .ok_or(MacError::Unsupported(
                    "a holder's password without the holder's account name (set_holder_account)",
                )),
            _ => Err(MacError::Unsupported("this kind of authority")),
        }
    }

    /// [`UnlockStore::grant`]: a Secure Token for a user, or for the service account.
    pub fn grant_right(
        &mut self,
        req: &GrantRequest,
        authority: Authority<'_>,
        password: &Secret,
    ) -> Result<SlotId, MacError> {
        let name = match &req.role {
            Role::User { name, .. } => ShortName::from(name),
            Role::Service => self.config.service_user.clone(),
            Role::Recovery => {
                return Err(MacError::Unsupported(
                    "FileVault makes its own recovery key: use rotate_recovery",
                ))
            }
            _ => return Err(MacError::Unsupported("this role")),
        };
        if req.pending {
            return Err(MacError::Unsupported("a pending Secure Token"));
        }
        let (admin, admin_password) = self.admin_for(authority)?;
        self.grant_token(
            &name,
            req.role.clone(),
            authority,
            password,
            &admin,
            &admin_password,
        )
    }

    pub(crate) fn grant_token(
        &mut self,
        name: &ShortName,
        role: Role,
        authority: Authority<'_>,
        password: &Secret,
        admin: &ShortName,
        admin_password: &Secret,
    ) -> Result<SlotId, MacError> {
        self.reconcile_now()?;
        let (mut reg, before) = self.view()?;
        if let Some(slot) = before.slot_of(name) {
            return Err(Refusal::AlreadyHolds(slot).into());
        }
        let record = self
            .read_account(name)?
            .ok_or_else(|| MacError::NoSuchAccount(name.to_string()))?;
        let generated_uid = record
            .generated_uid
            .clone()
            .ok_or_else(|| MacError::NoSuchAccount(format!("{name} (no GeneratedUID)")))?;
        let next = before.pick_slot()?;
        let mut token = KeywardToken::new(role, self.now(), authority.granted_by());
        token.state = TokenState::Adding { next };
        let account = AccountRef {
            name: name.clone(),
            generated_uid,
        };
        let tid = reg.add(token.clone(), Some(account))?;
        self.journal.save(&reg)?;
        let lifted = record.token_disabled_tag();
        let granted = self.token_on_verified(name, password, admin, admin_password, lifted);
        if let Err(e) = granted {
            reg.remove(tid);
            self.journal.save(&reg)?;
            return Err(e);
        }
        token.keyslot = Some(next);
        token.state = TokenState::Active;
        if let Some(e) = reg.get_mut(tid) {
            e.token = token;
        }
        self.journal.save(&reg)?;
        self.check_after(&before.state)?;
        Ok(next)
    }

    /// `-secureTokenOn`, then the read-back that proves it. With `lift_tag`, the account's
    /// `;DisabledTags;SecureToken` is removed first and put back if the grant fails.
    fn token_on_verified(
        &mut self,
        name: &ShortName,
        password: &Secret,
        admin: &ShortName,
        admin_password: &Secret,
        lift_tag: bool,
    ) -> Result<(), MacError> {
        let inv = sysadminctl::token_on(name, password, admin, admin_password)?;
        if lift_tag {
            let out = self.exec(&dscl::remove_token_disabled_tag(name))?;
            let _ = parse::dscl::write(&out)?;
        }
        let result = self.exec(&inv).and_then(|out| {
            let _claim = parse::sysadminctl::claimed_change(Purpose::TokenOn, &out)?;
            if self.token_status(name)? {
                Ok(())
            } else {
                Err(MacError::PhantomSuccess {
                    purpose: Purpose::TokenOn,
                    detail: format!("{name} still holds no Secure Token"),
                })
            }
        });
        if result.is_err() && lift_tag {
            // Best effort: the tag only matters while the account holds no token.
            let _ = self.exec(&dscl::restore_token_disabled_tag(name));
        }
        result
    }

    /// [`UnlockStore::rekey`]: change a managed account's password from the old one (the
    /// holder's authority, or the service password for the service account) to `new`.
    pub fn change_password(
        &mut self,
        slot: SlotId,
        authority: Authority<'_>,
        new: &Secret,
    ) -> Result<SlotId, MacError> {
        self.reconcile_now()?;
        let (mut reg, before) = self.view()?;
        let tid = managed_entry(&reg, &before, slot)?;
        let Some(Target::Account(account)) = before.target(slot).cloned() else {
            return Err(MacError::Unsupported(
                "rekeying the recovery key: use rotate_recovery",
            ));
        };
        let old = match (authority, &reg.get(tid).map(|e| e.token.role.clone())) {
            (Authority::Holder(old), _) => old.duplicate(),
            (Authority::Service(s), Some(Role::Service)) => s.duplicate(),
            _ => {
                return Err(MacError::NeedsOwnPassword(format!(
                    "changing {}'s password",
                    account.name
                )))
            }
        };
        let inv = dscl::change_password(&account.name, &old, new)?;
        let next = before.pick_slot()?;
        let current = reg
            .get(tid)
            .map(|e| e.token.clone())
            .ok_or(MacError::NoSuchSlot(slot))?;
        let mut token = current.clone();
        token.state = TokenState::Rekeying { next };
        set_token(&mut reg, tid, token.clone());
        self.journal.save(&reg)?;
        let changed = self
            .exec(&inv)
            .and_then(|out| parse::dscl::passwd(Purpose::ChangePassword, &out).map(drop));
        if let Err(e) = changed {
            set_token(&mut reg, tid, current);
            self.journal.save(&reg)?;
            return Err(e);
        }
        if let Some(uuid) = account.crypto_uuid.clone() {
            if !self.unlocks(&uuid, new)? {
                let err = self.undo_torn_change(&account.name, &uuid, &old, new);
                set_token(&mut reg, tid, current);
                self.journal.save(&reg)?;
                return Err(err);
            }
        }
        if !self.token_status(&account.name)? {
            return Err(MacError::PhantomSuccess {
                purpose: Purpose::ChangePassword,
                detail: format!("{} no longer holds a Secure Token", account.name),
            });
        }
        token.keyslot = Some(next);
        token.state = TokenState::Active;
        set_token(&mut reg, tid, token);
        self.journal.save(&reg)?;
        self.check_after(&before.state)?;
        Ok(next)
    }

    /// The login password changed but FileVault does not take it. If FileVault still takes the
    /// old password, change the login password back so the two agree again.
    fn undo_torn_change(
        &mut self,
        name: &ShortName,
        uuid: &crate::names::GeneratedUid,
        old: &Secret,
        new: &Secret,
    ) -> MacError {
        let reverted = matches!(self.unlocks(uuid, old), Ok(true))
            && dscl::change_password(name, new, old)
                .and_then(|inv| self.exec(&inv))
                .and_then(|out| parse::dscl::passwd(Purpose::ChangePassword, &out).map(drop))
                .is_ok();
        MacError::TornPasswordChange {
            account: name.to_string(),
            reverted,
        }
    }

    /// Remove a managed right. The recovery key is removed with the service password; an
    /// account's token only with that account's own `password` (macOS requires it).
    pub fn revoke_right(
        &mut self,
        slot: SlotId,
        password: Option<&Secret>,
    ) -> Result<(), MacError> {
        self.reconcile_now()?;
        let (mut reg, before) = self.view()?;
        let tid = managed_entry(&reg, &before, slot)?;
        if !another_path_remains(&before, slot) {
            return Err(Refusal::WouldLockOut(slot).into());
        }
        match before.target(slot).cloned() {
            Some(Target::RecoveryKey) => {
                let authority = self.service_password()?;
                let out = self.exec(&fdesetup::remove_recovery(&authority)?)?;
                let _claim = parse::fdesetup::remove_recovery(&out)?;
                let out = self.exec(&fdesetup::has_personal_recovery_key())?;
                if parse::fdesetup::has_personal_recovery_key(&out)? {
                    return Err(MacError::PhantomSuccess {
                        purpose: Purpose::RemoveRecovery,
                        detail: "the personal recovery key is still there".into(),
                    });
                }
            }
            Some(Target::Account(account)) => {
                let password = password.ok_or_else(|| {
                    MacError::NeedsOwnPassword(format!("removing {}'s Secure Token", account.name))
                })?;
                let admin = self.config.service_user.clone();
                let admin_password = self.service_password()?;
                let inv = sysadminctl::token_off(&account.name, password, &admin, &admin_password)?;
                let out = self.exec(&inv)?;
                let _claim = parse::sysadminctl::claimed_change(Purpose::TokenOff, &out)?;
                if self.token_status(&account.name)? {
                    return Err(MacError::PhantomSuccess {
                        purpose: Purpose::TokenOff,
                        detail: format!("{} still holds a Secure Token", account.name),
                    });
                }
            }
            None => return Err(MacError::NoSuchSlot(slot)),
        }
        reg.remove(tid);
        self.journal.save(&reg)?;
        self.check_after(&before.state).map(drop)
    }
}

fn set_token(reg: &mut Registry, tid: TokenId, token: KeywardToken) {
    if let Some(e) = reg.get_mut(tid) {
        e.token = token;
    }
}
