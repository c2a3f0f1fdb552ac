//! The CLI contract's surface: every command of DESIGN.md section 8 exists, usage errors exit 2,
//! and the man page and shell completions are generated from the same definitions.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;

use common::bin;

fn keyward(args: &[&str]) -> std::process::Output {
    Command::new(bin("keyward"))
        .args(args)
        .env_remove("KEYWARD_CONFIG")
        .output()
        .unwrap()
}

#[test]
fn every_contract_command_exists() {
    let help = String::from_utf8(keyward(&["--help"]).stdout).unwrap();
    for c in [
        "install",
        "uninstall",
        "bootstrap",
        "status",
        "grant",
        "revoke",
        "verify",
        "audit",
    ] {
        assert!(help.contains(&format!("  {c} ")), "{c} missing from --help");
    }
    assert!(!help.contains("generate"), "packaging helper stays hidden");
}

#[test]
fn usage_errors_exit_2_and_never_take_secrets_from_argv() {
    assert_eq!(keyward(&["grant"]).status.code(), Some(2));
    assert_eq!(keyward(&["frobnicate"]).status.code(), Some(2));
    // There is no option that takes a passphrase value.
    let out = keyward(&["grant", "data", "daemon", "--passphrase", "hunter2"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn man_page_and_completions_are_generated() {
    let man = String::from_utf8(keyward(&["generate", "man"]).stdout).unwrap();
    assert!(man.contains(".TH keyward 1"));
    for c in ["bootstrap", "grant", "revoke", "audit"] {
        assert!(man.contains(c), "{c} missing from the man page");
    }
    for shell in ["bash", "zsh", "fish"] {
        let out = keyward(&["generate", shell]);
        assert!(out.status.success());
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("bootstrap"),
            "{shell}"
        );
    }
    assert_eq!(keyward(&["generate", "powershell"]).status.code(), Some(2));
}
