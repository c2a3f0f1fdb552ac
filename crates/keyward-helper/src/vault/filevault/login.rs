//! A captured login on a Mac (issue 19): what the user holds, what that makes the login do and
//! whether FileVault is on the password macOS accepted are keyward-macos's
//! (`FileVaultStore::login_action`, `FileVaultStore::note_login_sync`); the helper judges the
//! user's standing (its accounts and policy) and carries the action out.
//!
//! The password is not authenticated here: sysadminctl authenticates it itself for the grant
//! and for the removal, so a wrong one changes nothing and comes back as the operation's error,
//! which the caller records.

use keyward_core::{Secret, UserName};
use keyward_macos::login_capture::Action;
use keyward_macos::names::ShortName;

use super::{out_of_step, MacVault};
use crate::accounts::{self, Standing};
use crate::error::OpError;
use crate::vault::{Vault, VolumeLogin};

impl MacVault<'_, '_, '_> {
    /// `user` logged in on the Mac with `password`; `standing` is theirs now (by name). (A PAM
    /// password change does nothing here: macOS moves a token to a new password itself when the
    /// user changes it, and a Mac's plugin sends only logins.)
    pub(super) fn capture_login(
        &mut self,
        user: &UserName,
        standing: &Standing,
        password: &Secret,
    ) -> Result<VolumeLogin, OpError> {
        let (c, v) = (self.c, self.v);
        let name = ShortName::parse(user.as_str())?;
        let revoke_unmanaged = crate::policy_override::effective(c).revoke_unmanaged;
        let judge = |uid| accounts::standing(c, user, Some(uid)).map_err(OpError::Failed);
        let action = self
            .s
            .login_action(user, &name, standing, judge, revoke_unmanaged)?;
        Ok(match action {
            Action::Grant => {
                let (_, service) = self.working()?;
                let uid = self.grantee(user)?;
                let slot = self.grant_user(user, uid, &service, password)?;
                VolumeLogin::Done(format!("granted a Secure Token (slot {slot})"))
            }
            Action::Holds(why) => {
                // A token holder macOS just let in: is FileVault on the same password?
                let record = out_of_step(c);
                let why = self
                    .s
                    .note_login_sync(&record, v.name.as_str(), &name, password, why);
                VolumeLogin::Done(why?)
            }
            Action::Keep(why) => VolumeLogin::Done(why),
            Action::Revoke { slot, standing } => {
                self.s.revoke_right(slot, Some(password))?;
                VolumeLogin::Done(format!(
                    "{standing}: revoked its Secure Token (slot {slot}) with the login password"
                ))
            }
            Action::NotManaged(why) => VolumeLogin::Refused(why),
        })
    }
}
