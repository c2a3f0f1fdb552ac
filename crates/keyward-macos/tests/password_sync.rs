//! A password reset that left FileVault on the old password, detected at a login: the pure
//! decision over transcribed outputs (fixtures/, never recorded on a Mac), and the store's
//! question against the simulated Mac, whose model of a reset changes the login password and
//! leaves FileVault's alone.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use keyward_macos::command::Purpose;
use keyward_macos::fake::FakeMac;
use keyward_macos::fixture::render;
use keyward_macos::password_sync::{judge, PasswordSync};
use keyward_macos::MacError;

fn account<'a>(s: &'a mut Store, name: &str) -> &'a mut keyward_macos::fake::FakeAccount {
    s.runner_mut()
        .accounts
        .iter_mut()
        .find(|a| a.name == name)
        .unwrap()
}

fn fx(name: &str) -> keyward_macos::runner::Output {
    render(name, &[("realname", "Jane Appleseed")]).unwrap()
}

#[test]
fn the_decision_from_what_sysadminctl_and_diskutil_printed() {
    let (enabled, disabled) = (fx("token-status-enabled"), fx("token-status-disabled"));
    let (ok, incorrect) = (fx("diskutil-verify-ok"), fx("diskutil-verify-incorrect"));
    assert_eq!(judge(&enabled, Some(&ok)).unwrap(), PasswordSync::InStep);
    assert_eq!(
        judge(&enabled, Some(&incorrect)).unwrap(),
        PasswordSync::FileVaultOnOldPassword
    );
    assert_eq!(judge(&disabled, None).unwrap(), PasswordSync::NoSecureToken);
    assert_eq!(
        judge(&disabled, Some(&incorrect)).unwrap(),
        PasswordSync::NoSecureToken
    );
    // A holder without diskutil's answer, or with one keyward does not know: no guess.
    assert!(matches!(
        judge(&enabled, None),
        Err(MacError::Unsupported(_))
    ));
    let strange = fx("dscl-read-not-found");
    assert!(matches!(
        judge(&enabled, Some(&strange)),
        Err(MacError::Unrecognized { .. })
    ));
    assert!(judge(&strange, Some(&ok)).is_err(), "no token status line");
    assert!(PasswordSync::FileVaultOnOldPassword
        .to_string()
        .contains("reset without the old one"));
}

#[test]
fn a_reset_is_found_at_login_and_a_change_with_the_old_password_is_not() {
    let mut s = store(FakeMac::typical());
    let admin = name("admin");
    assert_eq!(
        s.login_password_sync(&admin, &secret("admin-pw")).unwrap(),
        PasswordSync::InStep
    );

    // Reset without the old password (dscl . -passwd as root): login takes the new one,
    // FileVault keeps the old.
    let a = account(&mut s, "admin");
    a.login_password = Some(b"reset-pw".to_vec());
    assert_eq!(
        s.login_password_sync(&admin, &secret("reset-pw")).unwrap(),
        PasswordSync::FileVaultOnOldPassword
    );

    // Changed with the old one: FileVault follows.
    let a = account(&mut s, "admin");
    a.unlock_password = Some(b"reset-pw".to_vec());
    assert_eq!(
        s.login_password_sync(&admin, &secret("reset-pw")).unwrap(),
        PasswordSync::InStep
    );
    assert_no_secret_in_argv(&s, &["admin-pw", "reset-pw"]);
}

#[test]
fn a_user_without_a_token_is_not_asked_about_filevault() {
    let mut s = store(FakeMac::typical());
    assert_eq!(
        s.login_password_sync(&name("alice"), &secret("alice-pw"))
            .unwrap(),
        PasswordSync::NoSecureToken
    );
    assert_eq!(s.runner().calls_for(Purpose::VerifyUnlock).count(), 0);
    assert_eq!(s.runner().calls_for(Purpose::TokenStatus).count(), 1);
}
