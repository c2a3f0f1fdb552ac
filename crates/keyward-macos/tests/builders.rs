//! The typed command builders: exact argv, operands that cannot be options, and no secret ever
//! in argv — every secret reaches the tool on stdin.
#![allow(clippy::unwrap_used)]

mod common;

use keyward_core::Secret;
use keyward_macos::build::dscl::ServiceAttr;
use keyward_macos::build::{diskutil, dscl, fdesetup, sysadminctl};
use keyward_macos::command::{Invocation, Program};
use keyward_macos::names::{GeneratedUid, ServiceUid, VolumeOperand};
use keyward_macos::MacError;

use common::{name, secret};

const S1: &str = "first-Secret-1";
const S2: &str = "second-Secret-2";

/// One invocation of every builder, with distinct secrets wherever one is taken.
fn every_invocation() -> Vec<Invocation> {
    let (u, a) = (name("alice"), name("_keyward"));
    let (s1, s2) = (secret(S1), secret(S2));
    let uid = ServiceUid::new(499).unwrap();
    let uuid = GeneratedUid::parse("9DB1DCA0-9B6A-464F-94A3-32853C5E2987").unwrap();
    let mut all = vec![
        sysadminctl::token_status(&u),
        sysadminctl::token_on(&u, &s1, &a, &s2).unwrap(),
        sysadminctl::token_off(&u, &s1, &a, &s2).unwrap(),
        sysadminctl::delete_user(&a, &a, &s1).unwrap(),
        fdesetup::status(),
        fdesetup::list(),
        fdesetup::has_personal_recovery_key(),
        fdesetup::change_recovery(&s1).unwrap(),
        fdesetup::validate_recovery(&s2).unwrap(),
        fdesetup::remove_recovery(&s1).unwrap(),
        dscl::list_unique_ids(),
        dscl::list_generated_uids(),
        dscl::read_account(&a),
        dscl::read_group(&a),
        dscl::create_account(&a),
        dscl::remove_token_disabled_tag(&a),
        dscl::restore_token_disabled_tag(&a),
        dscl::add_to_admin_group(&a),
        dscl::delete_group(&a),
        dscl::change_password(&a, &s1, &s2).unwrap(),
        dscl::set_initial_password(&a, &s2).unwrap(),
        diskutil::verify_unlock(&VolumeOperand::default(), &uuid, &s1),
    ];
    for attr in [
        ServiceAttr::UniqueId(uid),
        ServiceAttr::PrimaryGroupId(uid),
        ServiceAttr::NoShell,
        ServiceAttr::NoHome,
        ServiceAttr::RealName,
        ServiceAttr::Hidden,
        ServiceAttr::TokenDisabledTag,
    ] {
        all.push(dscl::set_attr(&a, attr));
    }
    all.extend(dscl::create_group(&a, uid));
    all
}

#[test]
fn no_builder_ever_puts_a_secret_in_argv() {
    let all = every_invocation();
    assert!(all.len() >= 30);
    let mut with_stdin = 0;
    for inv in &all {
        for arg in inv.argv() {
            assert!(
                !arg.contains(S1) && !arg.contains(S2),
                "secret in {}",
                inv.display()
            );
        }
        assert!(!inv.display().contains(S1) && !inv.display().contains(S2));
        assert!(!format!("{inv:?}").contains(S1), "Debug shows a secret");
        let stdin = String::from_utf8_lossy(inv.stdin.bytes()).into_owned();
        if inv.has_secret_stdin() {
            with_stdin += 1;
            assert!(
                stdin.contains(S1) || stdin.contains(S2),
                "{}",
                inv.display()
            );
        } else {
            assert!(stdin.is_empty());
        }
    }
    assert_eq!(with_stdin, 9);
}

#[test]
fn operands_never_start_with_a_dash_and_paths_are_absolute() {
    for inv in every_invocation() {
        for arg in &inv.args {
            if arg.is_operand() {
                assert!(!arg.as_str().starts_with('-'), "{}", inv.display());
            }
        }
        assert!(inv.program.path().starts_with('/'));
    }
}

