//! What a captured login does on a Mac (issue 19): the authorization plugin hands the helper the
//! name and the password macOS has just accepted. A managed user without a Secure Token gets
//! one from the service account (the grant `keyward grant` makes); a user who holds one needs
//! nothing; a user the policy no longer manages loses keyward's token — which macOS allows only
//! with the holder's own password, so only at a login. [`holding`] reads what the user holds
//! from a [`View`], [`decide`] makes the choice; neither does I/O.
//! [`FileVaultStore::login_action`] runs them on the Mac once what a crash interrupted is
//! finished. The helper judges the user's standing (its accounts and policy) and carries the
//! action out.

use keyward_core::policy::Standing;
use keyward_core::{SlotId, Uid, UserName};

use crate::error::MacError;
use crate::inventory::View;
use crate::keychain::Keychain;
use crate::names::ShortName;
use crate::registry::Journal;
use crate::runner::Runner;
use crate::store::FileVaultStore;

/// What the user holds on the Mac.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holding {
    /// No Secure Token.
    Nothing,
    /// A token keyward granted (and records), to this uid.
    Keyward {
        /// The token's slot.
        slot: SlotId,
        /// The uid keyward granted it to.
        uid: Uid,
    },
    /// A token keyward did not grant (made at set-up, by an admin): never keyward's to touch.
    Other(SlotId),
}

/// What a login does.
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    /// Give the user a Secure Token, authorised by the service account.
    Grant,
    /// A managed user who holds a token: nothing to change (why, for the record). macOS has
    /// just let them in: is FileVault on the same password (`note_login_sync`)?
    Holds(String),
    /// An unmanaged user keeps keyward's token (`revoke_unmanaged` is off); why, for the record.
    Keep(String),
    /// Remove keyward's token with the password at hand.
    Revoke {
        /// The token's slot.
        slot: SlotId,
        /// The user's standing, by its label.
        standing: &'static str,
    },
    /// Not the policy's: nothing here, and nothing to undo.
    NotManaged(String),
}

/// What `user` (short name `name` on the Mac) holds in `view`: keyward's record of a token it
/// granted comes first; a token the registry does not record is someone else's.
pub fn holding(view: &View, user: &UserName, name: &ShortName) -> Holding {
    match (view.state.user_slot(user), view.slot_of(name)) {
        (Some((slot, uid)), _) => Holding::Keyward { slot, uid },
        (None, Some(slot)) => Holding::Other(slot),
        (None, None) => Holding::Nothing,
    }
}

/// The choice for a user who holds `holding` and stands `standing` (for a token keyward
/// granted, judged against the uid it was granted to, as `verify` judges a LUKS2 slot).
pub fn decide(holding: Holding, standing: &Standing, revoke_unmanaged: bool) -> Action {
    let managed = matches!(standing, Standing::Managed(_));
    match (holding, managed) {
        (Holding::Nothing, true) => Action::Grant,
        (Holding::Nothing | Holding::Other(_), false) => {
            Action::NotManaged(format!("not managed ({})", standing.label()))
        }
        (Holding::Other(slot), true) => Action::Holds(format!(
            "holds a Secure Token keyward did not grant (slot {slot}); nothing to do"
        )),
        (Holding::Keyward { slot, .. }, true) => Action::Holds(format!(
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

impl<R: Runner, J: Journal, K: Keychain> FileVaultStore<R, J, K> {
    /// What a login of `user` (short name `name`) does: once what a crash interrupted (a grant,
    /// a removal) is finished, [`decide`] over what the user holds now. `standing` is the
    /// user's by name; a token keyward granted is judged by `judge` instead, against the uid it
    /// was granted to.
    pub fn login_action<E: From<MacError>>(
        &mut self,
        user: &UserName,
        name: &ShortName,
        standing: &Standing,
        judge: impl FnOnce(Uid) -> Result<Standing, E>,
        revoke_unmanaged: bool,
    ) -> Result<Action, E> {
        self.service_standing()?;
        let (_, view) = self.view()?;
        let holding = holding(&view, user, name);
        let standing = match holding {
            Holding::Keyward { uid, .. } => judge(uid)?,
            Holding::Nothing | Holding::Other(_) => standing.clone(),
        };
        Ok(decide(holding, &standing, revoke_unmanaged))
    }
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
            matches!(decide(held, &managed, true), Action::Holds(s) if s.contains("nothing to do"))
        );
        let other = decide(Holding::Other(slot(0)), &managed, true);
        assert!(matches!(other, Action::Holds(s) if s.contains("did not grant")));
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
