//! What a captured login finds a user holding on the simulated Mac: keyward's record of the
//! token it granted (with the uid it granted it to) before the Mac's own word, a token keyward
//! did not grant as someone else's, and nothing for a user without one.
#![allow(clippy::unwrap_used)]

mod common;

use keyward_core::store::{Authority, GrantRequest, UnlockStore};
use keyward_core::{Uid, UserName};
use keyward_macos::login_capture::{holding, Holding};

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

    let uid = Uid::new(502).unwrap();
    let slot = s
        .grant(
            &GrantRequest::user(user("alice"), uid),
            Authority::Service(&secret(SERVICE_PW)),
            &secret("alice-pw"),
        )
        .unwrap();
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
