//! Every transcribed output through its parser: text decides, never the exit status alone.
#![allow(clippy::unwrap_used)]

use keyward_macos::command::Purpose;
use keyward_macos::fixture::{self, render};
use keyward_macos::parse::fdesetup::FileVaultState;
use keyward_macos::parse::{diskutil, dscl, fdesetup, sysadminctl};
use keyward_macos::runner::{Exit, Output};
use keyward_macos::MacError;

fn fx(name: &str) -> Output {
    render(
        name,
        &[
            ("realname", "Jane Appleseed"),
            ("key", "AU2A-PHMK-WBGX-PWKX-M3X3-VAPY"),
            ("list", ""),
            ("record", ""),
            ("uid", "401"),
            ("name", "_keyward"),
        ],
    )
    .unwrap()
}

#[test]
fn every_fixture_names_its_command_and_source_and_renders() {
    for (name, _) in fixture::ALL {
        let comments = fixture::comments(name).unwrap().join("\n");
        assert!(comments.contains("# command:"), "{name} names no command");
        assert!(comments.contains("# source:"), "{name} cites no source");
        fx(name);
    }
}

#[test]
fn token_status_is_read_from_stderr_and_names_the_real_name() {
    let out = fx("token-status-enabled");
    assert!(
        out.stdout.is_empty(),
        "sysadminctl writes the status to stderr"
    );
    let st = sysadminctl::token_status(&out).unwrap();
    assert!(st.enabled);
    assert_eq!(st.shown_as, "Jane Appleseed");
    assert!(
        !sysadminctl::token_status(&fx("token-status-disabled"))
            .unwrap()
            .enabled
    );
    // Two answers, or none, are not an answer.
    let both = Output::new(
        Exit::Code(0),
        b"",
        b"Secure token is ENABLED for user A\nSecure token is DISABLED for user A\n",
    );
    assert!(matches!(
        sysadminctl::token_status(&both),
        Err(MacError::Unrecognized { .. })
    ));
    let nothing = Output::new(Exit::Code(0), b"", b"");
    assert!(matches!(
        sysadminctl::token_status(&nothing),
        Err(MacError::Unrecognized { .. })
    ));
}

#[test]
fn phantom_successes_exit_zero_and_are_refusals() {
    let not_permitted = fx("token-on-not-permitted");
    assert_eq!(not_permitted.exit, Exit::Code(0));
    assert!(matches!(
        sysadminctl::claimed_change(Purpose::TokenOn, &not_permitted),
        Err(MacError::NeedsTokenUnlock(Purpose::TokenOn))
    ));
    let auth = fx("token-on-auth-failed");
    assert_eq!(auth.exit, Exit::Code(0));
    assert!(matches!(
        sysadminctl::claimed_change(Purpose::TokenOn, &auth),
        Err(MacError::AuthenticationFailed(Purpose::TokenOn))
    ));
    assert!(matches!(
        sysadminctl::claimed_change(Purpose::DeleteUser, &fx("delete-user-auth-failed")),
        Err(MacError::AuthenticationFailed(_))
    ));
    // "Done!" is only a claim.
    let _claim = sysadminctl::claimed_change(Purpose::TokenOn, &fx("token-on-done")).unwrap();
    let _claim = sysadminctl::claimed_change(Purpose::DeleteUser, &fx("delete-user-done")).unwrap();
    // A failing exit without a known refusal is not understood, and quotes nothing.
    let odd = Output::new(Exit::Code(1), b"", b"something new\n");
    match sysadminctl::claimed_change(Purpose::TokenOn, &odd) {
        Err(MacError::Unrecognized { excerpt, .. }) => assert_eq!(excerpt, None),
        other => panic!("{other:?}"),
    }
}

#[test]
fn fdesetup_states_and_answers() {
    assert_eq!(
        fdesetup::status(&fx("fdesetup-status-on")).unwrap(),
        FileVaultState::On
    );
    assert_eq!(
        fdesetup::status(&fx("fdesetup-status-off")).unwrap(),
        FileVaultState::Off
    );
    assert_eq!(
        fdesetup::status(&fx("fdesetup-status-encrypting")).unwrap(),
        FileVaultState::Encrypting
    );
    assert!(fdesetup::has_personal_recovery_key(&fx("fdesetup-has-prk-true")).unwrap());
    assert!(!fdesetup::has_personal_recovery_key(&fx("fdesetup-has-prk-false")).unwrap());
    assert!(fdesetup::validate_recovery(&fx("fdesetup-validaterecovery-true")).unwrap());
    assert!(!fdesetup::validate_recovery(&fx("fdesetup-validaterecovery-false")).unwrap());
    let _claim = fdesetup::remove_recovery(&fx("fdesetup-removerecovery-ok")).unwrap();
}

