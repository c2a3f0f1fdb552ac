//! Teams (issue 20) through the JSON admin API and the CLI, with the real server on both
//! databases: API tokens (printed once, stored as a hash, listed without the token, revoked at
//! once), 401 without a live token and 403 for a role without the right on every route, the
//! two-person reveal (request with a reason, approval by someone else, one reveal, then
//! nothing; denied and expired requests reveal nothing; every step audited with the name, the
//! request id and the reason; the key marked for rotation after use), `[reveal]
//! require_approval = false`, accounts and roles at the CLI, the migration that makes existing
//! accounts admins, and the config file's strictness.
#![allow(clippy::unwrap_used)]

mod common;

use common::escrow::*;
use common::http::{admin_api, device_with_escrow};
use common::team::*;
use common::*;
use serde_json::{json, Value};
use sha2::Digest;

/// The audit trail in full, one record a line: `ACTION by "WHO" device="D" REASON` (the CLI's
/// `audit` shortens long reasons).
fn audit(srv: &Server) -> String {
    let out = srv.cmd(&["audit"]);
    assert!(out.status.success(), "{}", stderr(&out));
    srv.query(
        "SELECT action || ' by \"' || who || '\" device=\"' || COALESCE(device, '') || '\" ' \
         || COALESCE(reason, '') FROM audit ORDER BY seq",
    )
}

fn seen(srv: &Server) -> String {
    srv.query("SELECT rotate_after_use FROM escrows")
        .trim()
        .to_owned()
}

