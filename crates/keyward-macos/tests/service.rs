//! The hidden service account's lifecycle, including the torn states a crash or a half-done
//! change can leave (token granted, password change failed).
#![allow(clippy::unwrap_used)]

mod common;

use keyward_core::error::Refusal;
use keyward_core::store::UnlockStore;
use keyward_core::token::EscrowRef;
use keyward_core::{HolderRole, Role};
use keyward_macos::command::Purpose;
use keyward_macos::fake::{FakeAccount, FakeMac};
use keyward_macos::keychain::KeychainItem;
use keyward_macos::names::ServiceUid;
use keyward_macos::service::{generate_service_password, ServicePassword, ServiceStanding};
use keyward_macos::MacError;

use common::*;

#[test]
fn creation_hides_the_account_and_tags_it_before_any_password() {
    let mut s = store(FakeMac::typical());
    let uid = s.create_service_account(&secret(SERVICE_PW)).unwrap();
    assert!(ServiceUid::RANGE.contains(&uid.get()));
    let a = s.runner().account("_keyward").unwrap().clone();
    assert!(a.hidden && a.admin && !a.token);
    assert_eq!(a.uid, i64::from(uid.get()));
    assert_eq!(
        a.attrs.get("UserShell").map(String::as_str),
        Some("/usr/bin/false")
    );
    assert_eq!(
        a.attrs.get("NFSHomeDirectory").map(String::as_str),
        Some("/var/empty")
    );
    assert_eq!(
        s.runner().groups.get("_keyward"),
        Some(&i64::from(uid.get()))
    );
    // Order: every attribute (the tag last) before the password.
    let calls = &s.runner().calls;
    let tag = calls
        .iter()
        .position(|c| c.argv.iter().any(|a| a == ";DisabledTags;SecureToken"))
        .unwrap();
    let hidden = calls
        .iter()
        .position(|c| c.argv.iter().any(|a| a == "IsHidden"))
        .unwrap();
    let pw = calls
        .iter()
        .position(|c| c.purpose == Purpose::SetInitialPassword)
        .unwrap();
    assert!(hidden < tag && tag < pw);
    assert_eq!(
        keychain(&mut s, KeychainItem::ServiceCurrent).as_deref(),
        Some(SERVICE_PW)
    );
    assert_eq!(keychain(&mut s, KeychainItem::ServiceNext), None);
    assert_no_secret_in_argv(&s, &[SERVICE_PW]);
    // Idempotent.
    assert_eq!(s.create_service_account(&secret(SERVICE_PW)).unwrap(), uid);
}

#[test]
fn on_a_mac_without_token_holders_the_tag_prevents_an_accidental_first_token() {
    let mut mac = FakeMac::typical();
    for a in &mut mac.accounts {
        a.token = false;
    }
    let mut s = store(mac);
    s.create_service_account(&secret(SERVICE_PW)).unwrap();
    assert!(!s.runner().account("_keyward").unwrap().token);
    // The simulated Mac does hand out that first token to an untagged account.
    let mut bare = FakeMac::default();
    bare.accounts.push(FakeAccount {
        name: "x".into(),
        ..FakeAccount::default()
    });
    let inv = keyward_macos::build::dscl::set_initial_password(&name("x"), &secret("pw")).unwrap();
    keyward_macos::runner::Runner::run(&mut bare, &inv).unwrap();
    assert!(bare.account("x").unwrap().token);
}

#[test]
fn an_existing_visible_account_is_a_conflict() {
    let mut mac = FakeMac::typical();
    mac.accounts
        .push(FakeAccount::user("_keyward", "Impostor", 503, "x", false));
    let mut s = store(mac);
    assert!(matches!(
        s.create_service_account(&secret(SERVICE_PW)),
        Err(MacError::AccountConflict(_))
    ));
}

