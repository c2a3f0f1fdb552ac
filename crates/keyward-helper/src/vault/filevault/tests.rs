//! The same operations on the FileVault vault, over keyward-macos's simulated Mac (FileVault
//! on, `admin` holding a Secure Token with password `admin-pw`, `alice` without one, password
//! `alice-pw`), an in-memory keychain and a temporary state directory: what macOS refuses and
//! what it allows, with the wording and exit code the CLI gives.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use keyward_core::config::Config;
use keyward_core::ipc::{ErrorCode, Reply};
use keyward_core::{recovery_key, Secret, UserName};
use keyward_macos::fake::FakeMac;
use keyward_macos::keychain::{Keychain, KeychainItem, MemoryKeychain};
use keyward_macos::FileVaultStore;

use super::simulated::{SimKeychain, SimMac};
use super::{parts, MacVault};
use crate::ops::recovery::{check_confirm, commit_pending, pending_or_new};
use crate::ops::{bootstrap_on, grant_on, revoke_on, service_rotate_on};
use crate::vault::{ServiceStanding, Vault};

struct Mac {
    _dir: tempfile::TempDir,
    c: Config,
    mac: SimMac,
    keys: SimKeychain,
}

fn mac() -> Mac {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "state_dir = \"{}\"\n[[volume]]\nname = \"mac\"\ndevice = \"/\"\nkind = \"filevault\"\n[policy]\npending_max_age_secs = 315360000\n",
        dir.path().display()
    );
    Mac {
        c: Config::parse(&text).unwrap(),
        _dir: dir,
        mac: SimMac::in_memory(FakeMac::typical()),
        keys: SimKeychain::in_memory(MemoryKeychain::default()),
    }
}

/// Run `f` on the simulated Mac's vault, as `with_vault` does on a real one.
fn on<T>(m: &mut Mac, f: impl FnOnce(&mut dyn Vault) -> T) -> T {
    let v = &m.c.volumes[0];
    let (config, journal) = parts(&m.c, v).unwrap();
    let mut store = FileVaultStore::new(&mut m.mac, journal, &mut m.keys, config);
    f(&mut MacVault {
        c: &m.c,
        v,
        s: &mut store,
    })
}

fn user(name: &str) -> UserName {
    UserName::parse(name).unwrap()
}

fn pw(s: &str) -> Secret {
    Secret::copy_from(s.as_bytes())
}

fn bootstrapped() -> Mac {
    let mut m = mac();
    on(&mut m, |v| {
        bootstrap_on(v, Some(&user("admin")), &pw("admin-pw"))
    })
    .unwrap();
    m
}

#[test]
fn bootstrap_needs_the_token_holders_name_then_makes_the_service_account_once() {
    let mut m = mac();
    let r = on(&mut m, |v| bootstrap_on(v, None, &pw("admin-pw")));
    assert_eq!(r.unwrap_err().code(), ErrorCode::Usage);
    let first = on(&mut m, |v| {
        bootstrap_on(v, Some(&user("admin")), &pw("admin-pw"))
    })
    .unwrap();
    assert!(
        matches!(first, Reply::Bootstrapped { created: true, .. }),
        "{first:?}"
    );
    assert!(m.mac.account("_keyward").is_some());
    let again = on(&mut m, |v| {
        bootstrap_on(v, Some(&user("admin")), &pw("admin-pw"))
    })
    .unwrap();
    assert!(
        matches!(again, Reply::Bootstrapped { created: false, .. }),
        "{again:?}"
    );
}

#[test]
fn bootstrap_with_a_wrong_holder_password_gives_no_token() {
    let mut m = mac();
    let r = on(&mut m, |v| {
        bootstrap_on(v, Some(&user("admin")), &pw("guess"))
    });
    let e = r.unwrap_err();
    assert_eq!(e.code(), ErrorCode::AuthenticationFailed, "{e}");
    assert!(matches!(
        on(&mut m, |v| v.service()).unwrap(),
        ServiceStanding::Missing
    ));
}

#[test]
fn a_grant_gives_a_token_the_users_password_unlocks() {
    let mut m = bootstrapped();
    let r = on(&mut m, |v| grant_on(v, &user("alice"), &pw("alice-pw"))).unwrap();
    let Reply::Granted { slot } = r else {
        panic!("{r:?}")
    };
    let slot = keyward_core::SlotId::new(slot).unwrap();
    assert!(on(&mut m, |v| v.opens(slot, &pw("alice-pw"))).unwrap());
}

#[test]
fn a_grant_of_an_account_the_mac_does_not_have_is_a_usage_error() {
    let mut m = bootstrapped();
    let r = on(&mut m, |v| grant_on(v, &user("bob"), &pw("bob-pw")));
    assert_eq!(r.unwrap_err().code(), ErrorCode::Usage);
}

#[test]
fn revoke_is_refused_on_a_mac_and_the_token_stays() {
    let mut m = bootstrapped();
    on(&mut m, |v| grant_on(v, &user("alice"), &pw("alice-pw"))).unwrap();
    let e = on(&mut m, |v| revoke_on(v, &user("alice"))).unwrap_err();
    assert_eq!(e.code(), ErrorCode::Refused);
    assert!(e.to_string().contains("own password"), "{e}");
    let none = on(&mut m, |v| revoke_on(v, &user("admin"))).unwrap_err();
    assert_eq!(
        none.code(),
        ErrorCode::Failed,
        "admin's token is not keyward's: {none}"
    );
}