#[test]
fn api_tokens_are_shown_once_stored_hashed_and_checked_on_every_route() {
    for backend in backends() {
        let t = team(&backend);
        let srv = &t.srv;
        assert!(t.admin.starts_with("kwa_"), "{}", t.admin);
        // Only the hash is stored (its SHA-256, so a database dump holds no token); the list
        // never shows a token.
        let stored = srv.query("SELECT name, hash, role FROM api_tokens ORDER BY name");
        assert!(
            !stored.contains(&t.admin) && stored.contains("ops"),
            "{stored}"
        );
        let digest: String = sha2::Sha256::digest(t.admin.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(
            srv.query("SELECT hash FROM api_tokens WHERE name = 'ops'")
                .trim(),
            digest,
            "{backend:?}"
        );
        let list = String::from_utf8(srv.cmd(&["api-token", "list"]).stdout).unwrap();
        for token in [&t.viewer, &t.helpdesk, &t.approver, &t.admin] {
            assert!(!list.contains(token.as_str()), "{list}");
        }
        assert!(
            list.contains("ops admin") && list.contains("dashboard viewer"),
            "{list}"
        );
        let trail = audit(srv);
        assert!(trail.contains("api-token-add"), "{trail}");
        // A second token with a taken name, an unknown role: refused.
        assert!(!srv
            .cmd(&["api-token", "add", "ops", "--role", "viewer"])
            .status
            .success());
        assert!(!srv
            .cmd(&["api-token", "add", "x", "--role", "root"])
            .status
            .success());

        // No token, a wrong one, a malformed header: 401 on every route.
        let routes = [
            ("GET", "/v1/admin/devices".to_owned()),
            ("GET", "/v1/admin/audit".to_owned()),
            ("POST", "/v1/admin/reveal-requests".to_owned()),
            (
                "POST",
                "/v1/admin/reveal-requests/req-0123456789abcdef01234567/approve".to_owned(),
            ),
            (
                "POST",
                "/v1/admin/reveal-requests/req-0123456789abcdef01234567/deny".to_owned(),
            ),
            (
                "POST",
                "/v1/admin/reveal-requests/req-0123456789abcdef01234567/reveal".to_owned(),
            ),
        ];
        let wrong = format!("{}x", &t.admin[..t.admin.len() - 1]);
        for (method, path) in &routes {
            let (status, _) = admin_api(&srv.addr, None, method, path, &Value::Null);
            assert_eq!(status, 401, "{backend:?} {method} {path} without a token");
            for bad in [wrong.as_str(), "", "' OR '1'='1"] {
                let (status, _) = admin_api(&srv.addr, Some(bad), method, path, &Value::Null);
                assert_eq!(status, 401, "{backend:?} {method} {path} with {bad:?}");
            }
        }

        // The scheme's name is case-insensitive (RFC 9110); anything but Bearer is not a token.
        let with = |auth: String| {
            let headers = [("Authorization".to_owned(), auth)];
            http::http(&srv.addr, "GET", "/v1/admin/devices", &headers, b"").0
        };
        assert_eq!(with(format!("bearer {}", t.admin)), 200);
        assert_eq!(with(format!("Basic {}", t.admin)), 401);
        assert_eq!(with(t.admin.clone()), 401);

        // Right token, wrong role: 403.
        let (status, body) = t.request(&t.viewer);
        assert_eq!(status, 403, "a viewer requests: {body}");
        let (status, _) = t.request(&t.approver);
        assert_eq!(status, 403, "an approver requests");
        let (status, body) = t.request(&t.helpdesk);
        assert_eq!(status, 200, "{body}");
        let id = body["id"].as_str().unwrap().to_owned();
        for token in [&t.viewer, &t.helpdesk] {
            assert_eq!(t.step(token, &id, "approve").0, 403);
            assert_eq!(t.step(token, &id, "deny").0, 403);
        }
        assert_eq!(t.step(&t.viewer, &id, "reveal").0, 403);
        assert_eq!(t.step(&t.approver, &id, "reveal").0, 403);
        // Every role sees devices and the audit trail; no answer carries the key.
        for token in [&t.viewer, &t.helpdesk, &t.approver, &t.admin] {
            let (status, devices) = t.call(token, "GET", "/v1/admin/devices", Value::Null);
            assert_eq!(status, 200);
            assert_eq!(devices["devices"][0]["id"], t.device.as_str());
            assert_eq!(devices["devices"][0]["volumes"][0]["recovery"], "escrowed");
            assert!(!devices.to_string().contains(SECRET));
            let (status, trail) = t.call(token, "GET", "/v1/admin/audit", Value::Null);
            assert_eq!(status, 200);
            assert!(trail["records"].as_array().unwrap().len() > 3);
            assert!(!trail.to_string().contains(SECRET));
        }
        assert_eq!(seen(srv), "0", "nothing was revealed");

        // The fleet a page at a time, by id: every device once, `next` null on the last page.
        let mut all: Vec<String> = (0..4).map(|_| device_with_escrow(srv, SECRET).0).collect();
        all.push(t.device.clone());
        all.sort();
        let (mut walked, mut pages, mut after) = (Vec::new(), 0, String::new());
        loop {
            let path = format!("/v1/admin/devices?limit=2&after={after}");
            let (status, page) = t.call(&t.viewer, "GET", &path, Value::Null);
            assert_eq!(status, 200, "{page}");
            pages += 1;
            let ids = page["devices"].as_array().unwrap();
            assert!(ids.len() <= 2, "{page}");
            walked.extend(ids.iter().map(|d| d["id"].as_str().unwrap().to_owned()));
            match page["next"].as_str() {
                Some(next) => after = next.to_owned(),
                None => break,
            }
        }
        assert_eq!(walked, all);
        assert_eq!(pages, 3, "2 + 2 + 1");
        let (status, page) = t.call(&t.viewer, "GET", "/v1/admin/devices?limit=0", Value::Null);
        assert_eq!(
            (status, page["devices"].as_array().unwrap().len()),
            (200, 1)
        );
        let (status, _) = t.call(&t.viewer, "GET", "/v1/admin/devices?limit=x", Value::Null);
        assert_eq!(status, 400);

        // Revoked: 401 at once; an unknown name is an error.
        let out = srv.cmd(&["api-token", "revoke", "dashboard"]);
        assert!(out.status.success(), "{}", stderr(&out));
        let (status, _) = t.call(&t.viewer, "GET", "/v1/admin/devices", Value::Null);
        assert_eq!(status, 401);
        assert!(!srv
            .cmd(&["api-token", "revoke", "dashboard"])
            .status
            .success());
        assert!(audit(srv).contains("api-token-revoke"));
    }
}

#[test]
fn a_reveal_needs_another_persons_approval_and_happens_once() {
    for backend in backends() {
        let t = team(&backend);
        let srv = &t.srv;
        let (status, body) = t.request(&t.helpdesk);
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["state"], "pending");
        let id = body["id"].as_str().unwrap().to_owned();

        // Not yet approved: nothing.
        let (status, body) = t.step(&t.helpdesk, &id, "reveal");
        assert_eq!(status, 409, "{body}");
        assert!(body["error"]
            .as_str()
            .unwrap()
            .contains("not been approved"));
        // Nobody approves their own request, not even an admin.
        let (status, body) = t.request(&t.admin);
        assert_eq!(status, 200, "{body}");
        let own = body["id"].as_str().unwrap().to_owned();
        let (status, body) = t.step(&t.admin, &own, "approve");
        assert_eq!(status, 403, "{body}");

        // Approved by someone else; then only the requester reveals, once.
        let (status, body) = t.step(&t.approver, &id, "approve");
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["state"], "approved");
        let (status, _) = t.step(&t.approver, &id, "approve");
        assert_eq!(status, 409, "approved twice");
        assert_eq!(t.step(&t.admin, &id, "reveal").0, 403, "not the requester");
        assert_eq!(seen(srv), "0");
        let (status, body) = t.step(&t.helpdesk, &id, "reveal");
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["recovery_key"], SECRET);
        assert_eq!(seen(srv), "1", "the key is marked for rotation after use");
        let (status, body) = t.step(&t.helpdesk, &id, "reveal");
        assert_eq!(status, 409, "{body}");
        assert!(!body.to_string().contains(SECRET));
        assert!(body["error"].as_str().unwrap().contains("revealed already"));

        // Every step audited: who, the request id, the reason.
        let trail = audit(srv);
        for (action, who) in [
            ("reveal-request", "api:helpdesk-bot"),
            ("reveal-approve", "api:approver-bot"),
            ("key-show", "api:helpdesk-bot"),
        ] {
            let line = trail
                .lines()
                .find(|l| l.contains(&format!("{action} by \"{who}\"")))
                .unwrap_or_else(|| panic!("{backend:?}: no {action} by {who}:\n{trail}"));
            assert!(line.contains(&format!("[request {id}]")), "{line}");
            assert!(line.contains("ticket 4711"), "{line}");
            assert!(line.contains(&format!("device=\"{}\"", t.device)), "{line}");
        }
        assert_eq!(trail.matches("key-show").count(), 1, "{trail}");

        // Denied: nothing, ever.
        let (_, body) = t.request(&t.helpdesk);
        let denied = body["id"].as_str().unwrap().to_owned();
        let (status, body) = t.step(&t.admin, &denied, "deny");
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["state"], "denied");
        assert_eq!(t.step(&t.approver, &denied, "approve").0, 409);
        let (status, body) = t.step(&t.helpdesk, &denied, "reveal");
        assert_eq!(status, 409);
        assert!(body["error"].as_str().unwrap().contains("denied"));
        assert!(audit(srv).contains("reveal-deny by \"api:ops\""));
        assert_eq!(audit(srv).matches("key-show").count(), 1);

        // Expired: an approval past its time reveals nothing, and the expiry is audited.
        let (_, body) = t.request(&t.helpdesk);
        let late = body["id"].as_str().unwrap().to_owned();
        assert_eq!(t.step(&t.approver, &late, "approve").0, 200);
        srv.query(&format!(
            "UPDATE reveal_requests SET expires = expires - 86401 WHERE id = '{late}'"
        ));
        let (status, body) = t.step(&t.helpdesk, &late, "reveal");
        assert_eq!(status, 409, "{body}");
        assert!(body["error"].as_str().unwrap().contains("expired"));
        let trail = audit(srv);
        let expiry = trail
            .lines()
            .find(|l| l.contains("reveal-expire") && l.contains(&late))
            .unwrap_or_else(|| panic!("no expiry audited:\n{trail}"));
        assert!(expiry.contains("ticket 4711"), "{expiry}");
        assert_eq!(trail.matches("key-show").count(), 1);
        // A request nobody decided in time expires too.
        let (_, body) = t.request(&t.helpdesk);
        let undecided = body["id"].as_str().unwrap().to_owned();
        srv.query(&format!(
            "UPDATE reveal_requests SET expires = expires - 86401 WHERE id = '{undecided}'"
        ));
        assert_eq!(t.step(&t.approver, &undecided, "approve").0, 409);

        // Hostile and unknown ids, unknown devices and volumes, no reason.
        for id in [
            "req-0123456789abcdef01234567",
            "x'%20OR%20'1'='1",
            "%3Cscript%3E",
        ] {
            assert_eq!(t.step(&t.approver, id, "approve").0, 404, "{id}");
        }
        let bad = [
            json!({ "device": "dev-nope", "volume": "data", "reason": REASON }),
            json!({ "device": "dev-\u{0}x", "volume": "data", "reason": REASON }),
            json!({ "device": "x".repeat(10_000), "volume": "data", "reason": REASON }),
            json!({ "device": t.device, "volume": "data", "reason": "ticket\u{0}7" }),
            json!({ "device": t.device, "volume": "other", "reason": REASON }),
            json!({ "device": t.device, "volume": "../x", "reason": REASON }),
            json!({ "device": t.device, "volume": "data", "reason": "  " }),
            json!({ "device": t.device, "volume": "data" }),
            json!({ "device": t.device, "volume": "data", "reason": REASON, "extra": 1 }),
        ];
        for body in bad {
            let (status, answer) = t.call(
                &t.helpdesk,
                "POST",
                "/v1/admin/reveal-requests",
                body.clone(),
            );
            assert!(matches!(status, 400 | 404), "{body}: {status} {answer}");
        }
    }
}

