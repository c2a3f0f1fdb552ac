//! The authorizationdb edit against transcribed `system.login.console` rights
//! (fixtures/authdb/, see the README there): keyward's mechanism lands right after
//! `builtin:authenticate,privileged`, once; everything else is kept; uninstall restores the
//! right; rights keyward does not understand are refused. And the install/uninstall round
//! through a runner that plays `security authorizationdb`.
#![allow(clippy::unwrap_used)]

use keyward_macos::authdb::{install_login_capture, uninstall_login_capture, LoginRightChange};
use keyward_macos::command::{Invocation, Program, Purpose};
use keyward_macos::login_right::{
    insert_capture, mechanisms, remove_capture, Edit, LoginRightError, AUTHENTICATE, CAPTURE,
};
use keyward_macos::runner::{Exit, Output, RunError, Runner};
use keyward_macos::MacError;
use plist::Value;

fn fixture(name: &str) -> Vec<u8> {
    keyward_macos::fixture::login_right(name).unwrap().to_vec()
}

fn changed(e: Edit) -> (Vec<u8>, Option<String>) {
    match e {
        Edit::Changed { plist, kept_after } => (plist, kept_after),
        other => panic!("expected a change, got {other:?}"),
    }
}

fn value(xml: &[u8]) -> Value {
    Value::from_reader_xml(xml).unwrap()
}

#[test]
fn install_puts_capture_right_after_authenticate_and_keeps_everything_else() {
    for (name, _) in keyward_macos::fixture::LOGIN_RIGHTS {
        let original = fixture(name);
        let before = mechanisms(&original).unwrap();
        let (edited, kept_after) = changed(insert_capture(&original).unwrap());
        let after = mechanisms(&edited).unwrap();
        let at = before.iter().position(|m| m == AUTHENTICATE).unwrap();
        let mut expected = before.clone();
        expected.insert(at + 1, CAPTURE.to_owned());
        assert_eq!(after, expected, "{name}");
        assert_eq!(kept_after.as_ref(), before.get(at + 1), "{name}");
        // Every other key and value exactly as it was (reals included).
        let (mut a, b) = (value(&original), value(&edited));
        let dict = a.as_dictionary_mut().unwrap();
        dict.insert(
            "mechanisms".into(),
            Value::Array(after.iter().cloned().map(Value::String).collect()),
        );
        assert_eq!(a, b, "{name}");
    }
}

#[test]
fn a_third_party_mechanism_at_the_spot_is_kept_and_named() {
    let (edited, kept_after) =
        changed(insert_capture(&fixture("login-console-third-party-at-the-spot.plist")).unwrap());
    assert_eq!(kept_after.as_deref(), Some("ExampleVendor:sync,privileged"));
    let m = mechanisms(&edited).unwrap();
    let at = m.iter().position(|x| x == CAPTURE).unwrap();
    assert_eq!(m[at - 1], AUTHENTICATE);
    assert_eq!(m[at + 1], "ExampleVendor:sync,privileged");
}

#[test]
fn install_is_idempotent_and_uninstall_restores_the_right() {
    for (name, _) in keyward_macos::fixture::LOGIN_RIGHTS {
        let original = fixture(name);
        let (edited, _) = changed(insert_capture(&original).unwrap());
        assert_eq!(insert_capture(&edited).unwrap(), Edit::Unchanged, "{name}");
        let (restored, _) = changed(remove_capture(&edited).unwrap());
        assert_eq!(
            String::from_utf8_lossy(&restored),
            String::from_utf8_lossy(&original),
            "{name}: byte for byte"
        );
        // One line more than the original, nothing else changed.
        assert_eq!(
            String::from_utf8(edited).unwrap().lines().count(),
            String::from_utf8(original.clone()).unwrap().lines().count() + 1,
            "{name}"
        );
        assert_eq!(
            remove_capture(&original).unwrap(),
            Edit::Unchanged,
            "{name}"
        );
    }
}

#[test]
fn security_s_status_line_after_the_plist_is_tolerated() {
    let mut out = fixture("login-console-macos14.plist");
    out.extend_from_slice(b"YES (0)\n");
    assert!(matches!(insert_capture(&out), Ok(Edit::Changed { .. })));
}

/// The stock right with its mechanisms (or another key) changed.
fn variant(edit: impl FnOnce(&mut plist::Dictionary)) -> Vec<u8> {
    let mut v = value(&fixture("login-console-macos14.plist"));
    edit(v.as_dictionary_mut().unwrap());
    let mut out = Vec::new();
    v.to_writer_xml(&mut out).unwrap();
    out
}

