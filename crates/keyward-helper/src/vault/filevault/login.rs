//! A captured login on a Mac (issue 19): the authorization plugin hands the helper the name and
//! the password macOS has just accepted. A managed user without a Secure Token gets one from the
//! service account (the grant `keyward grant` makes); a user who holds one needs nothing; a
//! user the policy no longer manages loses keyward's token — which macOS allows only with the
//! holder's own password, so only now. [`decide`] makes that choice without I/O.
//!
//! The password is never checked here against anything of the system's: sysadminctl
//! authenticates it itself for the grant and for the removal, so a wrong one changes nothing and
//! comes back as the operation's error, which the caller records.

use keyward_core::config::{Config, Volume};
use keyward_core::{HolderRole, Secret, SlotId, Uid, UserName};
use keyward_macos::names::ShortName;
use keyward_macos::password_sync::PasswordSync;

use keyward_core::store::GrantRequest;

use super::{mac_failure, out_of_step, with_store, MacVault, Store};
use crate::accounts::{self, Standing};
use crate::error::OpError;
use crate::vault::{Vault, VolumeLogin};

/// What the user holds on the Mac.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Holding {
    /// No Secure Token.
    Nothing,
    /// A token keyward granted (and records), to this uid.
    Keyward { slot: SlotId, uid: Uid },
    /// A token keyward did not grant (made at set-up, by an admin): never keyward's to touch.
    Other(SlotId),
}

/// What a login does.
#[derive(Debug, PartialEq, Eq)]
enum Action {
    Grant,
    /// Nothing to change; why, for the record.
    Keep(String),
    /// Remove keyward's token with the password at hand.
    Revoke {
        slot: SlotId,
        standing: &'static str,
    },
    /// Not the policy's: nothing here, and nothing to undo.
    NotManaged(String),
}

/// The choice for a user who holds `holding` and stands `standing` (for a token keyward
/// granted, judged against the uid it was granted to, as `verify` judges a LUKS2 slot).
fn decide(holding: Holding, standing: &Standing, revoke_unmanaged: bool) -> Action {
    let managed = matches!(standing, Standing::Managed(_));
    match (holding, managed) {
        (Holding::Nothing, true) => Action::Grant,
        (Holding::Nothing | Holding::Other(_), false) => {
            Action::NotManaged(format!("not managed ({})", standing.label()))
        }
        (Holding::Other(slot), true) => Action::Keep(format!(
            "holds a Secure Token keyward did not grant (slot {slot}); nothing to do"
        )),
        (Holding::Keyward { slot, .. }, true) => Action::Keep(format!(
            "holds its Secure Token (slot {slot}); nothing to do"
        )),
        (Holding::Keyward { slot, .. }, false) if revoke_unmanaged => Action::Revoke {
            slot,
            standing: standing.label(),
        },
        (Holding::Keyward { slot, .. }, false) => Action::Keep(format!(
            "{}: keeps its Secure Token (slot {slot}) while revoke_unmanaged is off",
            standing.label()
        )),
    }
}

fn message(e: OpError) -> String {
    e.to_string()
}

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
    with_store(c, v, |s| login_on(c, v, s, user, standing, password)).map_err(message)
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
    let keywards = view.state.holders().into_iter().find_map(|h| match h.role {
        HolderRole::User { name, uid } if &name == user => Some((h.slot, uid)),
        _ => None,
    });
    let holding = match (keywards, view.slot_of(&name)) {
        (Some((slot, uid)), _) => Holding::Keyward { slot, uid },
        (None, Some(slot)) => Holding::Other(slot),
        (None, None) => Holding::Nothing,
    };
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
            // A token holder macOS just let in: does the password it accepted also unlock
            // FileVault, or did a reset leave FileVault on the old one?
            // (A check that cannot be made is said in the record; the login stands.)
            match s.login_password_sync(&name, password) {
                Ok(sync) => {
                    let out = sync == PasswordSync::FileVaultOnOldPassword;
                    out_of_step::note(c, v.name.as_str(), user.as_str(), out)?;
                    if out {
                        VolumeLogin::Done(format!("{why}; but {sync}"))
                    } else {
                        VolumeLogin::Done(why)
                    }
                }
                Err(e) => VolumeLogin::Done(format!(
                    "{why}; FileVault's password could not be checked: {e}"
                )),
            }
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn slot(n: u32) -> SlotId {
        SlotId::new(n).unwrap()
    }

    fn uid(n: u32) -> Uid {
        Uid::new(n).unwrap()
    }

    #[test]
    fn a_managed_user_without_a_token_gets_one_and_with_one_needs_nothing() {
        let managed = Standing::Managed(uid(502));
        assert_eq!(decide(Holding::Nothing, &managed, false), Action::Grant);
        let held = Holding::Keyward {
            slot: slot(30),
            uid: uid(502),
        };
        assert!(
            matches!(decide(held, &managed, true), Action::Keep(s) if s.contains("nothing to do"))
        );
        let other = decide(Holding::Other(slot(0)), &managed, true);
        assert!(matches!(other, Action::Keep(s) if s.contains("did not grant")));
    }

    #[test]
    fn keywards_token_goes_at_login_only_when_the_policy_says_so() {
        let held = Holding::Keyward {
            slot: slot(30),
            uid: uid(502),
        };
        for gone in [
            Standing::NotManaged("not in the group".into()),
            Standing::Deleted,
            Standing::UidChanged,
        ] {
            assert_eq!(
                decide(held, &gone, true),
                Action::Revoke {
                    slot: slot(30),
                    standing: gone.label()
                }
            );
            assert!(
                matches!(decide(held, &gone, false), Action::Keep(s) if s.contains("revoke_unmanaged is off"))
            );
        }
    }

    #[test]
    fn an_unmanaged_user_gets_nothing_and_a_token_keyward_did_not_grant_is_never_touched() {
        let unmanaged = Standing::NotManaged("not listed".into());
        for holding in [Holding::Nothing, Holding::Other(slot(0))] {
            assert!(matches!(
                decide(holding, &unmanaged, true),
                Action::NotManaged(s) if s.contains("not-managed")
            ));
        }
    }
}
