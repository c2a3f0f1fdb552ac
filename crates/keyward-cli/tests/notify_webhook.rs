//! `[notify]` (issue 20): the real server sends its webhook to a real HTTP receiver
//! (`tests/notify/receiver.py`, Python's stdlib) that checks the HMAC-SHA256 signature on its
//! own, with the secret file, and records only verified events. Proven here: request →
//! approve → reveal and a denial each give exactly one verified event with the right fields and
//! never the key (on both databases), counted in `/metrics`; single-person reveals (API and
//! `key show`) notify too; a receiver that is down at first still gets every event once it
//! starts (retries); a hanging receiver does not slow the API; a restart with undelivered
//! events still delivers them (the outbox is in the database); events never delivered are
//! given up and audited; two instances on one PostgreSQL database send each event once; bad
//! secrets and URLs stop the server; the receiver itself refuses a tampered body.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::escrow::*;
use common::pki::make_pki;
use common::team::*;
use common::*;
use serde_json::Value;

/// The webhook's key: 64 hex characters, as `openssl rand -hex 32` makes.
const KEY: &str = "9f3c2a71d0b84e6f5a1c7e2d3b9f8a6c4e5d7f0a1b2c3d4e5f60718293a4b5c6";

/// A free loopback port (nothing listens on it until a receiver starts there).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The receiver script, running.
struct Receiver {
    child: Child,
    out: PathBuf,
    seen: PathBuf,
}

impl Receiver {
    /// Start it on `port`, answering after `hang` seconds.
    fn start(dir: &std::path::Path, port: u16, hang: u32) -> Self {
        Self::start_with(dir, port, hang, &[])
    }

    /// The same, with more of the script's options (e.g. `--tls-cert`).
    fn start_with(dir: &std::path::Path, port: u16, hang: u32, more: &[&std::ffi::OsStr]) -> Self {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/notify/receiver.py");
        let (out, seen) = (dir.join("events.jsonl"), dir.join("seen.jsonl"));
        let mut child = Command::new("python3")
            .arg(script)
            .args(more)
            .args(["--port", &port.to_string(), "--hang", &hang.to_string()])
            .arg("--secret-file")
            .arg(dir.join("notify.key"))
            .arg("--out")
            .arg(&out)
            .arg("--seen")
            .arg(&seen)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(
            line.trim(),
            format!("ready {port}"),
            "the receiver did not start"
        );
        Receiver { child, out, seen }
    }

    /// The verified deliveries so far, each {timestamp, signature, raw, event}.
    fn deliveries(&self) -> Vec<Value> {
        lines(&self.out)
    }

