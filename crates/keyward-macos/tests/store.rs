//! `UnlockStore` on the simulated Mac: holders, grant, rekey, revoke, verify, reconcile — every
//! success and failure path, phantom successes included.
#![allow(clippy::unwrap_used)]

mod common;

use keyward_core::store::{Authority, GrantRequest, ReconcileAction, UnlockStore};
use keyward_core::token::{GrantedBy, KeywardToken};
use keyward_core::{HolderRole, Refusal, Role, SlotId, StoreError, TokenState, Uid, UserName};
use keyward_macos::command::Purpose;
use keyward_macos::fake::FakeMac;
use keyward_macos::names::GeneratedUid;
use keyward_macos::registry::AccountRef;
use keyward_macos::MacError;

use common::*;

fn alice() -> GrantRequest {
    GrantRequest {
        role: Role::User {
            name: UserName::parse("alice").unwrap(),
            uid: Uid::new(502).unwrap(),
        },
        pending: false,
    }
}

/// Alice's right, granted through the service account with the password `alice-pw`.
fn grant_alice(s: &mut Store) -> SlotId {
    s.grant(
        &alice(),
        Authority::Service(&secret(SERVICE_PW)),
        &secret("alice-pw"),
    )
    .unwrap()
}

fn roles(s: &mut Store) -> Vec<(u32, String, Option<String>)> {
    s.state()
        .unwrap()
        .holders()
        .into_iter()
        .map(|h| {
            let who = match &h.role {
                HolderRole::User { name, .. } => Some(name.to_string()),
                _ => None,
            };
            (h.slot.get(), h.role.label().to_owned(), who)
        })
        .collect()
}

#[test]
fn holders_are_token_holders_not_fdesetup_list() {
    let mut mac = FakeMac::typical();
    // FileVault lists alice (no token) and leaves admin (a holder) out.
    mac.listed_without_token
        .push("alice,000001F6-0000-4000-8000-0000000001F6".into());
    mac.unlisted_holders.push("admin".into());
    let mut s = store(mac);
    let holders = roles(&mut s);
    assert_eq!(
        holders,
        [(0, "unmanaged".into(), None), (1, "unmanaged".into(), None)],
        "admin and the recovery key; alice is listed by fdesetup but holds no token"
    );
    // One -secureTokenStatus per candidate account (uid >= 500 or keyward's own).
    let asked: Vec<_> = s
        .runner()
        .calls_for(Purpose::TokenStatus)
        .map(|c| c.argv[1].clone())
        .collect();
    assert_eq!(asked, ["admin", "alice"]);
}

#[test]
fn grant_with_the_service_password() {
    let mut s = bootstrapped();
    let slot = grant_alice(&mut s);
    assert!(s.runner().account("alice").unwrap().token);
    let holders = roles(&mut s);
    assert!(holders.contains(&(slot.get(), "user".into(), Some("alice".into()))));
    assert!(holders.iter().any(|(_, r, _)| r == "service"));
    // Both passwords went to sysadminctl on stdin, in argv order; neither in argv.
    let call = s.runner().calls_for(Purpose::TokenOn).last().unwrap();
    assert_eq!(
        &call.stdin[..],
        format!("alice-pw\n{SERVICE_PW}\n").as_bytes()
    );
    assert_no_secret_in_argv(&s, &["alice-pw", SERVICE_PW, "admin-pw"]);
    // Granting again is refused.
    let again = s.grant(
        &alice(),
        Authority::Service(&secret(SERVICE_PW)),
        &secret("alice-pw"),
    );
    assert!(matches!(again, Err(StoreError::Refused(Refusal::AlreadyHolds(x))) if x == slot));
    assert!(s
        .state()
        .map(|st| keyward_core::invariants::check_state(&st).is_empty())
        .unwrap());
}

#[test]
fn grant_with_a_wrong_user_password_changes_nothing() {
    let mut s = bootstrapped();
    let before = s.journal_mut().registry.clone();
    let r = s.grant(
        &alice(),
        Authority::Service(&secret(SERVICE_PW)),
        &secret("wrong"),
    );
    assert!(matches!(r, Err(StoreError::AuthenticationFailed)));
    assert!(!s.runner().account("alice").unwrap().token);
    assert_eq!(s.journal_mut().registry, before, "the intent was removed");
}

