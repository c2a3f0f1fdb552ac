//! The out-of-step record on the simulated Mac: what a login writes (a reset found and said,
//! cleared once in step again, a check that cannot be made said and the record left alone) and
//! `keyward verify`'s `filevault-old-password` findings read from it (one per recorded user who
//! still holds a Secure Token, with the token's slot; none for a recorded user without one; one
//! saying why for a record that cannot be read).
#![allow(clippy::unwrap_used)]

mod common;

use std::os::unix::fs::PermissionsExt;

use keyward_macos::command::Purpose;
use keyward_macos::out_of_step::{OutOfStep, FILE};
use keyward_macos::password_sync::FINDING;

use common::*;

fn record(dir: &std::path::Path) -> OutOfStep {
    OutOfStep::new(dir, rustix::process::geteuid().as_raw())
}

#[test]
fn a_finding_for_each_recorded_token_holder_and_none_for_a_user_without_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let r = record(dir.path());
    let mut s = bootstrapped();
    assert!(s.old_password_findings(&r, "mac").is_empty());
    // admin holds a token; alice holds none; ghost has no account; bob is on another volume.
    for user in ["admin", "alice", "ghost"] {
        r.note("mac", user, true).unwrap();
    }
    r.note("other", "bob", true).unwrap();
    let found = s.old_password_findings(&r, "mac");
    assert_eq!(found.len(), 1, "{found:?}");
    let f = &found[0];
    let (_, view) = s.view().unwrap();
    assert_eq!(f.finding, FINDING);
    assert_eq!(f.slot, view.slot_of(&name("admin")).unwrap().get());
    assert_eq!(
        (f.role.as_str(), f.user.as_deref()),
        ("user", Some("admin"))
    );
    assert_eq!(f.kdf, "secure-token");
    assert!(
        f.detail
            .starts_with("at their last login, the login password does not unlock"),
        "{}",
        f.detail
    );
}

#[test]
fn a_record_that_cannot_be_read_is_a_finding_not_silence() {
    let dir = tempfile::tempdir().unwrap();
    let r = record(dir.path());
    r.note("mac", "admin", true).unwrap();
    let path = dir.path().join(FILE);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
    let found = bootstrapped().old_password_findings(&r, "mac");
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!((found[0].slot, found[0].user.as_deref()), (0, None));
    assert!(found[0].detail.starts_with(FILE), "{}", found[0].detail);
}

fn admin(s: &mut Store) -> &mut keyward_macos::fake::FakeAccount {
    s.runner_mut()
        .accounts
        .iter_mut()
        .find(|a| a.name == "admin")
        .unwrap()
}

#[test]
fn a_login_records_a_reset_says_so_and_clears_it_once_in_step_again() {
    let dir = tempfile::tempdir().unwrap();
    let r = record(dir.path());
    let mut s = bootstrapped();
    let why = || "holds a Secure Token keyward did not grant (slot 0); nothing to do".to_owned();
    let login = |s: &mut Store, pw: &str| {
        s.note_login_sync(&r, "mac", &name("admin"), &secret(pw), why())
            .unwrap()
    };
    assert_eq!(login(&mut s, "admin-pw"), why(), "in step: nothing added");
    assert!(r.users("mac").unwrap().is_empty());

    admin(&mut s).login_password = Some(b"reset-pw".to_vec());
    let said = login(&mut s, "reset-pw");
    assert!(
        said.starts_with(&format!(
            "{}; but the login password does not unlock",
            why()
        )),
        "{said}"
    );
    assert_eq!(
        r.users("mac").unwrap().into_iter().collect::<Vec<_>>(),
        ["admin"]
    );

    admin(&mut s).unlock_password = Some(b"reset-pw".to_vec());
    assert_eq!(login(&mut s, "reset-pw"), why());
    assert!(r.users("mac").unwrap().is_empty());
}

#[test]
fn a_check_that_cannot_be_made_is_said_and_a_record_that_cannot_be_written_is_the_error() {
    let dir = tempfile::tempdir().unwrap();
    let r = record(dir.path());
    r.note("mac", "admin", true).unwrap();
    let mut s = bootstrapped();
    s.runner_mut()
        .script(Purpose::TokenStatus, "dscl-read-not-found", false);
    let said = s
        .note_login_sync(
            &r,
            "mac",
            &name("admin"),
            &secret("admin-pw"),
            "kept".into(),
        )
        .unwrap();
    assert!(
        said.starts_with("kept; FileVault's password could not be checked: "),
        "{said}"
    );
    assert_eq!(r.users("mac").unwrap().len(), 1, "left alone");

    let gone = record(&dir.path().join("absent"));
    admin(&mut s).login_password = Some(b"reset-pw".to_vec());
    let e = s
        .note_login_sync(
            &gone,
            "mac",
            &name("admin"),
            &secret("reset-pw"),
            "kept".into(),
        )
        .unwrap_err();
    assert!(e.to_string().starts_with(FILE), "{e}");
}