#[test]
fn without_required_approval_the_requester_reveals_alone() {
    for backend in backends() {
        let mut t = team(&backend);
        t.srv
            .reconfigure("[reveal]\nrequire_approval = false\napproval_hours = 1\n");
        let (status, body) = t.request(&t.helpdesk);
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["state"], "approved");
        let id = body["id"].as_str().unwrap().to_owned();
        assert_eq!(
            t.step(&t.admin, &id, "reveal").0,
            403,
            "still the requester's"
        );
        let (status, body) = t.step(&t.helpdesk, &id, "reveal");
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["recovery_key"], SECRET);
        assert_eq!(t.step(&t.helpdesk, &id, "reveal").0, 409, "still once");
        let trail = audit(&t.srv);
        assert!(trail.contains("no approval required"), "{trail}");
        assert_eq!(seen(&t.srv), "1");
    }
}

#[test]
fn accounts_have_roles_and_old_accounts_become_admins() {
    for backend in backends() {
        let inst = Instance::prepare();
        let srv = Server::start_on(&inst, &backend);
        srv.add_account("hannah", "a long help desk passphrase", "helpdesk");
        srv.add_account("arthur", "a long approver passphrase", "approver");
        srv.add_admin("olivia", "an admin's long passphrase");
        let bad = srv.cmd_stdin(
            &[
                "admin",
                "add",
                "x",
                "--role",
                "superuser",
                "--password-stdin",
            ],
            b"a long enough password\n",
        );
        assert!(!bad.status.success());
        assert!(
            stderr(&bad).contains("viewer, helpdesk, approver, admin"),
            "{}",
            stderr(&bad)
        );
        let list = |srv: &Server| String::from_utf8(srv.cmd(&["admin", "list"]).stdout).unwrap();
        assert_eq!(
            list(&srv),
            "arthur approver\nhannah helpdesk\nolivia admin\n",
            "{backend:?}"
        );
        let out = srv.cmd(&["admin", "set-role", "hannah", "viewer"]);
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(list(&srv).contains("hannah viewer"));
        assert!(!srv
            .cmd(&["admin", "set-role", "nobody", "viewer"])
            .status
            .success());
        assert!(!srv
            .cmd(&["admin", "set-role", "hannah", "root"])
            .status
            .success());
        assert!(audit(&srv).contains("admin-set-role"), "{}", audit(&srv));

        // A database from before roles: its accounts become admins when the server opens it.
        srv.query(
            "DELETE FROM schema_version WHERE version = 8; DROP TABLE reveal_requests; \
             DROP TABLE api_tokens; DELETE FROM admins; ALTER TABLE admins DROP COLUMN role; \
             INSERT INTO admins (name, hash, created) VALUES ('old-timer', 'x', '2024-01-01')",
        );
        assert_eq!(list(&srv), "old-timer admin\n", "{backend:?}");
        assert_eq!(
            srv.query("SELECT COUNT(*) FROM reveal_requests").trim(),
            "0"
        );
    }
}

