//! Issue 14, item 8 (server hygiene), with the real escrow server on SQLite and PostgreSQL:
//! a revoked device gets 401 on every device API call at once (even at an instance that
//! cached its key) and is listed as revoked; enrollment tokens expire and can be revoked;
//! `/metrics` answers from memory and can require a bearer token read from a private file.
#![allow(clippy::unwrap_used)]

mod common;

use common::escrow::*;
use common::http::{
    b64, device_with_escrow, enroll_key, escrow_body, fresh_metrics, http, signed_as,
};
use common::*;
use ed25519_dalek::SigningKey;

/// A signed check-in of `device` (id `id`) reporting one escrowed volume: (status, body).
fn check_in(srv: &Server, key: &SigningKey, id: &str, nonce: &str) -> (u16, String) {
    let path = format!("/v1/devices/{id}/checkin");
    let report = serde_json::json!({ "volumes": [{ "volume": "data", "recovery": "escrowed",
        "escrow_id": null, "rotated_at": null, "service": "ok", "holders": 1, "violations": 0 }] })
    .to_string();
    let h = signed_as(key, "POST", &path, report.as_bytes(), nonce);
    http(&srv.addr, "POST", &path, &h, report.as_bytes())
}

/// A signed escrow upload of an age file sealed to `srv`: (status, body).
fn escrow(srv: &Server, key: &SigningKey, id: &str, rotation: &str, nonce: &str) -> (u16, String) {
    let recipient = srv.lines.split('"').nth(1).unwrap();
    let recipient = <age::x25519::Recipient as std::str::FromStr>::from_str(recipient).unwrap();
    let ct = age::encrypt(&recipient, b"a recovery key").unwrap();
    let body = escrow_body(rotation, &ct);
    let path = format!("/v1/devices/{id}/escrow/data");
    let h = signed_as(key, "PUT", &path, body.as_bytes(), nonce);
    http(&srv.addr, "PUT", &path, &h, body.as_bytes())
}

fn audit(srv: &Server) -> String {
    let out = srv.cmd(&["audit"]);
    assert!(out.status.success(), "{}", stderr(&out));
    String::from_utf8(out.stdout).unwrap()
}

/// The entry of `id` in `device list --json`.
fn listed(srv: &Server, id: &str) -> serde_json::Value {
    srv.devices()
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["device"] == id)
        .cloned()
        .unwrap()
}