fn with_mechanisms(names: &[&str]) -> Vec<u8> {
    variant(|d| {
        d.insert(
            "mechanisms".into(),
            Value::Array(names.iter().map(|n| Value::String((*n).into())).collect()),
        );
    })
}

/// Whether a refusal is the one expected.
type IsExpected = fn(&LoginRightError) -> bool;

#[test]
fn rights_keyward_does_not_understand_are_refused() {
    let cases: Vec<(Vec<u8>, IsExpected)> = vec![
        (b"not a plist".to_vec(), |e| {
            matches!(e, LoginRightError::NotAPlist(_))
        }),
        (
            variant(|d| {
                d.remove("mechanisms");
            }),
            |e| matches!(e, LoginRightError::NoMechanisms),
        ),
        (
            variant(|d| {
                d.insert("class".into(), Value::String("rule".into()));
            }),
            |e| matches!(e, LoginRightError::NotMechanismBased(Some(_))),
        ),
        (
            with_mechanisms(&["loginwindow:login", "loginwindow:done"]),
            |e| matches!(e, LoginRightError::NoAuthenticate),
        ),
        (
            with_mechanisms(&[AUTHENTICATE, "loginwindow:success", AUTHENTICATE]),
            |e| matches!(e, LoginRightError::ManyAuthenticate(2)),
        ),
        (
            variant(|d| {
                d.insert(
                    "mechanisms".into(),
                    Value::Array(vec![
                        Value::String(AUTHENTICATE.into()),
                        Value::Integer(1.into()),
                    ]),
                );
            }),
            |e| matches!(e, LoginRightError::NonStringMechanism),
        ),
        // keyward's mechanism moved before authentication (it would see unchecked passwords).
        (
            with_mechanisms(&[
                "loginwindow:login",
                CAPTURE,
                AUTHENTICATE,
                "loginwindow:done",
            ]),
            |e| {
                matches!(
                    e,
                    LoginRightError::UnexpectedKeywardMechanism { position: 1, .. }
                )
            },
        ),
        // Unprivileged, or another keyward mechanism.
        (
            with_mechanisms(&[AUTHENTICATE, "keyward:capture", "loginwindow:done"]),
            |e| matches!(e, LoginRightError::UnexpectedKeywardMechanism { .. }),
        ),
    ];
    for (xml, expected) in cases {
        let e = insert_capture(&xml).expect_err("refused");
        assert!(expected(&e), "{e}");
        assert!(!e.to_string().is_empty());
    }
    // Uninstall refuses the same foreign keyward entries rather than guess.
    let e = remove_capture(&with_mechanisms(&[AUTHENTICATE, "keyward:capture"])).unwrap_err();
    assert!(
        matches!(e, LoginRightError::UnexpectedKeywardMechanism { .. }),
        "{e}"
    );
}

/// `security authorizationdb` with the right in memory; `lose_writes` plays a write that says
/// YES and changes nothing.
struct FakeAuthDb {
    right: Vec<u8>,
    calls: Vec<(Purpose, Vec<String>)>,
    lose_writes: bool,
}

