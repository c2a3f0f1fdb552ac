//! The TOTP second factor of web UI accounts (issue 20), over plain HTTP on both databases,
//! with codes from an independent implementation (Debian's `oathtool`, RFC 6238): `admin add
//! --totp` prints an `otpauth://` URI once; that account's login is refused without a code,
//! with a wrong one, with a used one (after logging out too) and with one five minutes old, each
//! a failed login the lock-out counts; the current code signs in; the same code sent at two
//! instances at once signs in once; `admin reset-totp` retires the old secret and ends the
//! account's sessions, `--off` removes the second factor; accounts without TOTP sign in as
//! before. Neither the secret nor a code reaches the audit trail, nor the server's log (every
//! request logged) nor what `admin add` and `admin reset-totp` print besides the URI.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use common::escrow::*;
use common::ui_client::*;
use common::*;

const PASSWORD: &str = "correct horse battery staple";
const REFUSED: &str = "Wrong name, password or code.";

fn unix_now() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap()
}

/// The code `oathtool` computes for the base32 `secret` at Unix time `at`.
fn oathtool(secret: &str, at: i64) -> String {
    let out = Command::new("oathtool")
        .args(["--totp", "-b", secret, "--now", &format!("@{at}")])
        .output()
        .expect("oathtool (bash scripts/deps installs it)");
    assert!(out.status.success(), "oathtool: {}", stderr(&out));
    let code = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert_eq!(code.len(), 6, "{code}");
    code
}

/// The base32 secret of an `otpauth://` URI, after checking the URI is what authenticator
/// apps take for `name`: TOTP, issuer keyward, SHA-1/6 digits/30 s (stated or by default).
fn secret_of(uri: &str, name: &str) -> String {
    let label = format!("otpauth://totp/keyward:{name}?");
    let query = uri.strip_prefix(&label).unwrap_or_else(|| panic!("{uri}"));
    let mut secret = None;
    for (k, v) in query.split('&').map(|p| p.split_once('=').unwrap()) {
        match k {
            "secret" => secret = Some(v.to_owned()),
            "issuer" => assert_eq!(v, "keyward"),
            "algorithm" => assert_eq!(v, "SHA1"),
            "digits" => assert_eq!(v, "6"),
            "period" => assert_eq!(v, "30"),
            other => panic!("unexpected parameter {other} in {uri}"),
        }
    }
    let secret = secret.unwrap();
    assert_eq!(secret.len(), 32, "160 bits, unpadded base32: {secret}");
    secret
}