    /// Wait until `n` verified deliveries arrived (and a moment more, to see no extra).
    fn wait_for(&self, n: usize, within: Duration) -> Vec<Value> {
        let deadline = Instant::now() + within;
        while self.deliveries().len() < n {
            assert!(
                Instant::now() < deadline,
                "{} of {n} events arrived: {:#?}",
                self.deliveries().len(),
                events(&self.deliveries())
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        std::thread::sleep(Duration::from_millis(1500));
        self.deliveries()
    }

    /// Attempts that reached it, verified or not.
    fn attempts(&self) -> usize {
        lines(&self.seen).len()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn lines(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The directory the key, the config and the receiver's files live in.
fn dir(t: &Team) -> PathBuf {
    t.srv.state.parent().unwrap().to_owned()
}

/// Write the key (0600) and serve with `[notify]` to `port` (plus `extra` lines).
fn notify_to(t: &mut Team, port: u16, extra: &str) {
    notify_url(t, &format!("http://127.0.0.1:{port}/hooks/keyward"), extra);
}

/// The same, to `url`.
fn notify_url(t: &mut Team, url: &str, extra: &str) {
    let key = dir(t).join("notify.key");
    std::fs::write(&key, format!("{KEY}\n")).unwrap();
    chmod(&key, 0o600);
    t.srv.reconfigure(&format!(
        "[notify]\nurl = \"{url}\"\nsecret_file = \"{}\"\n{extra}",
        key.display()
    ));
}

/// The events' bodies, in the order they arrived.
fn events(deliveries: &[Value]) -> Vec<Value> {
    deliveries.iter().map(|d| d["event"].clone()).collect()
}

fn outbox(srv: &Server) -> String {
    srv.query("SELECT COUNT(*) FROM notify_outbox")
        .trim()
        .to_owned()
}

/// Each event's fields, and no key anywhere.
fn check_event(e: &Value, kind: &str, who: &str, t: &Team, request: Option<&str>) {
    assert_eq!(e["event"], kind, "{e}");
    assert_eq!(e["who"], who, "{e}");
    assert_eq!(e["device"], t.device.as_str(), "{e}");
    assert_eq!(e["volume"], "data", "{e}");
    assert_eq!(e["reason"], REASON, "{e}");
    match request {
        Some(id) => assert_eq!(e["request"], id, "{e}"),
        None => assert!(e["request"].is_null(), "{e}"),
    }
    let id = e["id"].as_str().unwrap();
    assert!(id.starts_with("evt-") && id.len() == 28, "{e}");
    let at = e["at"].as_str().unwrap();
    assert!(
        at.len() >= 20 && at.ends_with('Z') && at.as_bytes()[10] == b'T',
        "{e}"
    );
    let mut fields: Vec<&str> = e.as_object().unwrap().keys().map(String::as_str).collect();
    fields.sort_unstable();
    assert_eq!(
        fields,
        ["at", "device", "event", "id", "reason", "request", "volume", "who"]
    );
}

#[test]
fn every_step_of_a_reveal_and_a_denial_is_one_verified_event_without_the_key() {
    for backend in backends() {
        let mut t = team(&backend);
        let port = free_port();
        notify_to(&mut t, port, "");
        let rx = Receiver::start(&dir(&t), port, 0);

        let (status, body) = t.request(&t.helpdesk);
        assert_eq!(status, 200, "{body}");
        let id = body["id"].as_str().unwrap().to_owned();
        assert_eq!(t.step(&t.approver, &id, "approve").0, 200);
        let (status, body) = t.step(&t.helpdesk, &id, "reveal");
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["recovery_key"], SECRET);
        let (_, body) = t.request(&t.helpdesk);
        let denied = body["id"].as_str().unwrap().to_owned();
        assert_eq!(t.step(&t.admin, &denied, "deny").0, 200);
        // Refused steps are no events.
        assert_eq!(t.step(&t.helpdesk, &denied, "reveal").0, 409);
        assert_eq!(t.step(&t.helpdesk, &id, "reveal").0, 409);

        let got = rx.wait_for(5, Duration::from_secs(20));
        assert_eq!(
            got.len(),
            5,
            "{backend:?}: exactly one event a step: {got:#?}"
        );
        let e = events(&got);
        check_event(&e[0], "reveal-requested", "api:helpdesk-bot", &t, Some(&id));
        check_event(&e[1], "reveal-approved", "api:approver-bot", &t, Some(&id));
        check_event(&e[2], "key-revealed", "api:helpdesk-bot", &t, Some(&id));
        check_event(
            &e[3],
            "reveal-requested",
            "api:helpdesk-bot",
            &t,
            Some(&denied),
        );
        check_event(&e[4], "reveal-denied", "api:ops", &t, Some(&denied));
        let ids: std::collections::BTreeSet<&str> =
            e.iter().map(|e| e["id"].as_str().unwrap()).collect();
        assert_eq!(ids.len(), 5, "distinct event ids");
        for d in &got {
            assert!(!d["raw"].as_str().unwrap().contains(SECRET), "{d}");
            assert!(!d["raw"].as_str().unwrap().contains(KEY), "{d}");
            assert_eq!(d["content_type"], "application/json");
            assert!(d["signature"].as_str().unwrap().starts_with("sha256="));
        }
        // Events carry the audit record's time; delivered means gone from the outbox.
        let trail = t
            .srv
            .query("SELECT at FROM audit WHERE action = 'key-show'");
        assert_eq!(trail.trim(), e[2]["at"].as_str().unwrap());
        assert_eq!(outbox(&t.srv), "0");
        assert_eq!(
            http::gauge(&t.srv.addr, "keyward_notify_delivered_total"),
            "5"
        );
        assert_eq!(
            http::gauge(&t.srv.addr, "keyward_notify_failed_attempts_total"),
            "0"
        );

        // The receiver itself: a tampered body, or a signature moved to another timestamp,
        // is refused and not recorded.
        let genuine = &got[0];
        let raw = genuine["raw"].as_str().unwrap();
        let addr = format!("127.0.0.1:{port}");
        let post = |ts: &str, body: &str| {
            let headers = [
                ("X-Keyward-Timestamp".to_owned(), ts.to_owned()),
                (
                    "X-Keyward-Signature".to_owned(),
                    genuine["signature"].as_str().unwrap().to_owned(),
                ),
            ];
            http::http(&addr, "POST", "/hooks/keyward", &headers, body.as_bytes()).0
        };
        let ts = genuine["timestamp"].as_str().unwrap();
        let tampered = raw.replace("reveal-requested", "reveal-approved");
        assert_ne!(tampered, raw);
        assert_eq!(post(ts, &tampered), 401, "a tampered body");
        let later = (ts.parse::<i64>().unwrap() + 1).to_string();
        assert_eq!(post(&later, raw), 401, "another timestamp");
        assert_eq!(rx.deliveries().len(), 5);
    }
}

#[test]
fn two_instances_on_one_postgresql_database_send_each_event_once() {
    let Some(pg) = backends()
        .into_iter()
        .find(|b| matches!(b, Backend::Postgres(_)))
    else {
        return;
    };
    let mut t = team(&pg);
    let port = free_port();
    notify_to(&mut t, port, "");
    let mut other = Server::offline(t.srv.state.clone(), t.srv.db.clone());
    other.serve_args = t.srv.serve_args.clone();
    other.resume();
    // Each attempt takes a second, so both senders are busy at once with the backlog.
    let rx = Receiver::start(&dir(&t), port, 1);
    let mut ids = Vec::new();
    for i in 0..6 {
        let addr = if i % 2 == 0 { &t.srv.addr } else { &other.addr };
        let body = serde_json::json!({ "device": t.device, "volume": "data", "reason": REASON });
        let (status, body) = http::admin_api(
            addr,
            Some(&t.helpdesk),
            "POST",
            "/v1/admin/reveal-requests",
            &body,
        );
        assert_eq!(status, 200, "{body}");
        ids.push(body["id"].as_str().unwrap().to_owned());
    }
    let got = rx.wait_for(6, Duration::from_secs(30));
    std::thread::sleep(Duration::from_secs(3));
    let e = events(&rx.deliveries());
    assert_eq!(e.len(), 6, "each event once: {got:#?}");
    let mut requests: Vec<String> = e
        .iter()
        .map(|e| e["request"].as_str().unwrap().to_owned())
        .collect();
    requests.sort();
    ids.sort();
    assert_eq!(requests, ids);
    assert_eq!(rx.attempts(), 6, "no event was sent twice");
    assert_eq!(outbox(&t.srv), "0");
}

#[test]
fn single_person_reveals_notify_too_from_the_api_and_the_cli() {
    let mut t = team(&Backend::Sqlite);
    let port = free_port();
    notify_to(
        &mut t,
        port,
        "[reveal]\nrequire_approval = false\napproval_hours = 1\n",
    );
    let rx = Receiver::start(&dir(&t), port, 0);
    let (status, body) = t.request(&t.helpdesk);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["state"], "approved");
    let id = body["id"].as_str().unwrap().to_owned();
    assert_eq!(t.step(&t.helpdesk, &id, "reveal").0, 200);
    // `key show` at the server's terminal: queued by the CLI, sent by the running server.
    let config = t.srv.state.with_file_name("server.toml");
    let out = t.srv.cmd(&[
        "key",
        "show",
        &t.device,
        "data",
        "--reason",
        REASON,
        "--config",
        config.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let got = rx.wait_for(3, Duration::from_secs(20));
    let e = events(&got);
    assert_eq!(e.len(), 3, "{e:#?}");
    check_event(&e[0], "reveal-requested", "api:helpdesk-bot", &t, Some(&id));
    check_event(&e[1], "key-revealed", "api:helpdesk-bot", &t, Some(&id));
    let who = e[2]["who"].as_str().unwrap();
    check_event(&e[2], "key-revealed", who, &t, None);
    assert!(who.contains("uid 0"), "{who}");
}

#[test]
fn a_receiver_down_at_first_gets_every_event_once_it_starts() {
    let mut t = team(&Backend::Sqlite);
    let port = free_port();
    notify_to(&mut t, port, "");
    let (_, body) = t.request(&t.helpdesk);
    let id = body["id"].as_str().unwrap().to_owned();
    assert_eq!(t.step(&t.approver, &id, "approve").0, 200);
    // Refused, and retried: attempts count up while nothing listens.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let attempts = t.srv.query("SELECT MIN(attempts) FROM notify_outbox");
        if attempts.trim().parse::<i64>().unwrap_or(0) >= 2 {
            break;
        }
        assert!(Instant::now() < deadline, "no retries: {attempts}");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(outbox(&t.srv), "2");
    let rx = Receiver::start(&dir(&t), port, 0);
    let e = events(&rx.wait_for(2, Duration::from_secs(30)));
    assert_eq!(e.len(), 2, "{e:#?}");
    check_event(&e[0], "reveal-requested", "api:helpdesk-bot", &t, Some(&id));
    check_event(&e[1], "reveal-approved", "api:approver-bot", &t, Some(&id));
    assert_eq!(outbox(&t.srv), "0");
}

#[test]
fn a_hanging_receiver_does_not_slow_the_api() {
    let mut t = team(&Backend::Sqlite);
    let port = free_port();
    notify_to(&mut t, port, "timeout_secs = 20\n");
    let rx = Receiver::start(&dir(&t), port, 30);
    let timed = |f: &dyn Fn() -> (u16, Value)| {
        let start = Instant::now();
        let (status, body) = f();
        (status, body, start.elapsed())
    };
    let (status, body, took) = timed(&|| t.request(&t.helpdesk));
    assert_eq!(status, 200, "{body}");
    let id = body["id"].as_str().unwrap().to_owned();
    assert!(took < Duration::from_secs(1), "request took {took:?}");
    // The sender is now stuck in the receiver's 30 s sleep.
    let deadline = Instant::now() + Duration::from_secs(10);
    while rx.attempts() == 0 {
        assert!(
            Instant::now() < deadline,
            "the sender never reached the receiver"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let (status, _, took) = timed(&|| t.step(&t.approver, &id, "approve"));
    assert_eq!(status, 200);
    assert!(took < Duration::from_secs(1), "approve took {took:?}");
    let (status, body, took) = timed(&|| t.step(&t.helpdesk, &id, "reveal"));
    assert_eq!(status, 200);
    assert_eq!(body["recovery_key"], SECRET);
    assert!(took < Duration::from_secs(1), "reveal took {took:?}");
    assert_eq!(rx.attempts(), 1, "one attempt at a time");
}

#[test]
fn undelivered_events_survive_a_restart() {
    let mut t = team(&Backend::Sqlite);
    let port = free_port();
    notify_to(&mut t, port, "");
    let (_, body) = t.request(&t.helpdesk);
    let id = body["id"].as_str().unwrap().to_owned();
    assert_eq!(t.step(&t.approver, &id, "approve").0, 200);
    assert_eq!(t.step(&t.helpdesk, &id, "reveal").0, 200);
    t.srv.crash();
    assert_eq!(outbox(&t.srv), "3", "queued in the database");
    let rx = Receiver::start(&dir(&t), port, 0);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(rx.attempts(), 0, "nothing sends while the server is down");
    t.srv.resume();
    let e = events(&rx.wait_for(3, Duration::from_secs(30)));
    assert_eq!(e.len(), 3, "{e:#?}");
    check_event(&e[0], "reveal-requested", "api:helpdesk-bot", &t, Some(&id));
    check_event(&e[1], "reveal-approved", "api:approver-bot", &t, Some(&id));
    check_event(&e[2], "key-revealed", "api:helpdesk-bot", &t, Some(&id));
    assert_eq!(outbox(&t.srv), "0");
}

#[test]
fn an_event_nobody_takes_is_given_up_and_audited() {
    let mut t = team(&Backend::Sqlite);
    let port = free_port();
    notify_to(&mut t, port, "give_up_secs = 2\n");
    let (_, body) = t.request(&t.helpdesk);
    let id = body["id"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(20);
    let failed = loop {
        let failed = t
            .srv
            .query("SELECT who || ' ' || reason FROM audit WHERE action = 'notify-failed'");
        if !failed.trim().is_empty() {
            break failed;
        }
        assert!(Instant::now() < deadline, "never given up");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(failed.starts_with("server webhook event evt-"), "{failed}");
    assert!(failed.contains("(reveal-requested)"), "{failed}");
    assert_eq!(outbox(&t.srv), "0");
    let device = t.srv.query(&format!(
        "SELECT device FROM audit WHERE action = 'notify-failed' AND device = '{}'",
        t.device
    ));
    assert_eq!(device.trim(), t.device, "{id}");
}

#[test]
fn a_secret_others_may_read_or_a_short_one_or_plain_http_elsewhere_stops_the_server() {
    let inst = Instance::prepare();
    let mut srv = Server::start(&inst);
    let dir = srv.state.parent().unwrap().to_owned();
    let key = dir.join("notify.key");
    let mut serve = |toml: &str| srv.refused_config(toml);
    let table = |url: &str| {
        format!(
            "[notify]\nurl = \"{url}\"\nsecret_file = \"{}\"\n",
            key.display()
        )
    };
    std::fs::write(&key, format!("{KEY}\n")).unwrap();
    chmod(&key, 0o640);
    let e = serve(&table("http://127.0.0.1:9/"));
    assert!(e.contains("lets others read it"), "{e}");
    chmod(&key, 0o600);
    std::fs::write(&key, "short\n").unwrap();
    let e = serve(&table("http://127.0.0.1:9/"));
    assert!(e.contains("at least 32"), "{e}");
    std::fs::write(&key, format!("{KEY}\n")).unwrap();
    let e = serve(&table("http://hooks.example.com/"));
    assert!(e.contains("plain http:// only to a loopback"), "{e}");
    std::fs::remove_file(&key).unwrap();
    let e = serve(&table("https://hooks.example.com/"));
    assert!(e.contains("notify.key"), "{e}");
}

/// A receiver behind a company CA: events reach it over HTTPS through `[notify] ca_file`;
/// with Mozilla's roots alone the handshake fails, nothing reaches it and the event waits in
/// the outbox; a ca_file with no certificate stops the server, naming the table and the file.
#[test]
fn a_receiver_behind_a_company_ca_is_trusted_through_ca_file_only() {
    let mut t = team(&Backend::Sqlite);
    let d = dir(&t);
    let (ca, cert, key) = make_pki(&d, "hook");
    let port = free_port();
    let url = format!("https://127.0.0.1:{port}/hooks/keyward");
    let tls = [
        std::ffi::OsStr::new("--tls-cert"),
        cert.as_os_str(),
        std::ffi::OsStr::new("--tls-key"),
        key.as_os_str(),
    ];
    notify_url(&mut t, &url, &format!("ca_file = \"{}\"\n", ca.display()));
    let rx = Receiver::start_with(&d, port, 0, &tls);
    let (status, body) = t.request(&t.helpdesk);
    assert_eq!(status, 200, "{body}");
    let got = rx.wait_for(1, Duration::from_secs(20));
    assert_eq!(events(&got).len(), 1, "{got:#?}");
    check_event(
        &events(&got)[0],
        "reveal-requested",
        "api:helpdesk-bot",
        &t,
        body["id"].as_str(),
    );

    notify_url(&mut t, &url, "");
    let (status, body) = t.request(&t.helpdesk);
    assert_eq!(status, 200, "{body}");
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(rx.deliveries().len(), 1, "nothing more verified");
    assert_eq!(rx.attempts(), 1, "no request got past the handshake");
    assert_eq!(outbox(&t.srv), "1", "the event waits to be sent");

    let junk = d.join("not-a-ca.pem");
    std::fs::write(&junk, "not a certificate\n").unwrap();
    let e = t.srv.refused_config(&format!(
        "[notify]\nurl = \"{url}\"\nsecret_file = \"{}\"\nca_file = \"{}\"\n",
        d.join("notify.key").display(),
        junk.display()
    ));
    assert!(
        e.contains("[notify] ca_file") && e.contains("holds no PEM certificate"),
        "{e}"
    );
}