/// `device revoke`: from its commit on, every request the device signs gets 401 (check-in,
/// escrow, and with them the commands a check-in carries), even at the instance that had its
/// key cached; other devices are unaffected; the revocation is listed and audited with who
/// did it; an unknown device is an error.
#[test]
fn a_revoked_device_gets_401_everywhere_and_is_listed_as_revoked() {
    for backend in backends() {
        let inst = Instance::prepare();
        let srv = Server::start_on(&inst, &backend);
        let (lost, kept) = (
            SigningKey::from_bytes(&[31u8; 32]),
            SigningKey::from_bytes(&[32u8; 32]),
        );
        let lost_id = enroll_key(&srv.addr, &srv.token(), &lost);
        let kept_id = enroll_key(&srv.addr, &srv.token(), &kept);
        // Before: the device is served (and its key is now in the instance's cache).
        assert_eq!(
            escrow(&srv, &lost, &lost_id, "rot-1", "revoke-nonce-0001").0,
            200
        );
        assert_eq!(check_in(&srv, &lost, &lost_id, "revoke-nonce-0002").0, 200);
        assert_eq!(listed(&srv, &lost_id)["state"], "active");

        let out = srv.cmd(&["device", "revoke", &lost_id, "--reason", "laptop stolen"]);
        assert!(out.status.success(), "{backend:?}: {}", stderr(&out));
        assert!(stderr(&out).contains("revoked"), "{}", stderr(&out));

        let (status, body) = check_in(&srv, &lost, &lost_id, "revoke-nonce-0003");
        assert_eq!(status, 401, "{backend:?}: check-in after revoke: {body}");
        assert!(body.contains("device revoked"), "{body}");
        let (status, body) = escrow(&srv, &lost, &lost_id, "rot-2", "revoke-nonce-0004");
        assert_eq!(status, 401, "{backend:?}: escrow after revoke: {body}");
        // A request refused for its content (bad volume name) is refused as revoked too.
        let path = format!("/v1/devices/{lost_id}/escrow/bad%20name");
        let h = signed_as(&lost, "PUT", &path, b"{}", "revoke-nonce-0005");
        assert_eq!(http(&srv.addr, "PUT", &path, &h, b"{}").0, 401);
        // A second instance on the same database refuses it as well.
        let mut other = Server::offline(srv.state.clone(), srv.db.clone());
        other.resume();
        let (status, _) = check_in(&other, &lost, &lost_id, "revoke-nonce-0006");
        assert_eq!(status, 401, "{backend:?}: the other instance served it");
        // Nothing it sent after the revocation was stored.
        assert_eq!(
            srv.query(&format!(
                "SELECT count(*) FROM escrows WHERE device = '{lost_id}'"
            ))
            .trim(),
            "1"
        );
        // Other devices are served as before.
        assert_eq!(check_in(&srv, &kept, &kept_id, "revoke-nonce-0007").0, 200);

        // Listed as revoked, with when and by whom; audited with who and why.
        let entry = listed(&srv, &lost_id);
        assert_eq!(entry["state"], "revoked", "{entry}");
        let who = entry["revoked"]["by"].as_str().unwrap().to_owned();
        assert!(!who.is_empty(), "{entry}");
        assert_eq!(listed(&srv, &kept_id)["state"], "active");
        let text = String::from_utf8(srv.cmd(&["device", "list"]).stdout).unwrap();
        let line = text.lines().find(|l| l.starts_with(&lost_id)).unwrap();
        assert!(line.contains("revoked"), "{text}");
        let trail = audit(&srv);
        assert!(
            trail.contains(&format!(
                "device-revoke by \"{who}\" device=\"{lost_id}\" volume=\"\" reason=\"laptop stolen\""
            )),
            "{trail}"
        );
        // No command can be issued to it any more.
        let out = srv.cmd(&["command", "rotate-recovery", &lost_id, "data"]);
        assert!(!out.status.success(), "a command for a revoked device");

        // Again: said so, nothing changes. Unknown: a clear error and a non-zero exit.
        let out = srv.cmd(&["device", "revoke", &lost_id]);
        assert!(out.status.success() && stderr(&out).contains("already revoked"));
        assert_eq!(audit(&srv).matches("device-revoke").count(), 1);
        let out = srv.cmd(&["device", "revoke", "dev-000000000000000000000000"]);
        assert_eq!(code(&out), Some(1), "{}", stderr(&out));
        assert!(
            stderr(&out).contains("no enrolled device"),
            "{}",
            stderr(&out)
        );
    }
}