#[test]
fn fdesetup_list_is_short_name_comma_uuid() {
    let out = render(
        "fdesetup-list",
        &[(
            "list",
            "alice,9DB1DCA0-9B6A-464F-94A3-32853C5E2987\nnot a line\n",
        )],
    )
    .unwrap();
    let list = fdesetup::list(&out).unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].0.as_str(), "alice");
}

#[test]
fn changerecovery_key_comes_from_the_output_plist() {
    let key = fdesetup::change_recovery(&fx("fdesetup-changerecovery-ok")).unwrap();
    assert_eq!(key.expose(), b"AU2A-PHMK-WBGX-PWKX-M3X3-VAPY");
    assert!(matches!(
        fdesetup::change_recovery(&fx("fdesetup-changerecovery-auth-failed")),
        Err(MacError::AuthenticationFailed(Purpose::ChangeRecovery))
    ));
    assert!(matches!(
        fdesetup::change_recovery(&fx("fdesetup-changerecovery-unable")),
        Err(MacError::UnableToChangeKey)
    ));
    assert!(matches!(
        fdesetup::change_recovery(&fx("fdesetup-changerecovery-off")),
        Err(MacError::FileVaultNotOn(_))
    ));
    // A key printed with a failing exit status is still the key the Mac may now have.
    let mut odd = fx("fdesetup-changerecovery-ok");
    odd.exit = Exit::Code(1);
    assert!(fdesetup::change_recovery(&odd).is_ok());
    // Exit 0 without a key is not success, and a malformed key is not a key.
    assert!(fdesetup::change_recovery(&Output::new(Exit::Code(0), b"", b"")).is_err());
    let bad = render("fdesetup-changerecovery-ok", &[("key", "not-a-key")]).unwrap();
    assert!(fdesetup::change_recovery(&bad).is_err());
    // No error ever shows the output of this command (it holds the key).
    let err = fdesetup::change_recovery(&bad).unwrap_err().to_string();
    assert!(!err.contains("not-a-key"));
}

#[test]
fn dscl_reads_lists_and_refusals() {
    let out = render(
        "dscl-read",
        &[("record", "AuthenticationAuthority: ;ShadowHash;HASHLIST:<SALTED-SHA512-PBKDF2> ;DisabledTags;SecureToken\nGeneratedUID: 2DB09770-999B-43FB-99AF-2B878E4FE971\nIsHidden: 1\nUniqueID:\n 499\n")],
    )
    .unwrap();
    let rec = dscl::read_account(&out).unwrap().unwrap();
    assert_eq!(rec.unique_id.map(|u| u.get()), Some(499));
    assert!(rec.hidden && rec.token_disabled_tag());
    assert_eq!(
        rec.generated_uid.unwrap().as_str(),
        "2DB09770-999B-43FB-99AF-2B878E4FE971"
    );
    assert_eq!(
        dscl::read_account(&fx("dscl-read-not-found")).unwrap(),
        None
    );
    let list = render(
        "dscl-list",
        &[("list", "_amavisd 83\nnobody -2\nalice 502\n-bad 7\n")],
    )
    .unwrap();
    let ids = dscl::list_unique_ids(&list).unwrap();
    assert_eq!(
        ids.iter()
            .map(|(n, u)| (n.as_str(), u.get()))
            .collect::<Vec<_>>(),
        [("_amavisd", 83), ("nobody", -2), ("alice", 502)]
    );
    let _claim = dscl::write(&fx("dscl-write-ok")).unwrap();
    assert!(matches!(
        dscl::write(&fx("dscl-write-permission")),
        Err(MacError::Unrecognized {
            excerpt: Some(_),
            ..
        })
    ));
}

#[test]
fn interactive_passwd_failures_are_text_with_exit_zero() {
    let out = fx("dscl-passwd-auth-failed");
    assert_eq!(out.exit, Exit::Code(0));
    assert!(matches!(
        dscl::passwd(Purpose::ChangePassword, &out),
        Err(MacError::AuthenticationFailed(_))
    ));
    let _claim = dscl::passwd(Purpose::ChangePassword, &fx("dscl-passwd-ok")).unwrap();
    let odd = Output::new(Exit::Code(0), b"", b"passwd: Invalid Path\n");
    match dscl::passwd(Purpose::ChangePassword, &odd) {
        Err(MacError::Unrecognized { excerpt, .. }) => {
            assert_eq!(excerpt, None, "stdin had passwords")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn diskutil_verify() {
    assert!(diskutil::verify(&fx("diskutil-verify-ok")).unwrap());
    assert!(!diskutil::verify(&fx("diskutil-verify-incorrect")).unwrap());
    // The text wins over a zero exit.
    let mut phantom = fx("diskutil-verify-incorrect");
    phantom.exit = Exit::Code(0);
    assert!(!diskutil::verify(&phantom).unwrap());
    let odd = Output::new(Exit::Code(1), b"", b"Error: -69808\n");
    assert!(diskutil::verify(&odd).is_err());
}
