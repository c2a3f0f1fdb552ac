//! The agent's allow-list, tried for real: every request the agent class may not make is sent
//! from the service user's uid (`nobody` here) to the real helper — a plaintext recovery key,
//! SetDevice, Release, Bootstrap (with a passphrase that works), Grant, Revoke, the PAM
//! requests, service rotation and repair, recovery abort — and each is refused (exit 4) before
//! anything happens: the LUKS2 header is byte-for-byte the same, no key comes back, and every
//! refusal is in the audit log as the agent's.
//!
//! A request must come from another uid, which a test thread cannot take, so this file has its
//! own `main` (`harness = false`): run with `KW_AGENT_SEND=N`, it is the sender, started
//! through `setpriv` as `nobody`; otherwise it is the test, and prints libtest's summary line.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;

use common::*;
use keyward_core::ipc::{Reply, Request, WireSecret};
use keyward_core::{Secret, UserName, VolumeName};

fn wire(s: &str) -> WireSecret {
    WireSecret::from_secret(&Secret::from_vec(s.as_bytes().to_vec()))
}

/// Every request the agent class must not make, by name.
fn forbidden() -> Vec<(&'static str, Request)> {
    let volume = || VolumeName::parse("data").unwrap();
    let user = || UserName::parse("daemon").unwrap();
    vec![
        ("recovery-show", Request::RecoveryBegin { volume: volume() }),
        (
            "recovery-confirm",
            Request::RecoveryCommit {
                volume: volume(),
                slot: 31,
                confirm: wire("abcdefgh"),
            },
        ),
        (
            "recovery-abort",
            Request::RecoveryAbort { volume: volume() },
        ),
        (
            "set-device",
            Request::SetDevice {
                device_id: "stolen-id".into(),
            },
        ),
        (
            "uninstall",
            Request::Release {
                volume: volume(),
                dry_run: false,
            },
        ),
        (
            "bootstrap",
            Request::Bootstrap {
                volume: volume(),
                passphrase: wire(INSTALL_PASS),
            },
        ),
        (
            "bootstrap",
            Request::BootstrapFrom {
                volume: volume(),
                holder: user(),
                passphrase: wire(INSTALL_PASS),
            },
        ),
        (
            "grant",
            Request::Grant {
                volume: volume(),
                user: user(),
                passphrase: wire("agent's choice"),
            },
        ),
        (
            "revoke",
            Request::Revoke {
                volume: volume(),
                user: user(),
            },
        ),
        (
            "login-capture",
            Request::LoginCapture {
                user: user(),
                password: wire("agent's choice"),
            },
        ),
        (
            "password-change",
            Request::PasswordChange {
                user: user(),
                new: wire("agent's choice"),
                old: None,
            },
        ),
        (
            "service-rotate",
            Request::ServiceRotate { volume: volume() },
        ),
        (
            "service-repair",
            Request::ServiceRepair {
                volume: volume(),
                passphrase: wire(INSTALL_PASS),
            },
        ),
    ]
}

/// The sender: one request, its outcome on stdout (`ok …` or `error CODE …`).
fn send(index: usize, socket: &str) {
    let (_, req) = forbidden().into_iter().nth(index).unwrap();
    match keyward_sys::helper_client::call(std::path::Path::new(socket), req) {
        Ok(reply) => println!("ok {}", reply_kind(&reply)),
        Err(e) => println!("error {} {}", e.code, e.message),
    }
}

fn reply_kind(r: &Reply) -> String {
    // Never print a secret a reply might carry: only its kind.
    format!("{r:?}")
        .chars()
        .take_while(|c| c.is_alphanumeric())
        .collect()
}

fn test() {
    let inst = Instance::prepare().start();
    inst.bootstrap();
    let header = std::fs::read(&inst.image).unwrap();
    let state = |inst: &Instance| {
        let mut names: Vec<String> = walk(&inst.path("state"));
        names.sort();
        names
    };
    let files = state(&inst);
    let exe = std::env::current_exe().unwrap();
    for (i, (op, _)) in forbidden().iter().enumerate() {
        let out = run(
            Command::new("setpriv")
                .args([
                    format!("--reuid={NOBODY}"),
                    format!("--regid={NOBODY}"),
                    "--clear-groups".into(),
                ])
                .arg(&exe)
                .env("KW_AGENT_SEND", i.to_string())
                .env("KW_AGENT_SOCKET", inst.socket()),
            b"",
        );
        let said = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{op}: sender failed: {}",
            stderr(&out)
        );
        assert!(
            said.starts_with("error 4 ") && said.contains("not allowed for the agent class"),
            "{op}: the agent was not refused: {said}"
        );
        assert_eq!(
            std::fs::read(&inst.image).unwrap(),
            header,
            "{op}: the header changed"
        );
        assert_eq!(state(&inst), files, "{op}: the helper's state changed");
        let audit = inst.audit_lines();
        let last = audit.last().unwrap();
        assert!(
            last.contains("\"caller\":\"agent\"")
                && last.contains(&format!("\"op\":\"{op}\""))
                && last.contains("Refused"),
            "{op}: not audited as the agent's refusal: {last}"
        );
    }
    // The helper still serves root, and the agent what it may do.
    assert_eq!(code(&inst.keyward(&["status"], b"")), Some(0));
    let out = inst.keyward_as(Some(NOBODY), &["status"], b"");
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
}

fn walk(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        // The audit chain's head moves with every record, refusals included.
        if p.file_name().is_some_and(|n| n == "audit.head") {
            continue;
        }
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(format!(
                "{} {}",
                p.display(),
                std::fs::read(&p).map(|b| b.len()).unwrap_or(0)
            ));
        }
    }
    out
}

fn main() {
    if let (Ok(i), Ok(socket)) = (
        std::env::var("KW_AGENT_SEND"),
        std::env::var("KW_AGENT_SOCKET"),
    ) {
        send(i.parse().unwrap(), &socket);
        return;
    }
    // `cargo test -- --list` and filters: this file is one test.
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--list") {
        println!("agent_allow_list: test");
        return;
    }
    let filter = args.iter().find(|a| !a.starts_with('-'));
    if filter
        .is_some_and(|f| !"agent_allow_list_refuses_every_forbidden_request".contains(f.as_str()))
    {
        println!("\nrunning 0 tests\n\ntest result: ok. 0 passed; 0 failed; 0 ignored; 0 measured; 1 filtered out\n");
        return;
    }
    println!("\nrunning 1 test");
    test();
    println!("test agent_allow_list_refuses_every_forbidden_request ... ok");
    println!("\ntest result: ok. 1 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out\n");
}
