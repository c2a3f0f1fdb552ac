//! The transcribed outputs in `fixtures/`, compiled in, and their tiny format: `#` comment lines
//! (command and source), `exit N`, `--- stdout`, `--- stderr`. `{name}` placeholders are filled
//! before the sections are split, so a placeholder may stand for several lines.

use crate::runner::{Exit, Output};

macro_rules! fixtures {
    ($($name:literal),* $(,)?) => {
        /// Every fixture, by name (file name without `.out`).
        pub const ALL: &[(&str, &str)] = &[
            $(($name, include_str!(concat!("../fixtures/", $name, ".out"))),)*
        ];
    };
}

fixtures!(
    "token-status-enabled",
    "token-status-disabled",
    "token-on-done",
    "token-on-not-permitted",
    "token-on-auth-failed",
    "token-off-done",
    "delete-user-done",
    "delete-user-auth-failed",
    "fdesetup-status-on",
    "fdesetup-status-off",
    "fdesetup-status-encrypting",
    "fdesetup-list",
    "fdesetup-has-prk-true",
    "fdesetup-has-prk-false",
    "fdesetup-changerecovery-ok",
    "fdesetup-changerecovery-auth-failed",
    "fdesetup-changerecovery-unable",
    "fdesetup-changerecovery-off",
    "fdesetup-validaterecovery-true",
    "fdesetup-validaterecovery-false",
    "fdesetup-removerecovery-ok",
    "dscl-list",
    "dscl-read",
    "dscl-read-not-found",
    "dscl-write-ok",
    "dscl-write-permission",
    "dscl-passwd-ok",
    "dscl-passwd-auth-failed",
    "diskutil-verify-ok",
    "diskutil-verify-incorrect",
    "security-authdb-read",
    "security-authdb-write-ok",
    "security-authdb-write-denied",
    "security-authdb-write-unreadable",
);

/// The `system.login.console` rights in `fixtures/authdb/` (transcribed, not recorded; see the
/// README there), by file name: what `security authorizationdb read` prints.
pub const LOGIN_RIGHTS: &[(&str, &[u8])] = &[
    (
        "login-console-macos14.plist",
        include_bytes!("../fixtures/authdb/login-console-macos14.plist"),
    ),
    (
        "login-console-macos14-crypt.plist",
        include_bytes!("../fixtures/authdb/login-console-macos14-crypt.plist"),
    ),
    (
        "login-console-macos10.10-fv2authplugin.plist",
        include_bytes!("../fixtures/authdb/login-console-macos10.10-fv2authplugin.plist"),
    ),
    (
        "login-console-third-party-at-the-spot.plist",
        include_bytes!("../fixtures/authdb/login-console-third-party-at-the-spot.plist"),
    ),
];

/// One of [`LOGIN_RIGHTS`], by file name.
pub fn login_right(name: &str) -> Result<&'static [u8], FixtureError> {
    LOGIN_RIGHTS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, r)| *r)
        .ok_or_else(|| FixtureError {
            name: name.to_owned(),
            reason: "no such right",
        })
}

/// Why a fixture could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("fixture {name}: {reason}")]
pub struct FixtureError {
    /// Which.
    pub name: String,
    /// What is wrong.
    pub reason: &'static str,
}

/// The raw text of a fixture.
pub fn text(name: &str) -> Result<&'static str, FixtureError> {
    ALL.iter()
        .find(|(n, _)| *n == name)
        .map(|(_, t)| *t)
        .ok_or_else(|| FixtureError {
            name: name.to_owned(),
            reason: "no such fixture",
        })
}

/// The source comment lines of a fixture.
pub fn comments(name: &str) -> Result<Vec<&'static str>, FixtureError> {
    Ok(text(name)?
        .lines()
        .take_while(|l| l.starts_with('#'))
        .collect())
}

/// A fixture as a command's output, with `{key}` placeholders replaced by values.
pub fn render(name: &str, vars: &[(&str, &str)]) -> Result<Output, FixtureError> {
    let err = |reason| FixtureError {
        name: name.to_owned(),
        reason,
    };
    let mut body = text(name)?.to_owned();
    for (k, v) in vars {
        body = body.replace(&format!("{{{k}}}"), v);
    }
    let mut exit = None;
    let (mut stdout, mut stderr) = (String::new(), String::new());
    let mut section = 0;
    for line in body.lines() {
        match (section, line) {
            (0, l) if l.starts_with('#') => {}
            (0, l) if l.starts_with("exit ") => {
                exit = l[5..].trim().parse().ok().map(Exit::Code);
            }
            (0, "--- stdout") => section = 1,
            (1, "--- stderr") => section = 2,
            (1, l) => {
                stdout.push_str(l);
                stdout.push('\n');
            }
            (2, l) => {
                stderr.push_str(l);
                stderr.push('\n');
            }
            _ => return Err(err("unexpected line")),
        }
    }
    if section != 2 {
        return Err(err("missing --- stdout / --- stderr"));
    }
    let exit = exit.ok_or_else(|| err("missing exit line"))?;
    Ok(Output::new(exit, stdout.as_bytes(), stderr.as_bytes()))
}