#[test]
fn phantom_grant_is_detected_by_reading_back() {
    let mut s = bootstrapped();
    // sysadminctl prints "Done!" and exits 0, but grants nothing.
    s.runner_mut()
        .script(Purpose::TokenOn, "token-on-done", false);
    let r = s.grant_right(
        &alice(),
        Authority::Service(&secret(SERVICE_PW)),
        &secret("alice-pw"),
    );
    assert!(
        matches!(
            r,
            Err(MacError::PhantomSuccess {
                purpose: Purpose::TokenOn,
                ..
            })
        ),
        "{r:?}"
    );
    assert!(!s
        .journal_mut()
        .registry
        .entries
        .iter()
        .any(|e| matches!(e.token.role, Role::User { .. })));
}

#[test]
fn refusals_printed_with_exit_zero_are_failures() {
    for fixture in ["token-on-not-permitted", "token-on-auth-failed"] {
        let mut s = bootstrapped();
        s.runner_mut().script(Purpose::TokenOn, fixture, false);
        let r = s.grant(
            &alice(),
            Authority::Service(&secret(SERVICE_PW)),
            &secret("alice-pw"),
        );
        assert!(
            matches!(r, Err(StoreError::AuthenticationFailed)),
            "{fixture}: {r:?}"
        );
    }
}

#[test]
fn holder_authority_needs_the_holders_name() {
    let mut s = bootstrapped();
    let r = s.grant_right(
        &alice(),
        Authority::Holder(&secret("admin-pw")),
        &secret("alice-pw"),
    );
    assert!(matches!(r, Err(MacError::Unsupported(_))));
    s.set_holder_account(Some(name("admin")));
    s.grant_right(
        &alice(),
        Authority::Holder(&secret("admin-pw")),
        &secret("alice-pw"),
    )
    .unwrap();
    let e = s
        .journal_mut()
        .registry
        .entries
        .iter()
        .find(|e| matches!(e.token.role, Role::User { .. }))
        .cloned()
        .unwrap();
    assert_eq!(e.token.granted_by, GrantedBy::Passphrase);
    let recovery = s.grant_right(
        &GrantRequest {
            role: Role::Recovery,
            pending: true,
        },
        Authority::Service(&secret(SERVICE_PW)),
        &secret("x"),
    );
    assert!(matches!(recovery, Err(MacError::Unsupported(_))));
}

#[test]
fn rekey_is_a_change_with_the_old_password() {
    let mut s = bootstrapped();
    let slot = grant_alice(&mut s);
    let new_slot = s
        .rekey(
            slot,
            Authority::Holder(&secret("alice-pw")),
            &secret("alice-new"),
        )
        .unwrap();
    assert_ne!(new_slot, slot);
    let a = s.runner().account("alice").unwrap();
    assert_eq!(a.login_password.as_deref(), Some(&b"alice-new"[..]));
    assert_eq!(
        a.unlock_password.as_deref(),
        Some(&b"alice-new"[..]),
        "FileVault follows"
    );
    assert!(s.verify(new_slot, &secret("alice-new")).unwrap());
    assert!(!s.verify(new_slot, &secret("alice-pw")).unwrap());
    let call = s
        .runner()
        .calls_for(Purpose::ChangePassword)
        .last()
        .unwrap();
    assert_eq!(call.argv, ["-q", "."]);
    assert_eq!(&call.stdin[..], b"passwd /Users/alice alice-pw alice-new\n");
    assert_no_secret_in_argv(&s, &["alice-pw", "alice-new"]);
}

#[test]
fn rekey_never_resets_without_the_old_password() {
    let mut s = bootstrapped();
    let slot = grant_alice(&mut s);
    let r = s.rekey(
        slot,
        Authority::Service(&secret(SERVICE_PW)),
        &secret("alice-new"),
    );
    assert!(matches!(r, Err(StoreError::Backend(m)) if m.contains("current password")));
    assert!(s
        .runner()
        .calls_for(Purpose::ChangePassword)
        .next()
        .is_none());
    assert!(
        s.runner().calls_for(Purpose::SetInitialPassword).count() == 1,
        "only the service account's first password"
    );
}

