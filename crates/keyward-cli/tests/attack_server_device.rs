//! The escrow server attacked by one of its own enrolled devices (a compromised agent holding a
//! genuine device key), with the real server on each database: what it can make the server
//! store, and what it can make the server's database choke on.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;

use common::escrow::*;
use common::http::{enroll_key, escrow_body, http, signed_as};
use common::*;
use ed25519_dalek::SigningKey;

/// An age file holding `key`, sealed to this server's recipient (what a device uploads).
fn sealed_to(srv: &Server, key: &str) -> Vec<u8> {
    let (recipient, _) = srv.public_keys();
    let recipient = <age::x25519::Recipient as std::str::FromStr>::from_str(&recipient).unwrap();
    age::encrypt(&recipient, key.as_bytes()).unwrap()
}

/// Upload one escrow of `volume` as `device`; (status, answer).
fn upload(
    srv: &Server,
    key: &SigningKey,
    device: &str,
    volume: &str,
    rotation: &str,
) -> (u16, String) {
    let path = format!("/v1/devices/{device}/escrow/{volume}");
    let body = escrow_body(
        rotation,
        &sealed_to(srv, &format!("key {volume} {rotation}")),
    );
    let h = signed_as(
        key,
        "PUT",
        &path,
        body.as_bytes(),
        &format!("n-{volume}-{rotation}-pad0000"),
    );
    http(&srv.addr, "PUT", &path, &h, body.as_bytes())
}

fn escrow_id(answer: &str) -> String {
    serde_json::from_str::<serde_json::Value>(answer).unwrap()["escrow_id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// A check-in as `device`, with `content_type` (None: no such header); (status, answer).
fn checkin(
    srv: &Server,
    key: &SigningKey,
    device: &str,
    report: &serde_json::Value,
    content_type: Option<&str>,
    nonce: &str,
) -> (u16, String) {
    let path = format!("/v1/devices/{device}/checkin");
    let body = report.to_string();
    let h = signed_as(key, "POST", &path, body.as_bytes(), nonce);
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Length: {}\r\n",
        srv.addr,
        body.len()
    );
    if let Some(t) = content_type {
        req.push_str(&format!("Content-Type: {t}\r\n"));
    }
    for (k, v) in h {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(&body);
    let mut s = TcpStream::connect(&srv.addr).unwrap();
    s.write_all(req.as_bytes()).unwrap();
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).unwrap();
    let resp = String::from_utf8_lossy(&resp).into_owned();
    let status = resp
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, resp)
}

fn volume_report(volume: &str, escrow: &str) -> serde_json::Value {
    serde_json::json!({ "volume": volume, "recovery": "escrowed", "escrow_id": escrow,
        "rotated_at": null, "service": "ok", "holders": 2, "violations": 0 })
}

fn count(srv: &Server, sql: &str) -> usize {
    srv.query(sql).trim().parse().unwrap()
}