#[test]
fn the_config_file_is_strict() {
    let inst = Instance::prepare();
    let srv = Server::start(&inst);
    let file = inst.path("server.toml");
    // `serve` with the file: it must refuse to start (a server that starts is killed after
    // 10 s and fails the test, rather than hanging it).
    let serve = |file: &std::path::Path| {
        let mut child = std::process::Command::new(bin("keyward-server"))
            .args(["serve", "--listen", "127.0.0.1:0", "--state"])
            .arg(&srv.state)
            .arg("--config")
            .arg(file)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while child.try_wait().unwrap().is_none() {
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                let out = child.wait_with_output().unwrap();
                panic!("serve started with {}: {}", file.display(), stderr(&out));
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        child.wait_with_output().unwrap()
    };
    for bad in [
        "[reveal]\nrequire_aproval = false\n",
        "[revael]\n",
        "[reveal]\napproval_hours = 0\n",
    ] {
        std::fs::write(&file, bad).unwrap();
        let out = serve(&file);
        assert!(!out.status.success(), "{bad}");
        assert!(stderr(&out).contains("server.toml"), "{}", stderr(&out));
    }
    let out = serve(&inst.path("missing.toml"));
    assert!(!out.status.success());
    assert!(stderr(&out).contains("missing.toml"), "{}", stderr(&out));
}
