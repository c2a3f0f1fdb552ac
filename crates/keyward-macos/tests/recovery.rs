//! FileVault recovery-key rotation: escrow before commit, validaterecovery before the old key's
//! record is forgotten, and every failure leaving the old record in place.
#![allow(clippy::unwrap_used)]

mod common;

use keyward_core::store::{ReconcileAction, UnlockStore};
use keyward_core::token::EscrowRef;
use keyward_core::{Refusal, Role, StoreError, TokenState};
use keyward_macos::command::Purpose;
use keyward_macos::report::volume_report;
use keyward_macos::MacError;

use common::*;

fn escrow(id: &str) -> EscrowRef {
    EscrowRef {
        id: id.into(),
        sha256: "b".repeat(64),
    }
}

fn recovery_entries(s: &mut Store) -> Vec<(TokenState, Option<String>)> {
    s.journal_mut()
        .registry
        .entries
        .iter()
        .filter(|e| e.token.role == Role::Recovery)
        .map(|e| (e.token.state, e.token.escrow.as_ref().map(|x| x.id.clone())))
        .collect()
}

/// A bootstrapped Mac whose current key keyward rotated and escrowed as `e-old`.
fn escrowed() -> Store {
    let mut s = bootstrapped();
    let p = s.rotate_recovery().unwrap();
    s.commit(p.slot, Some(escrow("e-old"))).unwrap();
    s
}

#[test]
fn rotate_escrow_commit() {
    let mut s = escrowed();
    let old_key = s.runner().recovery_key.clone().unwrap();
    let p = s.rotate_recovery().unwrap();
    let new_key = String::from_utf8(p.key.expose().to_vec()).unwrap();
    assert_ne!(new_key, old_key);
    assert_eq!(s.runner().recovery_key.as_deref(), Some(new_key.as_str()));
    // Validated before the old record went; pending until the receipt.
    let calls: Vec<_> = s.runner().calls.iter().map(|c| c.purpose).collect();
    let change = calls
        .iter()
        .rposition(|p| *p == Purpose::ChangeRecovery)
        .unwrap();
    assert_eq!(calls[change + 1], Purpose::ValidateRecovery);
    assert_eq!(recovery_entries(&mut s), [(TokenState::Pending, None)]);
    let report = volume_report("root", &s.state().unwrap());
    let h = report
        .holders
        .iter()
        .find(|h| h.role == "recovery")
        .unwrap();
    assert_eq!(
        (h.state.as_str(), h.kdf.as_str()),
        ("pending", "recovery-key")
    );
    s.commit(p.slot, Some(escrow("e-new"))).unwrap();
    assert_eq!(
        recovery_entries(&mut s),
        [(TokenState::Active, Some("e-new".into()))]
    );
    assert!(s.verify(p.slot, &p.key).unwrap());
    // The service password authenticated, on stdin as a plist; the key came back on stdout.
    let call = s
        .runner()
        .calls_for(Purpose::ChangeRecovery)
        .last()
        .unwrap();
    assert_eq!(
        call.argv,
        ["changerecovery", "-personal", "-inputplist", "-outputplist"]
    );
    assert!(String::from_utf8_lossy(&call.stdin).contains(SERVICE_PW));
    assert_no_secret_in_argv(&s, &[SERVICE_PW, &new_key, &old_key]);
}

#[test]
fn failures_keep_the_old_record() {
    for (fixture, check) in [
        ("fdesetup-changerecovery-auth-failed", "auth"),
        ("fdesetup-changerecovery-unable", "unable"),
    ] {
        let mut s = escrowed();
        let key = s.runner().recovery_key.clone();
        s.runner_mut()
            .script(Purpose::ChangeRecovery, fixture, false);
        let r = s.rotate_recovery();
        match check {
            "auth" => assert!(
                matches!(
                    r,
                    Err(MacError::AuthenticationFailed(Purpose::ChangeRecovery))
                ),
                "{r:?}"
            ),
            _ => assert!(matches!(r, Err(MacError::UnableToChangeKey)), "{r:?}"),
        }
        assert_eq!(s.runner().recovery_key, key);
        assert_eq!(
            recovery_entries(&mut s),
            [(TokenState::Active, Some("e-old".into()))]
        );
    }
}

