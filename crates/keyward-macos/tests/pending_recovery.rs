//! When a pending FileVault recovery key is kept and when it is given up (in force, not
//! escrowed), with the caller's copy of the key and the seal as inputs: what the helper's
//! `pending/` file and age limit feed in, proved here without the helper.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use keyward_core::{Role, Secret, TokenState};
use keyward_macos::recovery::{PendingRecovery, PendingSettled};
use keyward_macos::MacError;

use common::*;

const DAY: Duration = Duration::from_secs(86_400);

/// The recovery entries' states and whether they are escrowed.
fn recovery_entries(s: &mut Store) -> Vec<(TokenState, bool)> {
    s.journal_mut()
        .registry
        .entries
        .iter()
        .filter(|e| e.token.role == Role::Recovery)
        .map(|e| (e.token.state, e.token.escrow.is_some()))
        .collect()
}

/// A bootstrapped Mac with a new key pending (made at common's fixed clock).
fn pending() -> (Store, PendingRecovery) {
    let mut s = bootstrapped();
    let p = s.rotate_recovery().unwrap();
    (s, p)
}

/// Common's fixed clock, a day on.
fn a_day_later() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_795_000_000) + DAY
}

fn copy(key: &Secret) -> Option<Secret> {
    Some(Secret::copy_from(key.expose()))
}

#[test]
fn a_pending_key_is_kept_while_the_copy_is_there_young_enough_and_still_the_key() {
    let mut s = bootstrapped();
    let none = s.settle_pending_recovery(None, DAY).unwrap();
    assert!(matches!(none, PendingSettled::NonePending), "{none:?}");

    let (mut s, p) = pending();
    let recorded = s.pending_recovery().unwrap().map(|(slot, _)| slot);
    assert_eq!(recorded, Some(p.slot));
    let mut s = s.with_clock(a_day_later);
    let kept = s.settle_pending_recovery(copy(&p.key), 2 * DAY).unwrap();
    let PendingSettled::Kept(k) = kept else {
        panic!("{kept:?}")
    };
    assert_eq!(k.slot, p.slot);
    assert!(k.key.ct_eq(&p.key));
    assert_eq!(recovery_entries(&mut s), [(TokenState::Pending, false)]);
}

#[test]
fn a_pending_key_without_its_copy_too_old_or_not_the_key_is_given_up_in_force() {
    let lost: fn(&Secret) -> Option<Secret> = |_| None;
    let wrong: fn(&Secret) -> Option<Secret> =
        |_| Some(Secret::copy_from(b"AAAA-BBBB-CCCC-DDDD-EEEE-FFFF"));
    for (why, key, max) in [
        ("lost", lost, 2 * DAY),
        ("wrong", wrong, 2 * DAY),
        ("old", copy, DAY / 2),
    ] {
        let (s, p) = pending();
        let mut s = s.with_clock(a_day_later);
        let settled = s.settle_pending_recovery(key(&p.key), max).unwrap();
        assert!(
            matches!(settled, PendingSettled::Abandoned(slot) if slot == p.slot),
            "{why}: {settled:?}"
        );
        assert_eq!(
            recovery_entries(&mut s),
            [(TokenState::Active, false)],
            "{why}"
        );
        assert_eq!(s.pending_recovery().unwrap(), None, "{why}");
        // FileVault cannot go back: the key stays the one in force.
        assert!(s.verify_slot(p.slot, &p.key).unwrap(), "{why}");
    }
}

#[test]
fn a_key_whose_seal_fails_is_given_up_at_once_and_the_seals_error_returned() {
    let mut s = bootstrapped();
    let r = s.rotate_recovery_kept(|_| Err(MacError::Keychain("disk full".into())));
    assert!(
        matches!(r, Err(MacError::Keychain(ref e)) if e == "disk full"),
        "{r:?}"
    );
    assert_eq!(recovery_entries(&mut s), [(TokenState::Active, false)]);
    assert_eq!(s.pending_recovery().unwrap(), None);

    let mut sealed = None;
    let p = s
        .rotate_recovery_kept(|k| {
            sealed = copy(k);
            Ok::<_, MacError>(())
        })
        .unwrap();
    assert!(sealed.unwrap().ct_eq(&p.key), "the seal got the new key");
    assert_eq!(recovery_entries(&mut s), [(TokenState::Pending, false)]);
}

#[test]
fn an_abort_gives_up_the_pending_key_and_says_which() {
    let mut s = bootstrapped();
    assert_eq!(s.abandon_pending().unwrap(), None);
    let (mut s, p) = pending();
    assert_eq!(s.abandon_pending().unwrap(), Some(p.slot));
    assert_eq!(recovery_entries(&mut s), [(TokenState::Active, false)]);
    assert_eq!(s.abandon_pending().unwrap(), None);
}