#[test]
fn argv_is_exactly_what_the_tools_document() {
    let (u, a) = (name("alice"), name("_keyward"));
    let s = secret(S1);
    let cases: Vec<(Invocation, Program, &[&str])> = vec![
        (
            sysadminctl::token_status(&u),
            Program::Sysadminctl,
            &["-secureTokenStatus", "alice"],
        ),
        (
            sysadminctl::token_on(&u, &s, &a, &s).unwrap(),
            Program::Sysadminctl,
            &[
                "-secureTokenOn",
                "alice",
                "-password",
                "-",
                "-adminUser",
                "_keyward",
                "-adminPassword",
                "-",
            ],
        ),
        (
            sysadminctl::token_off(&u, &s, &a, &s).unwrap(),
            Program::Sysadminctl,
            &[
                "-secureTokenOff",
                "alice",
                "-password",
                "-",
                "-adminUser",
                "_keyward",
                "-adminPassword",
                "-",
            ],
        ),
        (
            sysadminctl::delete_user(&a, &a, &s).unwrap(),
            Program::Sysadminctl,
            &[
                "-deleteUser",
                "_keyward",
                "-keepHome",
                "-adminUser",
                "_keyward",
                "-adminPassword",
                "-",
            ],
        ),
        (fdesetup::status(), Program::Fdesetup, &["status"]),
        (fdesetup::list(), Program::Fdesetup, &["list"]),
        (
            fdesetup::change_recovery(&s).unwrap(),
            Program::Fdesetup,
            &["changerecovery", "-personal", "-inputplist", "-outputplist"],
        ),
        (
            fdesetup::validate_recovery(&s).unwrap(),
            Program::Fdesetup,
            &["validaterecovery", "-inputplist"],
        ),
        (
            dscl::list_unique_ids(),
            Program::Dscl,
            &[".", "-list", "/Users", "UniqueID"],
        ),
        (
            dscl::set_attr(&a, ServiceAttr::TokenDisabledTag),
            Program::Dscl,
            &[
                ".",
                "-create",
                "/Users/_keyward",
                "AuthenticationAuthority",
                ";DisabledTags;SecureToken",
            ],
        ),
        (
            dscl::set_attr(&a, ServiceAttr::Hidden),
            Program::Dscl,
            &[".", "-create", "/Users/_keyward", "IsHidden", "1"],
        ),
        (
            dscl::set_attr(&a, ServiceAttr::UniqueId(ServiceUid::new(499).unwrap())),
            Program::Dscl,
            &[".", "-create", "/Users/_keyward", "UniqueID", "499"],
        ),
        (
            dscl::add_to_admin_group(&a),
            Program::Dscl,
            &[
                ".",
                "-append",
                "/Groups/admin",
                "GroupMembership",
                "_keyward",
            ],
        ),
        (
            dscl::change_password(&a, &s, &s).unwrap(),
            Program::Dscl,
            &["-q", "."],
        ),
        (
            diskutil::verify_unlock(
                &VolumeOperand::default(),
                &GeneratedUid::parse("9DB1DCA0-9B6A-464F-94A3-32853C5E2987").unwrap(),
                &s,
            ),
            Program::Diskutil,
            &[
                "apfs",
                "unlockVolume",
                "/",
                "-verify",
                "-user",
                "9DB1DCA0-9B6A-464F-94A3-32853C5E2987",
                "-stdinpassphrase",
            ],
        ),
    ];
    for (inv, program, argv) in cases {
        assert_eq!(inv.program, program);
        assert_eq!(inv.argv(), argv);
    }
}

#[test]
fn prompt_answers_are_one_line_each_in_argv_order() {
    let inv = sysadminctl::token_on(
        &name("alice"),
        &secret("user pw"),
        &name("admin"),
        &secret("admin pw"),
    )
    .unwrap();
    assert_eq!(inv.stdin.bytes(), b"user pw\nadmin pw\n");
    let bad = sysadminctl::token_on(
        &name("alice"),
        &secret("two\nlines"),
        &name("admin"),
        &secret("x"),
    );
    assert!(matches!(bad, Err(MacError::PasswordNotRepresentable(_))));
}

#[test]
fn input_plists_carry_the_password_and_parse() {
    let inv = fdesetup::change_recovery(&secret("p<&>\"w")).unwrap();
    let v = plist::Value::from_reader_xml(inv.stdin.bytes()).unwrap();
    let d = v.as_dictionary().unwrap();
    assert_eq!(
        d.get("Password").and_then(plist::Value::as_string),
        Some("p<&>\"w")
    );
    assert_eq!(d.len(), 1);
    let not_utf8 = fdesetup::validate_recovery(&Secret::copy_from(&[0xff, 0xfe]));
    assert!(matches!(
        not_utf8,
        Err(MacError::PasswordNotRepresentable(_))
    ));
}

#[test]
fn interactive_dscl_lines_refuse_words_they_cannot_carry() {
    let inv = dscl::change_password(&name("_keyward"), &secret("old"), &secret("new")).unwrap();
    assert_eq!(inv.stdin.bytes(), b"passwd /Users/_keyward old new\n");
    for bad in ["has space", "quo\"te", "back\\slash", "", "ünï"] {
        let r = dscl::change_password(&name("alice"), &secret("old"), &secret(bad));
        assert!(
            matches!(r, Err(MacError::PasswordNotRepresentable(_))),
            "{bad:?}"
        );
    }
}

#[test]
fn diskutil_gets_the_passphrase_without_a_newline() {
    let uuid = GeneratedUid::parse("9DB1DCA0-9B6A-464F-94A3-32853C5E2987").unwrap();
    let inv = diskutil::verify_unlock(&VolumeOperand::default(), &uuid, &secret("pw"));
    assert_eq!(inv.stdin.bytes(), b"pw");
}
