//! What a captured login finds a user holding on the simulated Mac: keyward's record of the
//! token it granted (with the uid it granted it to) before the Mac's own word, a token keyward
//! did not grant as someone else's, and nothing for a user without one.
#![allow(clippy::unwrap_used)]

mod common;

use keyward_core::policy::Standing;
use keyward_core::store::{Authority, GrantRequest, UnlockStore};
use keyward_core::{SlotId, Uid, UserName};
use keyward_macos::login_capture::{holding, Action, Holding};
use keyward_macos::MacError;

use common::*;

fn user(s: &str) -> UserName {
    UserName::parse(s).unwrap()
}

#[test]
fn keywards_grant_is_keywards_an_admins_token_is_not_and_no_token_is_nothing() {
    let mut s = bootstrapped();
    let (_, view) = s.view().unwrap();
    assert_eq!(
        holding(&view, &user("alice"), &name("alice")),
        Holding::Nothing
    );
    let admin = view.slot_of(&name("admin")).unwrap();
    assert_eq!(
        holding(&view, &user("admin"), &name("admin")),
        Holding::Other(admin)
    );

    let (slot, uid) = grant_alice(&mut s);
    let (_, view) = s.view().unwrap();
    assert_eq!(
        holding(&view, &user("alice"), &name("alice")),
        Holding::Keyward { slot, uid }
    );
    // The service account's token is keyward's, but not a user's right: never a login's.
    assert!(matches!(
        holding(&view, &user("_keyward"), &name("_keyward")),
        Holding::Other(_)
    ));
}

/// Keyward grants alice (uid 502) a token through the service account; its slot and uid.
fn grant_alice(s: &mut Store) -> (SlotId, Uid) {
    let uid = Uid::new(502).unwrap();
    let slot = s
        .grant(
            &GrantRequest::user(user("alice"), uid),
            Authority::Service(&secret(SERVICE_PW)),
            &secret("alice-pw"),
        )
        .unwrap();
    (slot, uid)
}

/// What a login of `who`, managed by name (uid 502), does; `judge` judges keyward's token.
fn login(
    s: &mut Store,
    who: &str,
    judge: impl FnOnce(Uid) -> Result<Standing, MacError>,
) -> Action {
    let managed = Standing::Managed(Uid::new(502).unwrap());
    s.login_action(&user(who), &name(who), &managed, judge, true)
        .unwrap()
}

fn unjudged(_: Uid) -> Result<Standing, MacError> {
    panic!("no token of keyward's to judge")
}

#[test]
fn a_login_judges_keywards_token_against_the_uid_it_was_granted_to_and_any_other_by_name() {
    let mut s = bootstrapped();
    assert_eq!(login(&mut s, "alice", unjudged), Action::Grant);
    assert!(matches!(login(&mut s, "admin", unjudged), Action::Holds(_)));

    let (slot, uid) = grant_alice(&mut s);
    let mut judged = None;
    let gone = login(&mut s, "alice", |granted| {
        judged = Some(granted);
        Ok(Standing::UidChanged)
    });
    assert_eq!(judged, Some(uid));
    assert_eq!(
        gone,
        Action::Revoke {
            slot,
            standing: Standing::UidChanged.label()
        }
    );
}