#[test]
fn repair_is_refused_on_a_mac_with_the_way_out() {
    let mut m = bootstrapped();
    let e = on(&mut m, |v| v.repair_service(&pw("admin-pw"))).unwrap_err();
    assert_eq!(e.code(), ErrorCode::Refused);
    assert!(e.to_string().contains("nothing to repair"), "{e}");
}

#[test]
fn service_rotation_leaves_a_new_keychain_password_that_unlocks() {
    let mut m = bootstrapped();
    let before = m.keys.read(KeychainItem::ServiceCurrent).unwrap().unwrap();
    let r = on(&mut m, service_rotate_on).unwrap();
    assert!(matches!(r, Reply::ServiceRotated { .. }), "{r:?}");
    let after = m.keys.read(KeychainItem::ServiceCurrent).unwrap().unwrap();
    assert!(!after.ct_eq(&before));
    assert!(matches!(
        on(&mut m, |v| v.service()).unwrap(),
        ServiceStanding::Working(..)
    ));
}

#[test]
fn a_recovery_key_is_committed_only_with_its_last_group_typed_back() {
    let mut m = bootstrapped();
    let (slot, key) = on(&mut m, pending_or_new).unwrap();
    let c = m.c.clone();
    let wrong = on(&mut m, |v| {
        commit_pending(&c, v, Some(slot.get()), |k| {
            check_confirm(k, &pw("AAAA")).map(|()| None)
        })
    });
    assert_eq!(wrong.unwrap_err().code(), ErrorCode::Refused);
    let typed = Secret::copy_from(recovery_key::last_group(&key));
    let ok = on(&mut m, |v| {
        commit_pending(&c, v, Some(slot.get()), |k| {
            check_confirm(k, &typed).map(|()| None)
        })
    })
    .unwrap();
    assert_eq!(
        ok,
        Reply::RecoveryCommitted {
            slot: slot.get(),
            retired: Vec::new()
        }
    );
}

/// A login as `name` with `password` on the simulated Mac, by a managed user (uid 501).
fn login_as(m: &mut Mac, name: &str, password: &str) -> crate::vault::VolumeLogin {
    let managed = crate::accounts::Standing::Managed(keyward_core::Uid::new(501).unwrap());
    on(m, |v| v.own_login(&user(name), &managed, &pw(password))).unwrap()
}

fn admin(m: &mut Mac) -> &mut keyward_macos::fake::FakeAccount {
    m.mac
        .accounts
        .iter_mut()
        .find(|a| a.name == "admin")
        .unwrap()
}

fn old_password_findings(m: &mut Mac) -> Vec<keyward_core::ipc::FindingReport> {
    on(m, |v| v.verify())
        .findings
        .into_iter()
        .filter(|f| f.finding == keyward_macos::password_sync::FINDING)
        .collect()
}

#[test]
fn a_login_after_a_reset_finds_filevault_on_the_old_password_until_they_are_in_step_again() {
    let mut m = bootstrapped();
    let done = |l: crate::vault::VolumeLogin| match l {
        crate::vault::VolumeLogin::Done(why) => why,
        other => panic!("{other:?}"),
    };
    // In step: nothing found, nothing recorded.
    let why = done(login_as(&mut m, "admin", "admin-pw"));
    assert!(!why.contains("does not unlock"), "{why}");
    assert!(old_password_findings(&mut m).is_empty());

    // Reset without the old password (dscl . -passwd as root): macOS takes the new one at
    // login, FileVault still the old one. The login says so, and verify keeps saying so.
    admin(&mut m).login_password = Some(b"reset-pw".to_vec());
    let why = done(login_as(&mut m, "admin", "reset-pw"));
    assert!(
        why.contains("does not unlock this user's Secure Token"),
        "{why}"
    );
    let found = old_password_findings(&mut m);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].user.as_deref(), Some("admin"));
    assert_eq!(found[0].kdf, "secure-token", "{found:?}");

    // Changed properly since (the old password re-wrapped the token): the next login finds
    // the two in step and the finding goes.
    admin(&mut m).unlock_password = Some(b"reset-pw".to_vec());
    let why = done(login_as(&mut m, "admin", "reset-pw"));
    assert!(!why.contains("does not unlock"), "{why}");
    assert!(old_password_findings(&mut m).is_empty());
}

#[test]
fn a_backend_error_keeps_its_words_and_gets_the_exit_code_of_its_kind() {
    use crate::error::OpError;
    use keyward_macos::command::Purpose;
    use keyward_macos::MacError;
    let cases = [
        (MacError::WouldStrand, ErrorCode::Refused),
        (MacError::NeedsOwnPassword("x".into()), ErrorCode::Refused),
        (MacError::Unsupported("x"), ErrorCode::Refused),
        (MacError::AccountConflict("x".into()), ErrorCode::Refused),
        (
            MacError::AuthenticationFailed(Purpose::TokenOn),
            ErrorCode::AuthenticationFailed,
        ),
        (MacError::NoServicePassword, ErrorCode::Failed),
    ];
    for (e, code) in cases {
        let words = e.to_string();
        let said = OpError::from(e);
        assert_eq!((said.code(), said.to_string()), (code, words));
    }
}
