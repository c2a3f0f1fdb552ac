//! Detecting a password reset that left FileVault on the old password.
//!
//! A password *changed* with the old one (System Settings, `passwd`, `sysadminctl -newPassword
//! … -oldPassword …`) re-wraps the user's FileVault key, so the pre-boot unlock takes the new
//! password. A *reset* without it (`dscl . -passwd` as root, a reset authorised by an
//! administrator who holds no Secure Token, a reset from Recovery) changes only the login
//! password: the Mac then logs the user in with the new password and FileVault still asks for
//! the old one at the next start-up. Nothing on the Mac records which of the two happened, and
//! no command without the password can tell; the password itself is the only test. So the
//! question is asked when the password is at hand and macOS has just accepted it — at a login
//! capture: does it unlock this user's Secure Token?
//!
//! [`judge`] is the decision, pure, over what the two commands printed
//! (`sysadminctl -secureTokenStatus USER`, then, for a token holder only, `diskutil apfs
//! unlockVolume VOLUME -verify -user UUID -stdinpassphrase` with the login password on stdin);
//! [`FileVaultStore::login_password_sync`] runs them. Tested against the transcribed outputs in
//! `fixtures/` (never recorded on a Mac) and the simulated Mac's model of a reset.

use std::fmt;

use keyward_core::Secret;

use crate::build::{diskutil, sysadminctl};
use crate::error::MacError;
use crate::keychain::Keychain;
use crate::names::ShortName;
use crate::parse;
use crate::registry::Journal;
use crate::runner::{Output, Runner};
use crate::store::FileVaultStore;

/// The finding's name, for `keyward verify`'s findings (as `weak-kdf` is LUKS2's).
pub const FINDING: &str = "filevault-old-password";

/// Whether a password macOS accepted at login is also the one FileVault unlocks with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasswordSync {
    /// It unlocks the user's Secure Token: login and FileVault are in step.
    InStep,
    /// The user holds a Secure Token and the login password does not unlock it: the password
    /// was reset, not changed, and FileVault still takes the previous one.
    FileVaultOnOldPassword,
    /// The user holds no Secure Token: FileVault has no password of theirs to be behind.
    NoSecureToken,
}

impl fmt::Display for PasswordSync {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PasswordSync::InStep => "the login password unlocks FileVault",
            PasswordSync::FileVaultOnOldPassword => {
                "the login password does not unlock this user's Secure Token: it was reset without the old one, and FileVault still asks for the previous password at start-up (change it with the old password, or have a Secure Token holder reset it with sysadminctl -resetPasswordFor)"
            }
            PasswordSync::NoSecureToken => "no Secure Token, so FileVault holds no password of this user's",
        })
    }
}

/// The decision. `token_status` is what `-secureTokenStatus` printed; `verify` what
/// `diskutil … -verify` printed for the login password, which a token holder needs (without
/// it, or with output keyward does not recognise, this is an error, never a guess) and a
/// non-holder does not (it is then ignored: nothing to be out of step with).
pub fn judge(token_status: &Output, verify: Option<&Output>) -> Result<PasswordSync, MacError> {
    if !parse::sysadminctl::token_status(token_status)?.enabled {
        return Ok(PasswordSync::NoSecureToken);
    }
    let verify = verify.ok_or(MacError::Unsupported(
        "judging a token holder's password without diskutil -verify",
    ))?;
    Ok(if parse::diskutil::verify(verify)? {
        PasswordSync::InStep
    } else {
        PasswordSync::FileVaultOnOldPassword
    })
}

impl<R: Runner, J: Journal, K: Keychain> FileVaultStore<R, J, K> {
    /// Does `password`, which macOS just accepted for `name` at a login, unlock that user's
    /// Secure Token? Runs `-secureTokenStatus`, and for a holder `dscl -read` (its crypto
    /// user's UUID) and `diskutil -verify` (the password on stdin); changes nothing.
    pub fn login_password_sync(
        &mut self,
        name: &ShortName,
        password: &Secret,
    ) -> Result<PasswordSync, MacError> {
        let status = self.exec(&sysadminctl::token_status(name))?;
        if !parse::sysadminctl::token_status(&status)?.enabled {
            return judge(&status, None);
        }
        let uuid = self
            .read_account(name)?
            .ok_or_else(|| MacError::NoSuchAccount(name.to_string()))?
            .generated_uid
            .ok_or_else(|| MacError::NoSuchAccount(format!("{name} (no GeneratedUID)")))?;
        let verify = self.exec(&diskutil::verify_unlock(
            &self.config().volume,
            &uuid,
            password,
        ))?;
        judge(&status, Some(&verify))
    }
}