/// Escrows are kept per device *and volume*, and a device names its volumes: before, one
/// device key stored 16 escrows (16 KiB each) under every volume name it made up, without
/// bound. Now a device's escrows name at most 64 volumes (as many as a check-in may report);
/// a new volume past that is a 409, with nothing stored, while its volumes keep working. And
/// only the check-in's own `escrow_id` keeps an escrow from the prune: before, any escrow id
/// anywhere in the stored report (a command report's free-text `detail`) kept it forever.
#[test]
fn a_device_cannot_store_escrows_without_bound() {
    for backend in backends() {
        let inst = Instance::prepare();
        let srv = Server::start_on(&inst, &backend);
        let key = SigningKey::from_bytes(&[41u8; 32]);
        let device = enroll_key(&srv.addr, &srv.token(), &key);
        for n in 0..70 {
            let (status, answer) = upload(&srv, &key, &device, &format!("v{n}"), "rot-0");
            if n < 64 {
                assert_eq!(status, 200, "volume {n}: {answer}");
            } else {
                assert_eq!(status, 409, "volume {n} (past 64): {answer}");
                assert!(answer.contains("64 volumes"), "{answer}");
            }
        }
        let volumes = count(
            &srv,
            &format!("SELECT COUNT(DISTINCT volume) FROM escrows WHERE device = '{device}'"),
        );
        assert_eq!(volumes, 64, "{backend:?}");
        // Its own volumes still take new rotations.
        let (status, answer) = upload(&srv, &key, &device, "v0", "rot-1");
        assert_eq!(status, 200, "{answer}");
        // Another device is not limited by this one's volumes.
        let other = SigningKey::from_bytes(&[42u8; 32]);
        let other_id = enroll_key(&srv.addr, &srv.token(), &other);
        let (status, answer) = upload(&srv, &other, &other_id, "v69", "rot-0");
        assert_eq!(status, 200, "{answer}");

        // Naming old escrows in a command report's detail keeps nothing from the prune.
        let mut ids = vec![];
        for n in 1..=16 {
            let (status, answer) = upload(&srv, &key, &device, "v1", &format!("rot-{n}"));
            assert_eq!(status, 200, "{answer}");
            ids.push(escrow_id(&answer));
        }
        let active = ids.last().unwrap().clone();
        let reports: Vec<serde_json::Value> = ids
            .chunks(8)
            .enumerate()
            .map(|(k, chunk)| {
                serde_json::json!({ "id": format!("cmd-not-a-real-one-{k:04}"), "status": "done",
                    "detail": chunk.iter().map(|id| format!("\"escrow_id\":\"{id}\"")).collect::<Vec<_>>().join(" ") })
            })
            .collect();
        let report =
            serde_json::json!({ "volumes": [volume_report("v1", &active)], "commands": reports });
        let (status, answer) = checkin(
            &srv,
            &key,
            &device,
            &report,
            Some("application/json"),
            "keep-them-all-000001",
        );
        assert_eq!(status, 200, "{answer}");
        for n in 17..=32 {
            let (status, answer) = upload(&srv, &key, &device, "v1", &format!("rot-{n}"));
            assert_eq!(status, 200, "{answer}");
        }
        let kept = count(
            &srv,
            &format!("SELECT COUNT(*) FROM escrows WHERE device = '{device}' AND volume = 'v1'"),
        );
        assert_eq!(
            kept, 17,
            "{backend:?}: the 16 newest and the active one, nothing named elsewhere"
        );
        let active_kept = count(
            &srv,
            &format!("SELECT COUNT(*) FROM escrows WHERE id = '{active}'"),
        );
        assert_eq!(
            active_kept, 1,
            "the escrow the check-in names as active was pruned"
        );
    }
}

