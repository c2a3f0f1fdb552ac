//! Durability under kill -9: the load generator escrows real keys (sealed to the server's age
//! recipient) from a few simulated devices, verifies every receipt against the server's key
//! and appends it to a file the moment it arrives; the server is killed with SIGKILL mid-load
//! and restarted on the same address while the load goes on. Then `keyward-server escrow
//! check` reads every receipted escrow back from the database, checks its ciphertext against
//! the receipt and decrypts it to the key the device sealed. Target: zero lost, on SQLite and
//! PostgreSQL. (A killed process cannot tell `synchronous = FULL` from weaker settings: the
//! fsync is checked in the server's own tests; this proves no receipt leaves before its
//! commit.)
#![allow(clippy::unwrap_used)]

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::escrow::*;
use common::*;

fn receipts_in(file: &Path) -> usize {
    std::fs::read_to_string(file)
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

/// `NAME N` from the check's output.
fn count(out: &str, name: &str) -> u64 {
    out.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {out}"))
}

#[test]
fn every_receipted_escrow_survives_kill_9() {
    for backend in backends() {
        survives_kill_9(&backend);
    }
}

fn survives_kill_9(backend: &Backend) {
    let inst = Instance::prepare();
    let mut srv = Server::start_on(&inst, backend);
    // Every receipted escrow is checked, so none may be pruned as the newest 16 move on.
    srv.serve_args = vec!["--escrows-kept".into(), "1000000".into()];
    srv.stop();
    srv.resume();
    let (recipient, server_key) = srv.public_keys();
    let tokens = srv.tokens(16);
    let receipts = inst.path("receipts");
    let mut load = Command::new(bin("keyward-loadgen"))
        .args(["--server", &srv.url(), "--mode", "escrow"])
        .args(["--concurrency", "8", "--duration", "4"])
        .args(["--recipient", &recipient, "--server-key", &server_key])
        .arg("--receipts")
        .arg(&receipts)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    load.stdin
        .take()
        .unwrap()
        .write_all(tokens.as_bytes())
        .unwrap();

    // Mid-load: receipts are arriving, requests are in flight.
    let deadline = Instant::now() + Duration::from_secs(60);
    while receipts_in(&receipts) < 60 {
        assert!(
            Instant::now() < deadline,
            "no load: {} receipts",
            receipts_in(&receipts)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    srv.crash();
    let before = receipts_in(&receipts);
    std::thread::sleep(Duration::from_millis(300));
    srv.resume();

    let out = load.wait_with_output().unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}\n{report}", stderr(&out));
    // Only the outage failed (connections refused or cut); no receipt was bad.
    assert!(!report.contains("bad-answer"), "{report}");
    let after = receipts_in(&receipts);
    assert!(
        after > before,
        "the load went on after the restart: {report}"
    );
    srv.crash();

    let check = srv.cmd(&["escrow", "check", "--receipts", receipts.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&check.stdout);
    assert!(check.status.success(), "{}\n{text}", stderr(&check));
    assert_eq!(count(&text, "receipts"), after as u64, "{text}");
    assert_eq!(count(&text, "recovered"), after as u64, "{text}");
    for lost in ["missing", "mismatched", "undecryptable"] {
        assert_eq!(count(&text, lost), 0, "{text}");
    }
    let name = match backend {
        Backend::Sqlite => "SQLite",
        Backend::Postgres(_) => "PostgreSQL",
    };
    eprintln!("{name}: {before} receipts before kill -9, {after} in all; every one recovered");
}
