//! Single sign-on to the web UI (`[oidc]`, issue 20) against a real OpenID Connect provider:
//! the npm package oidc-provider (`tests/ui/oidc-provider.mjs`) on loopback, and Debian's
//! headless Chromium signing in there (`tests/ui/sso.test.mjs`), on SQLite and PostgreSQL.
//! People get the role their groups map to, an unmapped person is refused, a tampered state
//! or nonce signs nobody in, a used callback cannot be replayed even with its state cookie, and
//! every step is audited with how the provider names the person. Without the browser: the
//! server keeps serving password sign-ins while the provider is down, and refuses to start
//! with a client secret others may read.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use common::browser::{artifacts, browser_ready, ui_dir};
use common::escrow::*;
use common::pki::make_pki;
use common::ui_client::{http, Browser};
use common::*;

const CLIENT_ID: &str = "keyward-escrow";
const CLIENT_SECRET: &str = "a client secret only the server and the provider know";

/// The provider, killed when dropped; its log in a file.
struct Provider {
    child: Child,
    issuer: String,
    log: std::path::PathBuf,
}

impl Provider {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Provider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn provider(inst: &Instance, redirect: &str) -> Provider {
    provider_with(inst, redirect, None, &[])
}

/// The provider, over HTTPS with `tls` (certificate, key) when given, with `env` set.
fn provider_with(
    inst: &Instance,
    redirect: &str,
    tls: Option<(&std::path::Path, &std::path::Path)>,
    env: &[(&str, &str)],
) -> Provider {
    let log = inst.path("oidc-provider.log");
    let mut cmd = Command::new("node");
    cmd.envs(env.iter().copied());
    if let Some((cert, key)) = tls {
        cmd.env("KEYWARD_SSO_TLS_CERT", cert)
            .env("KEYWARD_SSO_TLS_KEY", key);
    }
    let mut child = cmd
        .arg("oidc-provider.mjs")
        .current_dir(ui_dir())
        .env("KEYWARD_SSO_CLIENT_ID", CLIENT_ID)
        .env("KEYWARD_SSO_CLIENT_SECRET", CLIENT_SECRET)
        .env("KEYWARD_SSO_REDIRECT", redirect)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut line = String::new();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    out.read_line(&mut line).unwrap();
    // It logs to stdout too: keep reading, or its next write fails on a closed pipe.
    std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
    let v: serde_json::Value = serde_json::from_str(&line)
        .unwrap_or_else(|e| panic!("the provider did not start: {e}: {line:?}"));
    Provider {
        child,
        issuer: v["issuer"].as_str().unwrap().to_owned(),
        log,
    }
}

/// The client secret, in a file only root may read.
fn secret_file(inst: &Instance, mode: u32) -> std::path::PathBuf {
    let f = inst.path("oidc-client-secret");
    std::fs::write(&f, format!("{CLIENT_SECRET}\n")).unwrap();
    chmod(&f, mode);
    f
}

fn oidc_toml(issuer: &str, secret: &std::path::Path, redirect: &str) -> String {
    format!(
        "[oidc]\nissuer = \"{issuer}\"\nclient_id = \"{CLIENT_ID}\"\n\
         client_secret_file = \"{}\"\nredirect_url = \"{redirect}\"\n\
         scopes = [\"profile\", \"email\", \"groups\"]\n\
         [oidc.roles]\n\"keyward-admins\" = \"admin\"\n\"it-helpdesk\" = \"helpdesk\"\n",
        secret.display()
    )
}

/// `sso.test.mjs` in Chromium against `srv` and `op` (only the tests matching `only`, if
/// given), alice's callback URL handed off in `handoff`: its report, once it passed.
fn in_the_browser(
    srv: &Server,
    op: &Provider,
    handoff: &std::path::Path,
    backend: &Backend,
    only: Option<&str>,
) -> String {
    std::fs::create_dir(handoff).unwrap();
    let mut cmd = Command::new("node");
    cmd.args(["--test", "--test-reporter=spec"]);
    if let Some(pattern) = only {
        cmd.args(["--test-name-pattern", pattern]);
    }
    let out = cmd
        .arg("sso.test.mjs")
        .current_dir(ui_dir())
        .env("KEYWARD_UI_URL", srv.url())
        .env("KEYWARD_SSO_ISSUER", &op.issuer)
        .env("KEYWARD_UI_HANDOFF", handoff)
        .env("KEYWARD_UI_ARTIFACTS", artifacts(backend))
        .output()
        .unwrap();
    let report = format!("{}\n{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
    assert!(
        out.status.success(),
        "browser test failed:\n{report}\nthe provider's log:\n{}",
        op.log()
    );
    report
}

/// A server on SQLite configured for SSO with the provider started with `env`.
fn sso_with(env: &[(&str, &str)]) -> (Instance, Server, Provider) {
    let inst = Instance::prepare();
    let mut srv = Server::start(&inst);
    let redirect = format!("{}/ui/sso/callback", srv.url());
    let op = provider_with(&inst, &redirect, None, env);
    let secret = secret_file(&inst, 0o600);
    srv.reconfigure(&oidc_toml(&op.issuer, &secret, &redirect));
    (inst, srv, op)
}

/// Every audit record of the UI's sign-ins: `ACTION|WHO|REASON`, one a line.
fn sign_in_audit(srv: &Server) -> String {
    srv.query(
        "SELECT action || '|' || who || '|' || COALESCE(reason, '') FROM audit \
         WHERE action LIKE 'ui-%' ORDER BY seq",
    )
}

#[test]
fn people_sign_in_with_sso_in_the_browser_and_get_their_groups_role() {
    if !browser_ready() {
        return;
    }
    for backend in backends() {
        sso_in_the_browser(&backend);
    }
}

fn sso_in_the_browser(backend: &Backend) {
    let inst = Instance::prepare();
    let mut srv = Server::start_on(&inst, backend);
    let redirect = format!("{}/ui/sso/callback", srv.url());
    let op = provider(&inst, &redirect);
    let secret = secret_file(&inst, 0o600);
    srv.reconfigure(&oidc_toml(&op.issuer, &secret, &redirect));

    let handoff = inst.path("handoff");
    let report = in_the_browser(&srv, &op, &handoff, backend, None);
    assert!(report.contains("pass 3"), "{report}");

    // alice's callback replayed with the very cookies her browser sent (the sealed sign-in):
    // it signed someone in once, so it signs nobody in again.
    let callback = std::fs::read_to_string(handoff.join("callback.txt")).unwrap();
    let path = &callback[callback.find("/ui/sso/callback").unwrap()..];
    let cookie = std::fs::read_to_string(handoff.join("cookie.txt")).unwrap();
    assert!(cookie.contains("__Host-keyward-sso="), "{cookie}");
    let toml = oidc_toml(&op.issuer, &secret, &redirect);
    // On PostgreSQL, at a second instance with the same identity and database too: it opens
    // the first's cookie, and the sign-in is used there as well.
    let mut other = matches!(backend, Backend::Postgres(_)).then(|| {
        let mut b = Server::offline(srv.state.clone(), srv.db.clone());
        b.reconfigure(&toml);
        b
    });
    let mut replays = 0;
    for addr in std::iter::once(&srv.addr).chain(other.as_ref().map(|b| &b.addr)) {
        let replay = http(addr, "GET", path, &[("Cookie", cookie.clone())], "");
        assert_eq!(replay.status, 403, "{addr}: {}", replay.body);
        assert!(
            replay
                .set_cookies()
                .iter()
                .all(|c| !c.contains("keyward-session=") || c.contains("keyward-session=;")),
            "no session for a replay: {:?}",
            replay.set_cookies()
        );
        replays += 1;
    }
    if let Some(b) = other.as_mut() {
        b.stop();
    }

    let audit = sign_in_audit(&srv);
    let has = |action: &str, who: &str, says: &str| {
        assert!(
            audit.lines().any(|l| {
                let mut f = l.splitn(3, '|');
                f.next() == Some(action)
                    && f.next() == Some(who)
                    && f.next().unwrap().contains(says)
            }),
            "no {action} by {who} saying {says:?} in:\n{audit}"
        );
    };
    let issuer = &op.issuer;
    has(
        "ui-login",
        "sso:alice",
        &format!("with SSO as admin (issuer {issuer}, subject \"alice\", groups [keyward-admins])"),
    );
    has("ui-login", "sso:hank", "with SSO as helpdesk");
    has("ui-sso-refused", "sso:mallory", "no group maps to a role");
    has("ui-sso-refused", "sso:?", "the state is not the one");
    has("ui-sso-refused", "sso:?", "the ID token was refused");
    has("ui-sso-refused", "sso:?", "this sign-in was used already");
    assert_eq!(
        audit.matches("this sign-in was used already").count(),
        replays,
        "each replay refused for being used:\n{audit}"
    );
    assert_eq!(
        audit.lines().filter(|l| l.starts_with("ui-login|")).count(),
        2,
        "two sign-ins, no more:\n{audit}"
    );
    // Their sessions carry the role from the provider; no account was made for them.
    let sessions = srv.query("SELECT admin || '|' || sso_role FROM sessions ORDER BY admin");
    assert_eq!(sessions, "sso:alice|admin\nsso:hank|helpdesk\n");
    // Someone leaves: their SSO sessions end at once, at the server's shell, audited.
    let out = srv.cmd(&["admin", "end-sessions", "sso:hank"]);
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("1 session(s) of sso:hank ended"));
    let sessions = srv.query("SELECT admin FROM sessions ORDER BY admin");
    assert_eq!(sessions, "sso:alice\n");
    let recorded = srv.query("SELECT reason FROM audit WHERE action = 'admin-end-sessions'");
    assert!(
        recorded.contains("web UI sessions of sso:hank: 1 ended"),
        "{recorded}"
    );
    assert_eq!(srv.query("SELECT count(*) FROM admins").trim(), "0");
    // Only sign-ins the provider vouched for are kept (alice, hank, and mallory, whose groups
    // mapped to no role), for ten minutes; the tampered ones left nothing.
    assert_eq!(srv.query("SELECT count(*) FROM sso_used").trim(), "3");
}

/// A provider that puts groups (and names) only at its userinfo endpoint, as oidc-provider
/// does by the letter of the spec for the code flow (`conformIdTokenClaims`): alice still
/// becomes an admin and mallory is still refused, her groups read from userinfo.
#[test]
fn groups_only_at_the_userinfo_endpoint_still_give_the_role() {
    if !browser_ready() {
        return;
    }
    let (inst, srv, op) = sso_with(&[("KEYWARD_SSO_USERINFO_ONLY", "1")]);
    let report = in_the_browser(
        &srv,
        &op,
        &inst.path("handoff"),
        &Backend::Sqlite,
        Some("get the role their groups map to|no role is refused"),
    );
    assert!(report.contains("pass 2"), "{report}");
    let audit = sign_in_audit(&srv);
    assert!(
        audit.contains("ui-login|sso:alice|") && audit.contains("groups [keyward-admins]"),
        "{audit}"
    );
    assert!(audit.contains("ui-sso-refused|sso:mallory|"), "{audit}");
}

/// A provider that signs ID tokens with HS256 (an HMAC keyed by the client secret, which
/// anyone holding the secret could forge): the token is refused before any role is looked at.
#[test]
fn an_id_token_signed_with_the_client_secret_is_refused() {
    if !browser_ready() {
        return;
    }
    let (inst, srv, op) = sso_with(&[("KEYWARD_SSO_ID_TOKEN_ALG", "HS256")]);
    let report = in_the_browser(
        &srv,
        &op,
        &inst.path("handoff"),
        &Backend::Sqlite,
        Some("no role is refused"),
    );
    assert!(report.contains("pass 1"), "{report}");
    let audit = sign_in_audit(&srv);
    assert!(
        audit.contains("ui-sso-refused|sso:?|") && audit.contains("the ID token was refused"),
        "{audit}"
    );
    assert!(!audit.contains("no group maps to a role"), "{audit}");
    assert!(!audit.contains("ui-login|"), "{audit}");
}

#[test]
fn password_sign_in_works_while_the_provider_is_down_and_the_secret_must_be_private() {
    let inst = Instance::prepare();
    let mut srv = Server::start(&inst);
    // Without [oidc]: no SSO button, no SSO route.
    let mut b = Browser::new(&srv);
    assert!(!b.get("/ui/login").body.contains("/ui/sso"));
    assert_eq!(b.get("/ui/sso").status, 404);

    // A provider that is not there (a port nobody listens on).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let issuer = format!("http://127.0.0.1:{port}");
    let redirect = format!("{}/ui/sso/callback", srv.url());
    let secret = secret_file(&inst, 0o644);
    let toml = oidc_toml(&issuer, &secret, &redirect);
    let e = srv.refused_config(&toml);
    assert!(e.contains("group or others may read it (chmod 600)"), "{e}");

    chmod(&secret, 0o600);
    srv.reconfigure(&toml);
    srv.add_admin("night-shift", "a long and boring passphrase");
    let mut b = Browser::new(&srv);
    let page = b.get("/ui/login");
    assert!(page.body.contains("href=\"/ui/sso\""), "{}", page.body);
    let sso = b.get("/ui/sso");
    assert_eq!(sso.status, 502, "{}", sso.body);
    assert!(sso.body.contains("could not be reached"), "{}", sso.body);
    let login = b.login("night-shift", "a long and boring passphrase");
    assert_eq!(login.status, 303, "{}", login.body);
    assert_eq!(login.header("location"), Some("/ui/devices"));
    // A callback out of nowhere signs nobody in, and says so in the audit.
    let stray = b.get("/ui/sso/callback?code=abc&state=def");
    assert_eq!(stray.status, 403, "{}", stray.body);
    assert!(sign_in_audit(&srv).contains("ui-sso-refused|sso:?|the state is not the one"));
}

/// `GET /ui/sso` needs no session and stores nothing: a sign-in under way lives in the
/// browser's sealed cookie. Sign-ins begun by the thousand from many addresses leave no row,
/// and a real person then signs in as usual. Against the real provider, on every database.
#[test]
fn sign_ins_begun_by_strangers_store_nothing() {
    if !browser_ready() {
        return;
    }
    for backend in backends() {
        let inst = Instance::prepare();
        let mut srv = Server::start_on(&inst, &backend);
        let redirect = format!("{}/ui/sso/callback", srv.url());
        let op = provider(&inst, &redirect);
        let secret = secret_file(&inst, 0o600);
        srv.reconfigure(&oidc_toml(&op.issuer, &secret, &redirect));
        let tables = "SELECT count(*) FROM sso_used";
        for i in 0..300 {
            let source = format!("127.0.{}.{}", 1 + i / 250, 2 + i % 250);
            let r = Browser::from(&srv, &source).get("/ui/sso");
            assert_eq!(r.status, 303, "{backend:?} sign-in {i}: {}", r.body);
            assert!(
                r.set_cookies()
                    .iter()
                    .any(|c| c.starts_with("__Host-keyward-sso=") && c.len() > 100),
                "{:?}",
                r.set_cookies()
            );
        }
        assert_eq!(srv.query(tables).trim(), "0", "{backend:?}");
        let handoff = inst.path("handoff");
        let report = in_the_browser(&srv, &op, &handoff, &backend, None);
        assert!(report.contains("pass 3"), "{backend:?}: {report}");
    }
}

/// A provider behind a company CA: trusted through `[oidc] ca_file` only (Mozilla's roots do
/// not vouch for it: /ui/sso says the provider cannot be reached), and a ca_file with no
/// certificate in it stops the server, naming the table and the file.
#[test]
fn a_provider_behind_a_company_ca_is_trusted_through_ca_file_only() {
    if !browser_ready() {
        return;
    }
    let inst = Instance::prepare();
    let mut srv = Server::start(&inst);
    let (ca, cert, key) = make_pki(inst.root.path(), "idp");
    let redirect = format!("{}/ui/sso/callback", srv.url());
    let op = provider_with(&inst, &redirect, Some((&cert, &key)), &[]);
    assert!(op.issuer.starts_with("https://127.0.0.1:"), "{}", op.issuer);
    let secret = secret_file(&inst, 0o600);
    let toml = oidc_toml(&op.issuer, &secret, &redirect);

    srv.reconfigure(&toml);
    let r = Browser::new(&srv).get("/ui/sso");
    assert_eq!(
        r.status, 502,
        "Mozilla's roots must not vouch for it: {}",
        r.body
    );

    let with_ca = toml.replace(
        "[oidc.roles]",
        &format!("ca_file = \"{}\"\n[oidc.roles]", ca.display()),
    );
    srv.reconfigure(&with_ca);
    let r = Browser::new(&srv).get("/ui/sso");
    assert_eq!(r.status, 303, "{}\n{}", r.body, op.log());
    let to = r.header("location").unwrap();
    assert!(to.starts_with(&format!("{}/", op.issuer)), "{to}");

    let junk = inst.path("not-a-ca.pem");
    std::fs::write(&junk, "not a certificate\n").unwrap();
    let bad = toml.replace(
        "[oidc.roles]",
        &format!("ca_file = \"{}\"\n[oidc.roles]", junk.display()),
    );
    let e = srv.refused_config(&bad);
    assert!(
        e.contains("[oidc] ca_file") && e.contains("holds no PEM certificate"),
        "{e}"
    );
}