/// `token list --json` as (id → entry).
fn tokens(srv: &Server) -> std::collections::HashMap<String, serde_json::Value> {
    let out = srv.cmd(&["token", "list", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let all: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    all.as_array()
        .unwrap()
        .iter()
        .map(|t| (t["id"].as_str().unwrap().to_owned(), t.clone()))
        .collect()
}

/// `token create ARGS`: (token, id).
fn token_with_id(srv: &Server, args: &[&str]) -> (String, String) {
    let mut all = vec!["token", "create"];
    all.extend_from_slice(args);
    let out = srv.cmd(&all);
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let id = err
        .split("token id ")
        .nth(1)
        .and_then(|r| r.split(',').next())
        .unwrap_or_else(|| panic!("no id in {err}"))
        .to_owned();
    (token, id)
}

fn enroll_with(srv: &Server, token: &str, seed: u8) -> (u16, String) {
    let key = SigningKey::from_bytes(&[seed; 32]);
    let body =
        serde_json::json!({ "token": token, "device_key": b64(&key.verifying_key().to_bytes()) })
            .to_string();
    http(&srv.addr, "POST", "/v1/enroll", &[], body.as_bytes())
}

/// Enrollment tokens expire (24 hours unless `--expires-in` says otherwise) and `token revoke`
/// makes one unusable at once; an expired or revoked token enrolls nothing and the device is
/// told why; `token list` shows each token's state and expiry; creating and revoking are
/// audited; an unknown id is an error.
#[test]
fn tokens_expire_and_can_be_revoked() {
    for backend in backends() {
        let inst = Instance::prepare();
        let srv = Server::start_on(&inst, &backend);
        let (default, default_id) = token_with_id(&srv, &[]);
        let (brief, brief_id) = token_with_id(&srv, &["--expires-in", "1s"]);
        let (revoked, revoked_id) = token_with_id(&srv, &[]);
        let (spent, spent_id) = token_with_id(&srv, &[]);

        // The default lifetime is a day.
        let listed = tokens(&srv);
        let expires =
            humantime::parse_rfc3339(listed[&default_id]["expires"].as_str().unwrap()).unwrap();
        let left = expires
            .duration_since(std::time::SystemTime::now())
            .unwrap()
            .as_secs();
        assert!((86_000..=86_400).contains(&left), "{backend:?}: {left} s");
        assert_eq!(listed[&default_id]["state"], "valid");

        // Revoked: refused at once by the running server, and the device is told why.
        let out = srv.cmd(&["token", "revoke", &revoked_id]);
        assert!(out.status.success(), "{}", stderr(&out));
        let (status, body) = enroll_with(&srv, &revoked, 1);
        assert_eq!(status, 401, "{backend:?}: a revoked token enrolled: {body}");
        assert!(body.contains("enrollment token revoked"), "{body}");

        // Expired.
        std::thread::sleep(std::time::Duration::from_millis(2100));
        let (status, body) = enroll_with(&srv, &brief, 2);
        assert_eq!(
            status, 401,
            "{backend:?}: an expired token enrolled: {body}"
        );
        assert!(body.contains("enrollment token expired"), "{body}");

        // A valid token still enrolls once.
        assert_eq!(enroll_with(&srv, &spent, 3).0, 200);
        let (status, body) = enroll_with(&srv, &spent, 4);
        assert_eq!(status, 401);
        assert!(body.contains("already used"), "{body}");
        assert_eq!(srv.devices().as_array().unwrap().len(), 1);

        let listed = tokens(&srv);
        for (id, state) in [
            (&default_id, "valid"),
            (&brief_id, "expired"),
            (&revoked_id, "revoked"),
            (&spent_id, "used"),
        ] {
            assert_eq!(listed[id]["state"], state, "{backend:?}: {id}");
        }
        assert!(listed[&revoked_id]["revoked"].is_string());
        let text = String::from_utf8(srv.cmd(&["token", "list"]).stdout).unwrap();
        assert!(
            text.lines()
                .any(|l| l.starts_with(brief_id.as_str()) && l.contains("expired")),
            "{text}"
        );

        // Revoking a used token changes nothing; an unknown id is an error.
        let out = srv.cmd(&["token", "revoke", &spent_id]);
        assert!(out.status.success() && stderr(&out).contains("already used"));
        let out = srv.cmd(&["token", "revoke", "00000000deadbeef"]);
        assert_eq!(code(&out), Some(1), "{}", stderr(&out));
        assert!(
            stderr(&out).contains("no token has the id"),
            "{}",
            stderr(&out)
        );
        let trail = audit(&srv);
        assert_eq!(trail.matches("token-create").count(), 4, "{trail}");
        assert_eq!(trail.matches("token-revoke").count(), 1, "{trail}");
        assert!(
            trail.contains(&format!("enrollment token {revoked_id}")),
            "{trail}"
        );
        let _ = default;
    }
}

/// The agent's enrollment with an expired token fails with the server's reason on root's
/// terminal.
#[test]
fn the_agent_is_told_its_token_expired() {
    let inst = Instance::prepare();
    let srv = Server::start(&inst);
    configure(&inst, &srv, "");
    let inst = inst.start();
    let (token, _) = token_with_id(&srv, &["--expires-in", "1s"]);
    let mut agent = inst.spawn_agent(&inst.path("agent.stderr"));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !inst.path("agent/agent.sock").exists() {
        assert!(std::time::Instant::now() < deadline, "{}", agent_log(&inst));
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let out = inst.keyward(
        &["enroll", &srv.url(), "--token-stdin"],
        format!("{token}\n").as_bytes(),
    );
    let _ = agent.kill();
    let _ = agent.wait();
    assert_ne!(code(&out), Some(0));
    assert!(
        stderr(&out).contains("enrollment token expired"),
        "{}",
        stderr(&out)
    );
}

/// `keyward-server serve ARGS` on the instance's state and database, expected to refuse to
/// start: its output (killed after 10 s if it serves after all).
fn serve_refused(srv: &Server, args: &[&str]) -> std::process::Output {
    let mut c = std::process::Command::new(bin("keyward-server"));
    c.args(["serve", "--listen", "127.0.0.1:0", "--state"])
        .arg(&srv.state)
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    if let Some(db) = &srv.db {
        c.args(["--db", db]);
    }
    let mut child = c.spawn().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!("it served: {}", stderr(&out));
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// The value of a metric line `NAME VALUE` in a scrape.
fn value(scrape: &str, name: &str) -> Option<String> {
    scrape
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")).map(str::to_owned))
}

/// `/metrics` answers from memory: scrapes never walk the devices (the walk runs once per
/// `--metrics-refresh`, and with the tables it reads gone scrapes still answer, with the
/// last snapshot); `--metrics-token-file` requires a bearer token, read from a file only the
/// server's user can read (a readable one is refused at start).
#[test]
fn metrics_come_from_memory_and_can_require_a_bearer_token() {
    use std::os::unix::fs::PermissionsExt;
    for backend in backends() {
        let inst = Instance::prepare();
        let srv = Server::start_on(&inst, &backend);
        enroll_key(
            &srv.addr,
            &srv.token(),
            &SigningKey::from_bytes(&[41u8; 32]),
        );

        // A slow refresh: however many scrapes, one walk.
        let mut slow = Server::offline(srv.state.clone(), srv.db.clone());
        slow.serve_args = vec!["--metrics-refresh".into(), "1h".into()];
        slow.resume();
        // Its one walk runs at start, maybe before any "fresh" cut-off we could ask for: wait
        // for a snapshot, however old.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let first = loop {
            let (status, m) = http(&slow.addr, "GET", "/metrics", &[], b"");
            if status == 200 && value(&m, "keyward_devices").is_some() {
                break m;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no snapshot: {status} {m}"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        };
        assert_eq!(value(&first, "keyward_devices").as_deref(), Some("1"));
        for _ in 0..50 {
            let (status, _) = http(&slow.addr, "GET", "/metrics", &[], b"");
            assert_eq!(status, 200);
        }
        let (_, m) = http(&slow.addr, "GET", "/metrics", &[], b"");
        assert_eq!(
            value(&m, "keyward_fleet_refreshes_total").as_deref(),
            Some("1"),
            "{backend:?}: scrapes walked the fleet: {m}"
        );

        // The device tables gone: scrapes still answer, from memory.
        let before = fresh_metrics(&srv.addr);
        assert_eq!(value(&before, "keyward_devices").as_deref(), Some("1"));
        srv.query("ALTER TABLE checkins RENAME TO checkins_away");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let (status, m) = http(&srv.addr, "GET", "/metrics", &[], b"");
            assert_eq!(status, 200, "{backend:?}: {m}");
            assert_eq!(value(&m, "keyward_devices").as_deref(), Some("1"), "{m}");
            let failed = value(&m, "keyward_fleet_refresh_failures_total");
            if failed.is_some_and(|n| n != "0") {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "no failed walk: {m}");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        srv.query("ALTER TABLE checkins_away RENAME TO checkins");

        // A bearer token from a private file.
        let file = inst.path("metrics-token");
        let token = "0123456789abcdef-metrics";
        std::fs::write(&file, format!("{token}\n")).unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let path = file.to_str().unwrap();
        let out = serve_refused(&srv, &["--metrics-token-file", path]);
        assert!(!out.status.success());
        assert!(stderr(&out).contains("chmod 600"), "{}", stderr(&out));
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let mut guarded = Server::offline(srv.state.clone(), srv.db.clone());
        guarded.serve_args = vec!["--metrics-token-file".into(), path.into()];
        guarded.resume();
        let bearer = |t: &str| vec![("Authorization".to_owned(), format!("Bearer {t}"))];
        for (what, headers) in [
            ("no token", vec![]),
            ("a wrong token", bearer("0123456789abcdef-metricz")),
            ("a prefix", bearer("0123456789abcdef")),
        ] {
            let (status, body) = http(&guarded.addr, "GET", "/metrics", &headers, b"");
            assert_eq!(status, 401, "{backend:?}: {what}: {body}");
            assert!(!body.contains("keyward_"), "{body}");
        }
        let (status, body) = http(&guarded.addr, "GET", "/metrics", &bearer(token), b"");
        assert_eq!(status, 200, "{body}");
        assert!(body.contains("keyward_http_requests_total"), "{body}");
        // Without the option, /metrics stays open (as before).
        assert_eq!(http(&srv.addr, "GET", "/metrics", &[], b"").0, 200);
    }
}

/// `/metrics` shows how many volumes each recovery state holds — so a device that withholds
/// its uploads shows as `pending` — and never a device id, escrow id or key: after a device
/// escrowed a key (its id in the request's path) and another reported a pending one, the
/// scrape names neither device nor the escrow, nor holds the key.
#[test]
fn metrics_count_pending_volumes_and_name_no_device_or_key() {
    let inst = Instance::prepare();
    let srv = Server::start(&inst);
    let secret = "ABCDE-12345-FGHIJ-67890";
    let (device, escrow) = device_with_escrow(&srv, secret);
    let key = SigningKey::from_bytes(&[43u8; 32]);
    let withholding = enroll_key(&srv.addr, &srv.token(), &key);
    let path = format!("/v1/devices/{withholding}/checkin");
    let report = serde_json::json!({ "volumes": [{ "volume": "data", "recovery": "pending",
        "escrow_id": null, "rotated_at": null, "service": "ok", "holders": 1, "violations": 0 }] })
    .to_string();
    let h = signed_as(&key, "POST", &path, report.as_bytes(), "pending-checkin-1");
    let (status, answer) = http(&srv.addr, "POST", &path, &h, report.as_bytes());
    assert_eq!(status, 200, "{answer}");

    let m = fresh_metrics(&srv.addr);
    assert_eq!(
        value(&m, "keyward_volumes{recovery=\"pending\"}").as_deref(),
        Some("1"),
        "{m}"
    );
    assert_eq!(
        value(&m, "keyward_volumes{recovery=\"escrowed\"}").as_deref(),
        Some("1"),
        "{m}"
    );
    for what in [
        device.as_str(),
        withholding.as_str(),
        escrow.as_str(),
        secret,
    ] {
        assert!(!m.contains(what), "{what} in /metrics:\n{m}");
    }
    assert!(
        m.contains("/v1/devices/{device}/checkin"),
        "requests are counted by route: {m}"
    );
}