#[test]
fn the_token_is_granted_from_a_holders_password_used_once() {
    let mut s = store(FakeMac::typical());
    s.create_service_account(&secret(SERVICE_PW)).unwrap();
    let slot = s
        .grant_service_token(&name("admin"), &secret("admin-pw"))
        .unwrap();
    let a = s.runner().account("_keyward").unwrap();
    assert!(a.token);
    assert!(
        !a.authority.iter().any(|v| v == ";DisabledTags;SecureToken"),
        "tag lifted for the grant"
    );
    let h = s
        .state()
        .unwrap()
        .holders()
        .into_iter()
        .find(|h| h.slot == slot)
        .unwrap();
    assert_eq!(h.role, HolderRole::Service);
    // The admin's password went to sysadminctl's stdin only, and is kept nowhere.
    assert_no_secret_in_argv(&s, &["admin-pw", SERVICE_PW]);
    assert_ne!(
        keychain(&mut s, KeychainItem::ServiceCurrent).as_deref(),
        Some("admin-pw")
    );
    let reg = serde_json::to_string(&s.journal_mut().registry.to_json()).unwrap();
    assert!(!reg.contains("admin-pw") && !reg.contains(SERVICE_PW));
}

#[test]
fn a_wrong_holder_password_or_a_phantom_grant_restores_the_tag() {
    let mut s = store(FakeMac::typical());
    s.create_service_account(&secret(SERVICE_PW)).unwrap();
    let r = s.grant_service_token(&name("admin"), &secret("wrong"));
    assert!(
        matches!(r, Err(MacError::NeedsTokenUnlock(Purpose::TokenOn))),
        "{r:?}"
    );
    let tagged = |s: &Store| {
        s.runner()
            .account("_keyward")
            .unwrap()
            .authority
            .iter()
            .any(|v| v == ";DisabledTags;SecureToken")
    };
    assert!(tagged(&s));
    s.runner_mut()
        .script(Purpose::TokenOn, "token-on-done", false);
    let r = s.grant_service_token(&name("admin"), &secret("admin-pw"));
    assert!(matches!(r, Err(MacError::PhantomSuccess { .. })), "{r:?}");
    assert!(tagged(&s));
    assert!(s.journal_mut().registry.entries.is_empty());
}

#[test]
fn a_bootstrap_cut_short_by_a_wrong_holder_password_leaves_its_service_password_to_the_next() {
    let mut s = store(FakeMac::typical());
    let r = s.bootstrap_service(&name("admin"), &secret("wrong"));
    assert!(
        matches!(r, Err(MacError::NeedsTokenUnlock(Purpose::TokenOn))),
        "{r:?}"
    );
    let made = keychain(&mut s, KeychainItem::ServiceCurrent).unwrap();
    assert_eq!(made.len(), 64, "a generated password: {made}");
    let slot = s
        .bootstrap_service(&name("admin"), &secret("admin-pw"))
        .unwrap();
    assert_eq!(keychain(&mut s, KeychainItem::ServiceCurrent), Some(made));
    assert!(matches!(
        s.service_standing().unwrap(),
        ServiceStanding::Working(working, _) if working == slot
    ));
    assert_no_secret_in_argv(&s, &["admin-pw"]);
}

#[test]
fn rotation_is_a_change_with_the_old_password() {
    let mut s = bootstrapped();
    let new = generate_service_password().unwrap();
    let new_text = String::from_utf8(new.expose().to_vec()).unwrap();
    assert_eq!(new_text.len(), 64);
    s.rotate_service_password(&new).unwrap();
    let a = s.runner().account("_keyward").unwrap();
    assert_eq!(a.unlock_password.as_deref(), Some(new.expose()));
    assert_eq!(a.login_password.as_deref(), Some(new.expose()));
    assert_eq!(
        keychain(&mut s, KeychainItem::ServiceCurrent),
        Some(new_text.clone())
    );
    assert_eq!(keychain(&mut s, KeychainItem::ServiceNext), None);
    let call = s
        .runner()
        .calls_for(Purpose::ChangePassword)
        .last()
        .unwrap();
    assert_eq!(
        &call.stdin[..],
        format!("passwd /Users/_keyward {SERVICE_PW} {new_text}\n").as_bytes()
    );
    assert_no_secret_in_argv(&s, &[SERVICE_PW, &new_text]);
}