#[test]
fn rekey_with_a_wrong_old_password_changes_nothing() {
    let mut s = bootstrapped();
    let slot = grant_alice(&mut s);
    let r = s.rekey(
        slot,
        Authority::Holder(&secret("nope")),
        &secret("alice-new"),
    );
    assert!(matches!(r, Err(StoreError::AuthenticationFailed)));
    assert!(s.verify(slot, &secret("alice-pw")).unwrap());
    let entry = s
        .journal_mut()
        .registry
        .entries
        .iter()
        .find(|e| e.token.keyslot == Some(slot))
        .cloned()
        .unwrap();
    assert_eq!(entry.token.state, TokenState::Active);
}

#[test]
fn a_torn_change_is_reverted() {
    let mut s = bootstrapped();
    let slot = grant_alice(&mut s);
    s.runner_mut().tear_next_password_change = true;
    let r = s.change_password(
        slot,
        Authority::Holder(&secret("alice-pw")),
        &secret("alice-new"),
    );
    assert!(
        matches!(r, Err(MacError::TornPasswordChange { reverted: true, .. })),
        "{r:?}"
    );
    let a = s.runner().account("alice").unwrap();
    assert_eq!(
        a.login_password.as_deref(),
        Some(&b"alice-pw"[..]),
        "login password put back"
    );
    assert_eq!(a.unlock_password.as_deref(), Some(&b"alice-pw"[..]));
    assert!(s.verify(slot, &secret("alice-pw")).unwrap());
}

#[test]
fn revoke_needs_the_holders_password_on_macos() {
    let mut s = bootstrapped();
    let slot = grant_alice(&mut s);
    let r = s.revoke(slot);
    assert!(matches!(r, Err(StoreError::Backend(m)) if m.contains("current password")));
    assert!(s.runner().account("alice").unwrap().token);
    s.revoke_right(slot, Some(&secret("alice-pw"))).unwrap();
    assert!(!s.runner().account("alice").unwrap().token);
    assert!(!roles(&mut s).iter().any(|(_, r, _)| r == "user"));
    // An unmanaged holder (admin) is never touched.
    let admin = s
        .state()
        .unwrap()
        .holders()
        .into_iter()
        .find(|h| h.role == HolderRole::Unmanaged)
        .unwrap()
        .slot;
    assert!(matches!(
        s.revoke(admin),
        Err(StoreError::Refused(Refusal::Unmanaged(_)))
    ));
    assert!(matches!(
        s.revoke(SlotId::new(17).unwrap()),
        Err(StoreError::NoSuchSlot(_))
    ));
}

#[test]
fn phantom_token_removal_is_detected() {
    let mut s = bootstrapped();
    let slot = grant_alice(&mut s);
    s.runner_mut()
        .script(Purpose::TokenOff, "token-off-done", false);
    let r = s.revoke_right(slot, Some(&secret("alice-pw")));
    assert!(matches!(
        r,
        Err(MacError::PhantomSuccess {
            purpose: Purpose::TokenOff,
            ..
        })
    ));
    assert!(s
        .journal_mut()
        .registry
        .entries
        .iter()
        .any(|e| e.token.keyslot == Some(slot)));
}

#[test]
fn revoke_refuses_the_last_way_in() {
    // A Mac whose only token holder is alice, managed by keyward, and no recovery key.
    let mut mac = FakeMac::typical();
    mac.accounts.retain(|a| a.name == "alice");
    mac.accounts[0].token = true;
    mac.accounts[0].unlock_password = Some(b"alice-pw".to_vec());
    mac.recovery_key = None;
    let guid = mac.accounts[0].generated_uid.clone();
    let mut s = store(mac);
    let slot = SlotId::new(31).unwrap();
    let mut token = KeywardToken::new(alice().role, std::time::UNIX_EPOCH, GrantedBy::Service);
    token.keyslot = Some(slot);
    s.journal_mut()
        .registry
        .add(
            token,
            Some(AccountRef {
                name: name("alice"),
                generated_uid: GeneratedUid::parse(&guid).unwrap(),
            }),
        )
        .unwrap();
    let r = s.revoke_right(slot, Some(&secret("alice-pw")));
    assert!(matches!(r, Err(MacError::Refused(Refusal::WouldLockOut(x))) if x == slot));
    assert!(s.runner().calls_for(Purpose::TokenOff).next().is_none());
}