impl Runner for FakeAuthDb {
    fn run(&mut self, inv: &Invocation) -> Result<Output, RunError> {
        assert_eq!(inv.program, Program::Security);
        assert_eq!(inv.program.path(), "/usr/bin/security");
        assert!(!inv.has_secret_stdin());
        let argv: Vec<String> = inv.argv().iter().map(|s| s.to_string()).collect();
        self.calls.push((inv.purpose, argv.clone()));
        match inv.purpose {
            Purpose::ReadLoginRight => {
                assert_eq!(argv, ["authorizationdb", "read", "system.login.console"]);
                Ok(Output::new(Exit::Code(0), &self.right, b"YES (0)\n"))
            }
            Purpose::WriteLoginRight => {
                assert_eq!(argv, ["authorizationdb", "write", "system.login.console"]);
                if !self.lose_writes {
                    self.right = inv.stdin.bytes().to_vec();
                }
                Ok(Output::new(Exit::Code(0), b"", b"YES (0)\n"))
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[test]
fn install_and_uninstall_through_security_authorizationdb() {
    let original = fixture("login-console-macos14.plist");
    let mut db = FakeAuthDb {
        right: original.clone(),
        calls: Vec::new(),
        lose_writes: false,
    };
    assert_eq!(
        install_login_capture(&mut db).unwrap(),
        LoginRightChange::Written {
            kept_after: Some("PKINITMechanism:auth,privileged".into())
        }
    );
    assert!(mechanisms(&db.right).unwrap().contains(&CAPTURE.to_owned()));
    let purposes: Vec<Purpose> = db.calls.iter().map(|c| c.0).collect();
    assert_eq!(
        purposes,
        [
            Purpose::ReadLoginRight,
            Purpose::WriteLoginRight,
            Purpose::ReadLoginRight
        ]
    );
    assert_eq!(
        install_login_capture(&mut db).unwrap(),
        LoginRightChange::Unchanged
    );
    assert!(matches!(
        uninstall_login_capture(&mut db).unwrap(),
        LoginRightChange::Written { .. }
    ));
    assert_eq!(value(&db.right), value(&original));
    assert_eq!(
        uninstall_login_capture(&mut db).unwrap(),
        LoginRightChange::Unchanged
    );
}

#[test]
fn a_write_that_says_yes_and_changes_nothing_is_caught() {
    let mut db = FakeAuthDb {
        right: fixture("login-console-macos14.plist"),
        calls: Vec::new(),
        lose_writes: true,
    };
    let e = install_login_capture(&mut db).unwrap_err();
    assert!(matches!(e, MacError::PhantomSuccess { .. }), "{e}");
}

#[test]
fn a_right_keyward_does_not_understand_is_never_written() {
    let mut db = FakeAuthDb {
        right: with_mechanisms(&["loginwindow:login", "loginwindow:done"]),
        calls: Vec::new(),
        lose_writes: false,
    };
    let e = install_login_capture(&mut db).unwrap_err();
    assert!(
        matches!(e, MacError::LoginRight(LoginRightError::NoAuthenticate)),
        "{e}"
    );
    assert_eq!(db.calls.len(), 1, "only the read");
}

#[test]
fn a_right_on_one_line_is_edited_in_place_and_restored() {
    let compact = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<plist version=\"1.0\"><dict><key>class</key><string>evaluate-mechanisms</string><key>mechanisms</key><array><string>{AUTHENTICATE}</string><string>loginwindow:done</string></array></dict></plist>"
    );
    let (edited, _) = changed(insert_capture(compact.as_bytes()).unwrap());
    assert_eq!(
        String::from_utf8(edited.clone()).unwrap(),
        compact.replace(
            &format!("<string>{AUTHENTICATE}</string>"),
            &format!("<string>{AUTHENTICATE}</string><string>{CAPTURE}</string>")
        )
    );
    let (restored, _) = changed(remove_capture(&edited).unwrap());
    assert_eq!(restored, compact.as_bytes());
}

#[test]
fn a_mechanism_spelled_twice_in_the_text_is_refused() {
    let stock = String::from_utf8(fixture("login-console-macos14.plist")).unwrap();
    let quoted = stock.replace(
        "<dict>",
        &format!("<!-- <string>{AUTHENTICATE}</string> -->\n<dict>"),
    );
    assert_eq!(
        insert_capture(quoted.as_bytes()).unwrap_err(),
        LoginRightError::NotPlainText(AUTHENTICATE)
    );
    let (installed, _) = changed(insert_capture(stock.as_bytes()).unwrap());
    let twice = String::from_utf8(installed).unwrap().replace(
        "<dict>",
        &format!("<!-- <string>{CAPTURE}</string> -->\n<dict>"),
    );
    assert_eq!(
        remove_capture(twice.as_bytes()).unwrap_err(),
        LoginRightError::NotPlainText(CAPTURE)
    );
}

/// `security` saying `NO (status)` is a failure even with exit status 0 (Apple's source exits
/// non-zero then, but the verdict line is what it promises to print).
struct RefusingAuthDb {
    right: Vec<u8>,
    writes: usize,
}

impl Runner for RefusingAuthDb {
    fn run(&mut self, inv: &Invocation) -> Result<Output, RunError> {
        match inv.purpose {
            Purpose::ReadLoginRight => Ok(Output::new(Exit::Code(0), &self.right, b"YES (0)\n")),
            Purpose::WriteLoginRight => {
                self.writes += 1;
                Ok(Output::new(Exit::Code(0), b"", b"NO (-60005)\n"))
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[test]
fn a_no_verdict_is_a_failure_whatever_the_exit_status() {
    let original = fixture("login-console-macos14.plist");
    let mut db = RefusingAuthDb {
        right: original.clone(),
        writes: 0,
    };
    let e = install_login_capture(&mut db).unwrap_err();
    assert!(
        matches!(
            &e,
            MacError::LoginRightNotWritten {
                unchanged: Some(true),
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("NO (-60005)"), "{e}");
    assert_eq!(db.writes, 1);
    assert_eq!(db.right, original);
}