/// The NUL guard read JSON's `\u0000` escape only in bodies labelled JSON, but the device API
/// parses its body as JSON whatever its label: a check-in sent as `text/plain` (or with no
/// content type) carried a NUL in a command report into the database — stored on SQLite, a
/// 500 on PostgreSQL (which refuses NUL in text), failing the writer's whole batch, which is
/// then retried unit by unit for every device in it. Now it is a 400 at the edge on both, and
/// the command stays as it was.
#[test]
fn a_nul_in_a_device_body_of_any_content_type_is_refused() {
    for backend in backends() {
        let inst = Instance::prepare();
        let srv = Server::start_on(&inst, &backend);
        let key = SigningKey::from_bytes(&[43u8; 32]);
        let device = enroll_key(&srv.addr, &srv.token(), &key);
        let out = srv.cmd(&["command", "rotate-service", &device, "data"]);
        assert!(out.status.success(), "{}", stderr(&out));
        let listed = srv.cmd(&["command", "list", &device, "--json"]);
        assert!(listed.status.success(), "{}", stderr(&listed));
        let listed: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
        let command = listed[0]["id"].as_str().unwrap().to_owned();
        for (k, content_type) in [Some("text/plain"), None, Some("application/octet-stream")]
            .into_iter()
            .enumerate()
        {
            for (j, (id, detail)) in [
                (command.clone(), "done\u{0}then some".to_owned()),
                (format!("{command}\u{0}"), "done".to_owned()),
            ]
            .into_iter()
            .enumerate()
            {
                let report = serde_json::json!({ "volumes": [],
                    "commands": [{ "id": id, "status": "done", "detail": detail }] });
                assert!(report.to_string().contains("\\u0000"));
                let (status, answer) = checkin(
                    &srv,
                    &key,
                    &device,
                    &report,
                    content_type,
                    &format!("nul-checkin-{k}-{j}-0000"),
                );
                assert_eq!(
                    status, 400,
                    "{backend:?} {content_type:?}: a NUL reached the handler: {answer}"
                );
            }
        }
        let status = srv.query(&format!(
            "SELECT status FROM commands WHERE id = '{command}'"
        ));
        assert_eq!(status.trim(), "pending", "{backend:?}");
        // The same check-in without the NUL is taken.
        let report = serde_json::json!({ "volumes": [],
            "commands": [{ "id": command, "status": "done", "detail": "done" }] });
        let (status, answer) = checkin(
            &srv,
            &key,
            &device,
            &report,
            Some("text/plain"),
            "nul-checkin-clean-0000",
        );
        assert_eq!(status, 200, "{answer}");
        let status = srv.query(&format!(
            "SELECT status FROM commands WHERE id = '{command}'"
        ));
        assert_eq!(status.trim(), "done", "{backend:?}");
    }
}

/// Each command report in a check-in is one `UPDATE` in the writer's transaction, which every
/// device's escrows and check-ins wait behind; the body limit (64 KiB) let a device send about
/// a thousand per check-in, and its ids unchecked. The agent keeps at most 256 unreported
/// outcomes, with ids of at most 64 of `[A-Za-z0-9_-]`; now a check-in with more reports, or
/// another id, is a 400 with nothing written, and one with 256 is taken.
#[test]
fn a_check_in_carries_at_most_the_agents_256_command_reports() {
    for backend in backends() {
        let inst = Instance::prepare();
        let srv = Server::start_on(&inst, &backend);
        let key = SigningKey::from_bytes(&[44u8; 32]);
        let device = enroll_key(&srv.addr, &srv.token(), &key);
        let reports = |n: usize, id: &dyn Fn(usize) -> String| -> serde_json::Value {
            let commands: Vec<serde_json::Value> = (0..n)
                .map(|k| serde_json::json!({ "id": id(k), "status": "done", "detail": "" }))
                .collect();
            serde_json::json!({ "volumes": [], "commands": commands })
        };
        let checkins = || {
            count(
                &srv,
                &format!("SELECT COUNT(*) FROM checkins WHERE device = '{device}'"),
            )
        };
        let short = |k: usize| format!("c{k}");
        for (n, (report, what)) in [
            (reports(1000, &short), "1000 reports"),
            (reports(257, &short), "257 reports"),
            (
                reports(1, &|_| "not an id; DROP TABLE commands".to_owned()),
                "a malformed id",
            ),
            (reports(1, &|_| "x".repeat(65)), "a 65-character id"),
        ]
        .into_iter()
        .enumerate()
        {
            assert!(
                report.to_string().len() < 64 * 1024,
                "{what}: over the body limit"
            );
            let (status, answer) = checkin(
                &srv,
                &key,
                &device,
                &report,
                Some("application/json"),
                &format!("many-reports-{n}-000000"),
            );
            assert_eq!(status, 400, "{backend:?}: {what}: {answer}");
            assert_eq!(checkins(), 0, "{backend:?}: {what} was kept");
        }
        let (status, answer) = checkin(
            &srv,
            &key,
            &device,
            &reports(256, &|k| format!("cmd-{k:04}-{}", "a".repeat(55))),
            Some("application/json"),
            "many-reports-ok-000000",
        );
        assert_eq!(status, 200, "{backend:?}: the agent's most: {answer}");
        assert_eq!(checkins(), 1);
    }
}