#[test]
fn verify_recovery_key_and_account_passwords() {
    let mut s = bootstrapped();
    let prk = s
        .state()
        .unwrap()
        .slots
        .iter()
        .find(|x| x.kdf == "recovery-key")
        .unwrap()
        .id;
    assert!(s
        .verify(prk, &secret("AU2A-PHMK-WBGX-PWKX-M3X3-VAPY"))
        .unwrap());
    assert!(!s
        .verify(prk, &secret("AAAA-PHMK-WBGX-PWKX-M3X3-VAPY"))
        .unwrap());
    let service = s
        .state()
        .unwrap()
        .holders()
        .into_iter()
        .find(|h| h.role == HolderRole::Service)
        .unwrap()
        .slot;
    assert!(s.verify(service, &secret(SERVICE_PW)).unwrap());
    assert!(!s.verify(service, &secret("nope")).unwrap());
    assert_no_secret_in_argv(&s, &["AU2A-PHMK", SERVICE_PW]);
}

#[test]
fn an_interrupted_grant_is_finished_or_undone() {
    // The token was granted, then the helper died before recording it.
    let mut s = bootstrapped();
    let saves = s.journal_mut().saves;
    s.journal_mut().fail_save = Some(saves + 1);
    let r = s.grant(
        &alice(),
        Authority::Service(&secret(SERVICE_PW)),
        &secret("alice-pw"),
    );
    assert!(r.is_err());
    assert!(s.runner().account("alice").unwrap().token);
    let e = s
        .journal_mut()
        .registry
        .entries
        .iter()
        .find(|e| matches!(e.token.role, Role::User { .. }))
        .cloned()
        .unwrap();
    let TokenState::Adding { next } = e.token.state else {
        panic!("{:?}", e.token.state)
    };
    let actions = s.reconcile().unwrap();
    assert!(
        matches!(
            actions.as_slice(),
            [ReconcileAction::FinishedGrant { slot, .. }] if *slot == next
        ),
        "{actions:?}"
    );
    assert!(roles(&mut s)
        .iter()
        .any(|(_, r, u)| r == "user" && u.as_deref() == Some("alice")));

    // The grant never reached the Mac: the intent is dropped.
    let mut s = bootstrapped();
    let saves = s.journal_mut().saves;
    s.runner_mut()
        .script(Purpose::TokenOn, "token-on-done", false);
    s.journal_mut().fail_save = Some(saves + 1);
    assert!(s
        .grant(
            &alice(),
            Authority::Service(&secret(SERVICE_PW)),
            &secret("alice-pw")
        )
        .is_err());
    let actions = s.reconcile().unwrap();
    assert!(matches!(
        actions.as_slice(),
        [ReconcileAction::UndidGrant { slot: None, .. }]
    ));
    assert!(s.reconcile().unwrap().is_empty());
}

#[test]
fn orphans_are_removed_and_invariants_hold() {
    let mut s = bootstrapped();
    let slot = grant_alice(&mut s);
    // Someone else removed alice's account.
    s.runner_mut().accounts.retain(|a| a.name != "alice");
    let state = s.state().unwrap();
    assert!(
        !keyward_core::invariants::check_state(&state).is_empty(),
        "orphan reported before reconcile"
    );
    let actions = s.clean_orphan_tokens().unwrap();
    assert_eq!(actions.len(), 1);
    assert!(s.state().unwrap().slot(slot).is_none());
    assert!(keyward_core::invariants::check_state(&s.state().unwrap()).is_empty());
}

#[test]
fn the_uid_of_a_local_account_and_none_for_an_account_the_mac_does_not_have() {
    let mut s = store(FakeMac::typical());
    assert_eq!(
        s.local_uid(&name("alice")).unwrap().map(|u| u.get()),
        Some(502)
    );
    assert_eq!(
        s.local_uid(&name("admin")).unwrap().map(|u| u.get()),
        Some(501)
    );
    assert_eq!(s.local_uid(&name("bob")).unwrap(), None);
}