#[test]
fn torn_state_token_granted_password_change_failed() {
    let mut s = bootstrapped();
    s.runner_mut().tear_next_password_change = true;
    let r = s.rotate_service_password(&secret("ab12cd34"));
    assert!(
        matches!(r, Err(MacError::TornPasswordChange { reverted: true, .. })),
        "{r:?}"
    );
    let a = s.runner().account("_keyward").unwrap();
    assert!(a.token, "the token stays");
    assert_eq!(a.login_password.as_deref(), Some(SERVICE_PW.as_bytes()));
    assert_eq!(a.unlock_password.as_deref(), Some(SERVICE_PW.as_bytes()));
    assert_eq!(
        keychain(&mut s, KeychainItem::ServiceCurrent).as_deref(),
        Some(SERVICE_PW)
    );
    assert_eq!(keychain(&mut s, KeychainItem::ServiceNext), None);
}

#[test]
fn torn_state_password_changed_but_not_recorded() {
    let mut s = bootstrapped();
    // The account got the new password; the keychain refused to promote it (a crash there).
    let writes = s.keychain_mut().writes;
    s.keychain_mut().fail_write = Some(writes + 1);
    assert!(matches!(
        s.rotate_service_password(&secret("ab12cd34")),
        Err(MacError::Keychain(_))
    ));
    assert_eq!(
        keychain(&mut s, KeychainItem::ServiceNext).as_deref(),
        Some("ab12cd34")
    );
    assert_eq!(
        s.settle_service_password().unwrap(),
        ServicePassword::Promoted
    );
    assert_eq!(
        keychain(&mut s, KeychainItem::ServiceCurrent).as_deref(),
        Some("ab12cd34")
    );
    assert_eq!(
        s.settle_service_password().unwrap(),
        ServicePassword::Current
    );
}

#[test]
fn a_rejected_change_drops_next_and_keeps_the_old_password() {
    let mut s = bootstrapped();
    s.runner_mut()
        .script(Purpose::ChangePassword, "dscl-passwd-auth-failed", false);
    assert!(matches!(
        s.rotate_service_password(&secret("ab12cd34")),
        Err(MacError::AuthenticationFailed(_))
    ));
    assert_eq!(
        keychain(&mut s, KeychainItem::ServiceCurrent).as_deref(),
        Some(SERVICE_PW)
    );
    assert_eq!(keychain(&mut s, KeychainItem::ServiceNext), None);
    // An unknown outcome keeps next; settling finds the old password still in force.
    s.runner_mut()
        .script(Purpose::ChangePassword, "dscl-write-permission", false);
    assert!(matches!(
        s.rotate_service_password(&secret("ab12cd34")),
        Err(MacError::Unrecognized { .. })
    ));
    assert_eq!(
        keychain(&mut s, KeychainItem::ServiceNext).as_deref(),
        Some("ab12cd34")
    );
    assert_eq!(
        s.settle_service_password().unwrap(),
        ServicePassword::Dropped
    );
}

#[test]
fn a_crash_during_creation_is_settled() {
    let mut s = store(FakeMac::typical());
    s.runner_mut()
        .script(Purpose::SetInitialPassword, "dscl-write-permission", false);
    assert!(s.create_service_account(&secret(SERVICE_PW)).is_err());
    assert_eq!(
        keychain(&mut s, KeychainItem::ServiceNext).as_deref(),
        Some(SERVICE_PW)
    );
    assert_eq!(
        s.settle_service_password().unwrap(),
        ServicePassword::Promoted
    );
    assert_eq!(
        s.runner()
            .account("_keyward")
            .unwrap()
            .login_password
            .as_deref(),
        Some(SERVICE_PW.as_bytes())
    );
    s.grant_service_token(&name("admin"), &secret("admin-pw"))
        .unwrap();
}

