//! A captured login on a Mac (issue 19): what the user holds, what that makes the login do and
//! whether FileVault is on the password macOS accepted are keyward-macos's
//! ([`keyward_macos::login_capture`], `FileVaultStore::note_login_sync`); the helper judges the
//! user's standing (its accounts and policy) and carries the action out.
//!
//! The password is not authenticated here: sysadminctl authenticates it itself for the grant
//! and for the removal, so a wrong one changes nothing and comes back as the operation's error,
//! which the caller records.

use keyward_core::config::{Config, Volume};
use keyward_core::store::GrantRequest;
use keyward_core::{Secret, UserName};
use keyward_macos::login_capture::{decide, holding, Action, Holding};
use keyward_macos::names::ShortName;

use super::{mac_failure, out_of_step, with_store, MacVault, Store};
use crate::accounts::{self, Standing};
use crate::error::OpError;
use crate::vault::{Vault, VolumeLogin};

/// `user` logged in on the Mac with `password`; `standing` is theirs now (by name). A PAM
/// password change does nothing here: macOS moves a token to a new password itself when the
/// user changes it, and a Mac's plugin sends only logins.
pub(crate) fn login(
    c: &Config,
    v: &Volume,
    user: &UserName,
    standing: &Standing,
    password: &Secret,
    after_change: bool,
) -> Result<VolumeLogin, String> {
    if after_change {
        return Ok(VolumeLogin::Skipped);
    }
    with_store(c, v, |s| login_on(c, v, s, user, standing, password)).map_err(|e| e.to_string())
}

/// [`login`] on an open store.
pub(crate) fn login_on(
    c: &Config,
    v: &Volume,
    s: &mut Store<'_>,
    user: &UserName,
    standing: &Standing,
    password: &Secret,
) -> Result<VolumeLogin, OpError> {
    let name = ShortName::parse(user.as_str()).map_err(mac_failure)?;
    let revoke_unmanaged = crate::policy_override::effective(c).revoke_unmanaged;
    // Finish an interrupted grant or removal before judging what the user holds.
    super::standing(s)?;
    let (_, view) = s.view().map_err(mac_failure)?;
    let holding = holding(&view, user, &name);
    let standing = match holding {
        Holding::Keyward { uid, .. } => {
            accounts::standing(c, user, Some(uid)).map_err(OpError::Failed)?
        }
        Holding::Nothing | Holding::Other(_) => standing.clone(),
    };
    Ok(match decide(holding, &standing, revoke_unmanaged) {
        Action::Grant => {
            let mut vault = MacVault { c, v, s };
            let (_, service) = vault.working()?;
            let uid = vault.grantee(user)?;
            let req = GrantRequest::user(user.clone(), uid);
            let slot = vault.grant(&req, &service, password)?;
            VolumeLogin::Done(format!("granted a Secure Token (slot {slot})"))
        }
        Action::Keep(why) if matches!(standing, Standing::Managed(_)) => {
            // A token holder macOS just let in: is FileVault on the same password?
            let record = out_of_step(c);
            let why = s.note_login_sync(&record, v.name.as_str(), &name, password, why);
            VolumeLogin::Done(why.map_err(mac_failure)?)
        }
        Action::Keep(why) => VolumeLogin::Done(why),
        Action::Revoke { slot, standing } => {
            s.revoke_right(slot, Some(password)).map_err(mac_failure)?;
            VolumeLogin::Done(format!(
                "{standing}: revoked its Secure Token (slot {slot}) with the login password"
            ))
        }
        Action::NotManaged(why) => VolumeLogin::Refused(why),
    })
}
