//! Where the service account stands, as the helper asks before every operation: what a crash
//! interrupted is finished first, then the token's slot and whether the keychain's password
//! unlocks it.
#![allow(clippy::unwrap_used)]

mod common;

use keyward_macos::fake::FakeMac;
use keyward_macos::keychain::{Keychain, KeychainItem};
use keyward_macos::service::ServiceStanding;
use keyward_macos::MacError;

use common::*;

fn service_slot(s: &mut Store) -> keyward_core::SlotId {
    let (_, view) = s.view().unwrap();
    view.slot_of(&name("_keyward")).unwrap()
}

/// Where the service account stands is a drift at `slot` (reported, not an error).
fn assert_drift(s: &mut Store, slot: keyward_core::SlotId) {
    let r = s.service_standing().unwrap();
    assert!(
        matches!(r, ServiceStanding::Drift(at) if at == slot),
        "{r:?}"
    );
}

#[test]
fn no_service_token_is_missing_even_with_no_password_stored() {
    let mut s = store(FakeMac::typical());
    let r = s.service_standing().unwrap();
    assert!(matches!(r, ServiceStanding::Missing), "{r:?}");
}

#[test]
fn a_token_the_keychains_password_unlocks_works_and_any_other_has_drifted() {
    let mut s = bootstrapped();
    let slot = service_slot(&mut s);
    let ServiceStanding::Working(at, password) = s.service_standing().unwrap() else {
        panic!("bootstrapped: working")
    };
    assert_eq!(at, slot);
    assert_eq!(password.expose(), SERVICE_PW.as_bytes());

    let wrong = secret("0000000000000000000000000000000000000000000000000000000000000000");
    s.keychain_mut()
        .write(KeychainItem::ServiceCurrent, &wrong)
        .unwrap();
    assert_drift(&mut s, slot);

    s.keychain_mut()
        .delete(KeychainItem::ServiceCurrent)
        .unwrap();
    assert_drift(&mut s, slot);

    // A `next` that does not unlock the token, and no current password to fall back on:
    // still a drift to report, not an error.
    s.keychain_mut()
        .write(KeychainItem::ServiceNext, &wrong)
        .unwrap();
    assert_drift(&mut s, slot);
}

#[test]
fn a_rotation_a_crash_left_unrecorded_is_settled_first() {
    let mut s = bootstrapped();
    // The account got the new password; the keychain refused to promote it (a crash there).
    let writes = s.keychain_mut().writes;
    s.keychain_mut().fail_write = Some(writes + 1);
    let new = "ab12cd34";
    assert!(matches!(
        s.rotate_service_password(&secret(new)),
        Err(MacError::Keychain(_))
    ));
    let r = s.service_standing().unwrap();
    assert!(
        matches!(&r, ServiceStanding::Working(_, p) if p.expose() == new.as_bytes()),
        "{r:?}"
    );
    assert_eq!(
        keychain(&mut s, KeychainItem::ServiceCurrent).as_deref(),
        Some(new)
    );
    assert_eq!(keychain(&mut s, KeychainItem::ServiceNext), None);
}