#[test]
fn a_key_that_does_not_validate_is_not_recorded_and_the_old_record_stays() {
    let mut s = escrowed();
    s.runner_mut().script(
        Purpose::ValidateRecovery,
        "fdesetup-validaterecovery-false",
        false,
    );
    let r = s.rotate_recovery();
    assert!(matches!(r, Err(MacError::RecoveryKeyNotValidated)), "{r:?}");
    assert_eq!(
        recovery_entries(&mut s),
        [(TokenState::Active, Some("e-old".into()))]
    );
}

#[test]
fn needs_filevault_on_and_one_rotation_at_a_time() {
    let mut s = bootstrapped();
    s.runner_mut().filevault_on = false;
    assert!(matches!(
        s.rotate_recovery(),
        Err(MacError::FileVaultNotOn(_))
    ));
    s.runner_mut().filevault_on = true;
    let p = s.rotate_recovery().unwrap();
    assert!(
        matches!(s.rotate_recovery(), Err(MacError::Refused(Refusal::InTransition(x))) if x == p.slot)
    );
    // A pending key is not committed: committing something else is refused.
    let service = s
        .state()
        .unwrap()
        .holders()
        .into_iter()
        .find(|h| h.role.label() == "service")
        .unwrap()
        .slot;
    assert!(matches!(
        s.commit(service, None),
        Err(StoreError::Refused(_))
    ));
}

#[test]
fn a_crash_after_changerecovery_stops_claiming_the_old_escrow() {
    let mut s = escrowed();
    // The save that records the new key as pending fails, as a crash would.
    let saves = s.journal_mut().saves;
    s.journal_mut().fail_save = Some(saves + 1);
    assert!(s.rotate_recovery().is_err());
    let actions = s.reconcile().unwrap();
    assert!(actions
        .iter()
        .any(|a| matches!(a, ReconcileAction::UndidGrant { .. })));
    assert!(
        recovery_entries(&mut s).is_empty(),
        "neither key is claimed as escrowed"
    );
    let report = volume_report("root", &s.state().unwrap());
    let h = report
        .holders
        .iter()
        .find(|h| h.kdf == "recovery-key")
        .unwrap();
    assert_eq!(
        (h.role.as_str(), h.escrow_id.as_deref()),
        ("unmanaged", None)
    );
    // The next rotation takes it over again.
    let p = s.rotate_recovery().unwrap();
    s.commit(p.slot, Some(escrow("e-again"))).unwrap();
}

#[test]
fn abandoning_a_pending_key_keeps_it_but_not_as_escrowed() {
    let mut s = escrowed();
    let p = s.rotate_recovery().unwrap();
    s.abandon_pending_recovery(p.slot).unwrap();
    assert_eq!(recovery_entries(&mut s), [(TokenState::Active, None)]);
    assert!(
        s.verify(p.slot, &p.key).unwrap(),
        "FileVault cannot go back to the old key"
    );
}

#[test]
fn revoking_the_recovery_key_uses_the_service_password() {
    let mut s = escrowed();
    let slot = s
        .journal_mut()
        .registry
        .entries
        .iter()
        .find(|e| e.token.role == Role::Recovery)
        .unwrap()
        .token
        .keyslot
        .unwrap();
    s.revoke(slot).unwrap();
    assert_eq!(s.runner().recovery_key, None);
    assert!(recovery_entries(&mut s).is_empty());
    // Phantom removal: fdesetup says nothing, the key is still there.
    let mut s = escrowed();
    let slot = s
        .journal_mut()
        .registry
        .entries
        .iter()
        .find(|e| e.token.role == Role::Recovery)
        .unwrap()
        .token
        .keyslot
        .unwrap();
    s.runner_mut()
        .script(Purpose::RemoveRecovery, "fdesetup-removerecovery-ok", false);
    assert!(matches!(
        s.revoke_right(slot, None),
        Err(MacError::PhantomSuccess { .. })
    ));
}