/// `admin add NAME --totp`: the secret of the URI it printed (the only line on stdout).
fn add_with_totp(srv: &Server, name: &str) -> String {
    let out = srv.cmd_stdin(
        &[
            "admin",
            "add",
            name,
            "--role",
            "admin",
            "--password-stdin",
            "--totp",
        ],
        format!("{PASSWORD}\n").as_bytes(),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    secret_of(stdout.trim(), name)
}

/// `admin reset-totp NAME [ARGS]`: what it printed on stdout.
fn reset_totp(srv: &Server, name: &str, args: &[&str]) -> String {
    let mut all = vec!["admin", "reset-totp", name];
    all.extend(args);
    let out = srv.cmd(&all);
    assert!(out.status.success(), "{}", stderr(&out));
    String::from_utf8(out.stdout).unwrap()
}

fn audit(srv: &Server) -> String {
    let out = srv.cmd(&["audit"]);
    assert!(out.status.success(), "{}", stderr(&out));
    String::from_utf8(out.stdout).unwrap()
}

fn failures_of(srv: &Server, name: &str) -> usize {
    srv.query(&format!(
        "SELECT COUNT(*) FROM login_failures WHERE name = '{name}'"
    ))
    .trim()
    .parse()
    .unwrap()
}

fn assert_refused(r: &Resp, what: &str) {
    assert_eq!(r.status, 401, "{what}: {}", r.body);
    assert!(r.body.contains(REFUSED), "{what}: {}", r.body);
    assert!(
        !r.set_cookies()
            .iter()
            .any(|c| c.starts_with("__Host-keyward-session=")),
        "{what}: a session was given"
    );
}

/// A code that is not `code` (one digit changed).
fn wrong(code: &str) -> String {
    let mut digits: Vec<u8> = code.bytes().collect();
    digits[5] = b'0' + (digits[5] - b'0' + 1) % 10;
    String::from_utf8(digits).unwrap()
}

#[test]
fn totp_accounts_need_a_fresh_code_each_login() {
    for backend in backends() {
        fresh_codes(&backend);
    }
}

fn fresh_codes(backend: &Backend) {
    let inst = Instance::prepare();
    let srv = Server::start_on(&inst, backend);
    let secret = add_with_totp(&srv, "alice");
    srv.add_account("carol", PASSWORD, "viewer");
    let list = String::from_utf8(srv.cmd(&["admin", "list"]).stdout).unwrap();
    assert_eq!(list, "alice admin totp\ncarol viewer\n", "{backend:?}");
    // Kept sealed to the server's identity: the database alone holds no usable secret.
    let stored = srv.query("SELECT totp FROM admins WHERE name = 'alice'");
    assert!(
        !stored.contains(&secret) && stored.trim().len() > 100,
        "{stored}"
    );

    // No code, a wrong code: refused, each one failure, with the one message.
    let mut b = Browser::new(&srv);
    let r = b.get("/ui/login");
    assert!(
        r.body.contains(r#"name="code""#)
            && r.body.contains(r#"autocomplete="one-time-code""#)
            && r.body.contains(r#"inputmode="numeric""#),
        "{}",
        r.body
    );
    assert_refused(&b.login("alice", PASSWORD), "no code");
    let code = oathtool(&secret, unix_now());
    assert_refused(
        &b.login_with_code("alice", PASSWORD, &wrong(&code)),
        "wrong code",
    );
    assert_eq!(failures_of(&srv, "alice"), 2);
    // The right code with a wrong password says no more than any other failure.
    assert_refused(
        &b.login_with_code("alice", "not the password", &code),
        "password",
    );

    // The current code signs in; the same code, once more, never again — not after logging out.
    let used = oathtool(&secret, unix_now());
    let mut signed_in = Browser::new(&srv);
    let r = signed_in.login_with_code("alice", PASSWORD, &used);
    assert_eq!(
        (r.status, r.header("location")),
        (303, Some("/ui/devices")),
        "{}",
        r.body
    );
    assert_eq!(
        failures_of(&srv, "alice"),
        0,
        "a sign-in clears its address's failures"
    );
    assert_refused(&b.login_with_code("alice", PASSWORD, &used), "replay");
    let token = signed_in.get("/ui/devices").csrf();
    assert_eq!(
        signed_in.post("/ui/logout", &[("csrf", &token)]).status,
        303
    );
    assert_refused(
        &signed_in.login_with_code("alice", PASSWORD, &used),
        "replay after logout",
    );

    // A code from five minutes ago (or five minutes ahead) is no code, on an account that has
    // spent none yet.
    let bob = add_with_totp(&srv, "bob");
    let mut b = Browser::new(&srv);
    for at in [unix_now() - 300, unix_now() + 300] {
        assert_refused(
            &b.login_with_code("bob", PASSWORD, &oathtool(&bob, at)),
            "old/new",
        );
    }

    // Code failures lock out like password failures: five from an address lock the name there,
    // even for the right password and a code that would do (`web_ui.rs` tests the rest of the
    // lock-out rules).
    let dave = add_with_totp(&srv, "dave");
    let mut far = Browser::from(&srv, "127.0.0.5");
    for _ in 0..5 {
        let r = far.login_with_code("dave", PASSWORD, &oathtool(&dave, unix_now() - 300));
        assert_refused(&r, "counted");
    }
    let r = far.login_with_code("dave", PASSWORD, &oathtool(&dave, unix_now()));
    assert_eq!(r.status, 429, "{}", r.body);

    // An account without TOTP signs in as before, and ignores a code.
    assert_eq!(Browser::new(&srv).login("carol", PASSWORD).status, 303);
    let r = Browser::new(&srv).login_with_code("carol", PASSWORD, "not a code");
    assert_eq!(r.status, 303);

    // The audit trail names the failures and sign-ins, and holds neither secret nor code (read
    // whole from the table: `keyward-server audit` shortens long reasons).
    let trail = audit(&srv);
    let records = srv.query("SELECT who, action, reason FROM audit");
    assert!(trail.contains("admin-add by"), "{trail}");
    assert!(trail.contains("web UI admin alice with TOTP"), "{trail}");
    assert!(trail.contains("ui-login-failed by \"alice\""), "{trail}");
    assert!(trail.contains("wrong name, password or code"), "{trail}");
    for secret_or_code in [secret.as_str(), &bob, &code, &used] {
        assert!(
            !records.contains(secret_or_code),
            "{secret_or_code} in {records}"
        );
    }
}

#[test]
fn one_code_signs_in_once_across_instances() {
    for backend in backends() {
        once_across_instances(&backend);
    }
}

fn once_across_instances(backend: &Backend) {
    let inst = Instance::prepare();
    let srv = Server::start_on(&inst, backend);
    let secret = add_with_totp(&srv, "alice");
    let mut other = Server::offline(srv.state.clone(), srv.db.clone());
    other.resume();
    // Each attempt from its own address, so the attempts' failures lock nothing; all four
    // reach the instances at one moment (their last bytes held until then), so each reads the
    // account before any of them spends the step.
    const ATTEMPTS: usize = 4;
    let together = std::sync::Arc::new(std::sync::Barrier::new(ATTEMPTS));
    let code = oathtool(&secret, unix_now());
    let attempts: Vec<_> = (0..ATTEMPTS)
        .map(|i| {
            let on = if i % 2 == 0 { &srv } else { &other };
            let mut b = Browser::from(on, &format!("127.0.1.{}", i + 1));
            let token = b.get("/ui/login").csrf();
            let code = code.clone();
            let together = together.clone();
            std::thread::spawn(move || {
                let fields = [
                    ("csrf", token.as_str()),
                    ("name", "alice"),
                    ("password", PASSWORD),
                    ("code", code.as_str()),
                ];
                let origin = Some(format!("http://{}", b.addr));
                b.post_held("/ui/login", &fields, origin, Some(&together))
                    .status
            })
        })
        .collect();
    let statuses: Vec<u16> = attempts.into_iter().map(|t| t.join().unwrap()).collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 303).count(),
        1,
        "{backend:?}: {statuses:?}"
    );
    assert!(
        statuses.iter().all(|s| [303, 401].contains(s)),
        "{statuses:?}"
    );
}

#[test]
fn reset_totp_retires_the_old_secret_and_ends_sessions() {
    for backend in backends() {
        reset(&backend);
    }
}

fn reset(backend: &Backend) {
    let inst = Instance::prepare();
    let srv = Server::start_on(&inst, backend);
    let old = add_with_totp(&srv, "alice");
    let mut b = Browser::new(&srv);
    let r = b.login_with_code("alice", PASSWORD, &oathtool(&old, unix_now()));
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(b.get("/ui/devices").status, 200);

    let out = reset_totp(&srv, "alice", &[]);
    assert_eq!(out.lines().count(), 1, "{out}");
    let new = secret_of(out.trim(), "alice");
    assert_ne!(new, old);
    let r = b.get("/ui/devices");
    assert_eq!(
        (r.status, r.header("location")),
        (303, Some("/ui/login")),
        "session ended"
    );
    assert_refused(
        &Browser::new(&srv).login_with_code("alice", PASSWORD, &oathtool(&old, unix_now())),
        "old secret",
    );
    let mut b = Browser::new(&srv);
    let r = b.login_with_code("alice", PASSWORD, &oathtool(&new, unix_now()));
    assert_eq!(r.status, 303, "{}", r.body);

    // --off: the password alone, from then on; sessions end here too.
    assert_eq!(reset_totp(&srv, "alice", &["--off"]), "");
    assert_eq!(b.get("/ui/devices").status, 303);
    assert_eq!(Browser::new(&srv).login("alice", PASSWORD).status, 303);
    let list = String::from_utf8(srv.cmd(&["admin", "list"]).stdout).unwrap();
    assert_eq!(list, "alice admin\n");

    let out = srv.cmd(&["admin", "reset-totp", "nobody"]);
    assert!(
        !out.status.success() && out.stdout.is_empty(),
        "{}",
        stderr(&out)
    );
    let trail = audit(&srv);
    assert!(trail.contains("admin-reset-totp by"), "{trail}");
    assert!(
        trail.contains("alice: new TOTP secret; sessions ended"),
        "{trail}"
    );
    assert!(
        trail.contains("alice: TOTP removed; sessions ended"),
        "{trail}"
    );
    let records = srv.query("SELECT who, action, reason FROM audit");
    assert!(
        !records.contains(&new) && !records.contains(&old),
        "{records}"
    );
}

/// The server's log, with every request logged (`--log-requests`), and what the admin commands
/// print on stderr hold neither a TOTP secret nor a code, through sign-ins refused for no code, a
/// wrong code and a replayed one, a sign-in, and a reset.
#[test]
fn neither_secret_nor_code_reaches_the_log() {
    use std::io::{BufRead, BufReader};
    let inst = Instance::prepare();
    let srv = Server::start(&inst);
    let added = srv.cmd_stdin(
        &[
            "admin",
            "add",
            "alice",
            "--role",
            "admin",
            "--password-stdin",
            "--totp",
        ],
        format!("{PASSWORD}\n").as_bytes(),
    );
    assert!(added.status.success(), "{}", stderr(&added));
    let secret = secret_of(
        String::from_utf8(added.stdout.clone()).unwrap().trim(),
        "alice",
    );

    // An instance of its own on the same state, its log in a file.
    let log = inst.path("server-log.jsonl");
    let mut child = Command::new(bin("keyward-server"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--log-requests",
            "--state",
        ])
        .arg(&srv.state)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let addr = loop {
        let first = BufReader::new(std::fs::File::open(&log).unwrap())
            .lines()
            .next()
            .transpose()
            .unwrap()
            .unwrap_or_default();
        if let Some((_, a)) = first.rsplit_once("://") {
            break a.split('"').next().unwrap().to_owned();
        }
        assert!(std::time::Instant::now() < deadline, "not serving: {first}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let browser = || Browser {
        addr: addr.clone(),
        cookies: std::collections::HashMap::new(),
        source: None,
    };
    let code = oathtool(&secret, unix_now());
    assert_refused(&browser().login("alice", PASSWORD), "no code");
    assert_refused(
        &browser().login_with_code("alice", PASSWORD, &wrong(&code)),
        "wrong code",
    );
    let used = oathtool(&secret, unix_now());
    assert_eq!(
        browser().login_with_code("alice", PASSWORD, &used).status,
        303
    );
    assert_refused(
        &browser().login_with_code("alice", PASSWORD, &used),
        "replay",
    );
    let reset = srv.cmd(&["admin", "reset-totp", "alice"]);
    assert!(reset.status.success(), "{}", stderr(&reset));
    let new = secret_of(
        String::from_utf8(reset.stdout.clone()).unwrap().trim(),
        "alice",
    );
    let _ = child.kill();
    let _ = child.wait();

    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(
        logged.matches("\"route\":\"/ui/login\"").count() >= 8,
        "the log has the sign-ins: {logged}"
    );
    let printed = format!("{}{}", stderr(&added), stderr(&reset));
    for secret in [secret.as_str(), &new] {
        assert!(
            !logged.contains(secret),
            "{secret} in the server's log:\n{logged}"
        );
        assert!(!printed.contains(secret), "{secret} on stderr:\n{printed}");
    }
    // A code as a number of its own (timestamps' digits may hold any six in a row).
    let holds = |text: &str, code: &str| {
        text.match_indices(code).any(|(at, _)| {
            let digit = |c: Option<char>| c.is_some_and(|c| c.is_ascii_digit());
            !digit(text[..at].chars().next_back()) && !digit(text[at + code.len()..].chars().next())
        })
    };
    for code in [code.as_str(), &wrong(&code), &used] {
        assert!(
            !holds(&logged, code),
            "{code} in the server's log:\n{logged}"
        );
        assert!(!holds(&printed, code), "{code} on stderr:\n{printed}");
    }
}
