//! `keyward verify`'s `filevault-old-password` findings on the simulated Mac, from the record a
//! login leaves (`out_of_step`): one per recorded user who still holds a Secure Token, with the
//! token's slot; none for a recorded user without one; one saying why for a record that cannot
//! be read.
#![allow(clippy::unwrap_used)]

mod common;

use std::os::unix::fs::PermissionsExt;

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