fn set_admin_token(s: &mut Store, token: bool) {
    for a in &mut s.runner_mut().accounts {
        if a.name == "admin" {
            a.token = token;
        }
    }
}

#[test]
fn deletion_only_while_another_way_in_remains() {
    // Only the service account holds a token and the recovery key is not escrowed: refused.
    let mut s = bootstrapped();
    set_admin_token(&mut s, false);
    assert!(matches!(
        s.delete_service_account(),
        Err(MacError::WouldStrand)
    ));
    assert!(s.runner().account("_keyward").is_some());
    // Nor may the recovery key be rotated: until the new one is escrowed, the service
    // account (whose password only keyward knows) would be the only way in.
    assert!(matches!(
        s.rotate_recovery(),
        Err(MacError::Refused(Refusal::WouldLockOut(_)))
    ));
    // With the admin's token back, the key is rotated and escrowed; then the admin's token
    // goes, and the escrowed recovery key is a way in: the service account may go.
    set_admin_token(&mut s, true);
    let p = s.rotate_recovery().unwrap();
    s.commit(
        p.slot,
        Some(EscrowRef {
            id: "e-1".into(),
            sha256: "c".repeat(64),
        }),
    )
    .unwrap();
    set_admin_token(&mut s, false);
    s.delete_service_account().unwrap();
    assert!(s.runner().account("_keyward").is_none());
    assert!(!s.runner().groups.contains_key("_keyward"));
    assert_eq!(keychain(&mut s, KeychainItem::ServiceCurrent), None);
    assert!(!s
        .journal_mut()
        .registry
        .entries
        .iter()
        .any(|e| e.token.role == Role::Service));
    let call = s.runner().calls_for(Purpose::DeleteUser).last().unwrap();
    assert!(call.argv.iter().any(|a| a == "-keepHome"));
    assert_no_secret_in_argv(&s, &[SERVICE_PW]);
}

#[test]
fn deletion_with_another_holder_and_phantom_deletion() {
    let mut s = bootstrapped();
    s.runner_mut()
        .script(Purpose::DeleteUser, "delete-user-done", false);
    assert!(matches!(
        s.delete_service_account(),
        Err(MacError::PhantomSuccess { .. })
    ));
    assert!(s.runner().account("_keyward").is_some());
    s.runner_mut()
        .script(Purpose::DeleteUser, "delete-user-auth-failed", false);
    assert!(matches!(
        s.delete_service_account(),
        Err(MacError::AuthenticationFailed(_))
    ));
    s.delete_service_account().unwrap();
    assert!(s.runner().account("_keyward").is_none());
}

#[test]
fn release_refuses_a_dry_run_too_when_it_would_strand_and_deletes_only_for_real() {
    let mut s = store(FakeMac::typical());
    assert_eq!(
        s.release_service_account(false).unwrap(),
        None,
        "no account"
    );
    let mut s = bootstrapped();
    let (_, view) = s.view().unwrap();
    let slot = view.slot_of(&name("_keyward")).unwrap();
    set_admin_token(&mut s, false);
    for dry_run in [true, false] {
        let r = s.release_service_account(dry_run);
        assert!(matches!(r, Err(MacError::WouldStrand)), "{dry_run}: {r:?}");
    }
    set_admin_token(&mut s, true);
    assert_eq!(s.release_service_account(true).unwrap(), Some(slot));
    assert!(
        s.runner().account("_keyward").is_some(),
        "a dry run deletes nothing"
    );
    assert_eq!(s.release_service_account(false).unwrap(), Some(slot));
    assert!(s.runner().account("_keyward").is_none());
    assert_eq!(s.release_service_account(false).unwrap(), None, "gone");
}
