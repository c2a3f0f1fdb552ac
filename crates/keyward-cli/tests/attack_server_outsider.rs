//! The escrow server attacked by someone with no credentials at all, who can only reach its
//! port: holding its connections by sending a request's body a byte at a time.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::escrow::*;
use common::http::device_with_escrow;
use common::ui_client::Browser;
use common::*;

/// The idle timeout counts bytes in either direction, and hyper's header timeout ends with the
/// header, so a client that sent a whole header and then a byte of its body every few seconds
/// held its connection for as long as it liked (64 KiB at a byte per 29 s is three weeks); with
/// every connection of the cap held so, no device could escrow or check in and nobody could
/// open the web UI, for about 150 bytes a second from one outsider. Now a body must arrive
/// whole within `--body-read-timeout` (default 10 s): the trickler gets a 408 and its
/// connection is closed, and service resumes.
#[test]
fn a_body_sent_a_byte_at_a_time_cannot_hold_the_server() {
    let inst = Instance::prepare();
    let mut srv = Server::start(&inst);
    srv.serve_args = [
        "--max-connections",
        "8",
        "--idle-timeout",
        "30s",
        "--body-read-timeout",
        "3s",
    ]
    .map(String::from)
    .to_vec();
    srv.stop();
    srv.resume();

    let started = Instant::now();
    let trickles: Vec<_> = (0..8)
        .map(|n| {
            let addr = srv.addr.clone();
            std::thread::spawn(move || {
                let mut s = TcpStream::connect(&addr).unwrap();
                let (path, body) = if n % 2 == 0 {
                    (
                        "/v1/enroll",
                        "{\"token\":\"kwe_x\",\"device_key\":\"AAAA\"}",
                    )
                } else {
                    ("/ui/login", "name=admin&password=guess&csrf=x")
                };
                let kind = if n % 2 == 0 {
                    "application/json"
                } else {
                    "application/x-www-form-urlencoded"
                };
                write!(
                    s,
                    "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: {kind}\r\n\
                     Content-Length: {}\r\n\r\n",
                    64 * 1024
                )
                .unwrap();
                // A byte a second, far inside the idle timeout, never the whole body; between
                // bytes, whatever the server says, until it closes.
                s.set_read_timeout(Some(Duration::from_millis(200)))
                    .unwrap();
                let mut answer = Vec::new();
                let mut buf = [0u8; 1024];
                for sent in 0..64 {
                    match s.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => answer.extend_from_slice(&buf[..n]),
                        Err(e)
                            if e.kind() == std::io::ErrorKind::WouldBlock
                                || e.kind() == std::io::ErrorKind::TimedOut => {}
                        Err(_) => break,
                    }
                    if !answer.is_empty() {
                        continue;
                    }
                    if s.write_all(&body.as_bytes()[sent % body.len()..][..1])
                        .is_err()
                    {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(800));
                }
                (
                    String::from_utf8_lossy(&answer).into_owned(),
                    started.elapsed(),
                )
            })
        })
        .collect();
    // Every slot of the cap is taken by a trickler before the device comes.
    std::thread::sleep(Duration::from_millis(500));
    // A device is served within the body deadline and some (not the trickle's minute).
    let t = Instant::now();
    device_with_escrow(&srv, "served while outsiders trickle");
    let waited = t.elapsed();
    assert!(
        waited < Duration::from_secs(15),
        "the device waited {waited:?} behind trickling bodies"
    );
    for t in trickles {
        let (answer, at) = t.join().unwrap();
        assert!(
            at < Duration::from_secs(15),
            "a trickled body held its connection for {at:?}"
        );
        assert!(
            answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
            "a trickled body's answer: {answer:?}"
        );
    }
}

/// Every sign-in refused by the lock-out wrote an audit record, whoever sent it and however
/// often: with the login form's cookie (which anyone gets), an outsider grew the server's audit
/// trail by a row per request, with a name of their choosing, and buried the records people
/// read. Now a refusal is recorded once a minute per action and address (the next record counts
/// those folded into it), while the failures that led to the lock-out are each recorded.
#[test]
fn refused_sign_ins_cannot_grow_the_audit_trail_without_bound() {
    for backend in backends() {
        let inst = Instance::prepare();
        let srv = Server::start_on(&inst, &backend);
        srv.add_account("olivia", "olivia's long passphrase", "admin");
        let mut b = Browser::new(&srv);
        let rows = |action: &str| -> usize {
            srv.query(&format!(
                "SELECT COUNT(*) FROM audit WHERE action = '{action}'"
            ))
            .trim()
            .parse()
            .unwrap()
        };
        for _ in 0..5 {
            assert_eq!(b.login("olivia", "a guess").status, 401);
        }
        assert_eq!(rows("ui-login-failed"), 5, "{backend:?}");
        for n in 0..30 {
            let r = b.login("olivia", "another guess");
            assert_eq!(r.status, 429, "{backend:?}: attempt {n}: {}", r.body);
        }
        assert_eq!(
            rows("ui-login-locked"),
            1,
            "{backend:?}: one refusal record a minute from one address"
        );
        // The refusals are still answered and the lock-out holds, the right password included.
        assert_eq!(b.login("olivia", "olivia's long passphrase").status, 429);
    }
}

/// The server's CPU time so far, in clock ticks (user and system, `/proc/PID/stat`).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

/// A sign-in the lock-out refuses still ran a full argon2 hash ("locked or not: one hash of the
/// same cost"), though its 429 already says it was refused: four at once fill the server's
/// hashing slots, so an outsider refused at every try still kept people from signing in (503),
/// paying nothing for being locked out. Now a refused sign-in hashes nothing: fifteen of them
/// cost the server less CPU than the five failures that locked the address (each of those
/// hashes, as before, known name or not).
#[test]
fn a_locked_out_address_costs_the_server_no_hashing() {
    let inst = Instance::prepare();
    let srv = Server::start(&inst);
    srv.add_account("olivia", "olivia's long passphrase", "admin");
    let pid = srv.pid().unwrap();
    let mut b = Browser::new(&srv);
    assert_eq!(b.get("/ui/login").status, 200);
    let before = cpu_ticks(pid);
    for _ in 0..5 {
        assert_eq!(b.login("olivia", "a guess").status, 401);
    }
    let failing = cpu_ticks(pid) - before;
    let before = cpu_ticks(pid);
    for _ in 0..15 {
        assert_eq!(b.login("olivia", "a guess").status, 429);
    }
    let refused = cpu_ticks(pid) - before;
    assert!(
        refused < failing,
        "15 refused sign-ins cost the server {refused} ticks of CPU, 5 failed ones {failing}"
    );
}

/// The request counters were keyed by the method as sent, and HTTP lets a client make up
/// methods, so an outsider with no credentials sending `KWX0`, `KWX1`, … grew the server's
/// memory and `/metrics` by one series a request, without bound. Now a made-up method is
/// counted as `OTHER`.
#[test]
fn made_up_methods_do_not_grow_the_request_counters() {
    let inst = Instance::prepare();
    let srv = Server::start(&inst);
    for n in 0..40 {
        let (status, _) = http::http(&srv.addr, &format!("KWX{n}"), "/metrics", &[], b"");
        assert!((400..500).contains(&status), "KWX{n}: {status}");
    }
    let (status, m) = http::http(&srv.addr, "GET", "/metrics", &[], b"");
    assert_eq!(status, 200, "{m}");
    assert!(!m.contains("KWX"), "a made-up method became a series:\n{m}");
    assert!(
        m.contains("OTHER"),
        "made-up methods were not counted:\n{m}"
    );
}
