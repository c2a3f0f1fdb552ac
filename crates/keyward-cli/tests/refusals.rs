//! The helper refuses what it must, audits it, and stays up: callers of an unrelated uid, the
//! agent asking for an admin-only operation, unknown opcodes, truncated, oversized, slow and
//! garbage frames, a wrong protocol version, and hostile names.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use common::*;
use keyward_core::ipc::{self, Request};

fn connect(inst: &Instance) -> UnixStream {
    let s = UnixStream::connect(inst.socket()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s
}

fn hello(s: &mut UnixStream) {
    s.write_all(
        &ipc::encode_frame(&Request::Hello {
            version: ipc::PROTOCOL_VERSION,
        })
        .unwrap(),
    )
    .unwrap();
    let mut prefix = [0u8; 4];
    s.read_exact(&mut prefix).unwrap();
    let mut body = vec![0u8; ipc::frame_len(prefix).unwrap()];
    s.read_exact(&mut body).unwrap();
}

/// Read until the helper closes; returns the decoded error response, if one came.
fn response_then_close(s: &mut UnixStream) -> Option<ipc::Response> {
    let mut all = Vec::new();
    let _ = s.read_to_end(&mut all);
    if all.len() < 4 {
        return None;
    }
    let len = ipc::frame_len([all[0], all[1], all[2], all[3]]).ok()?;
    ipc::decode_response(all.get(4..4 + len)?).ok()
}

fn is_error(r: Option<ipc::Response>, want: ipc::ErrorCode) -> bool {
    matches!(r, Some(ipc::Response::Error { code, .. }) if code == want)
}

/// Trickle a frame a byte a second (a valid length prefix, then its payload) until the helper
/// closes the connection; how long that took. Gives up, failing, after 30 s.
fn trickle_until_closed(inst: &Instance) -> Duration {
    let mut s = connect(inst);
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let started = Instant::now();
    let frame = [0u8, 0, 0, 200].into_iter().chain(std::iter::repeat(7u8));
    for byte in frame {
        if s.write_all(&[byte]).is_err() {
            return started.elapsed();
        }
        let until = Instant::now() + Duration::from_secs(1);
        while Instant::now() < until {
            let mut b = [0u8; 256];
            match s.read(&mut b) {
                Ok(0) => return started.elapsed(),
                Ok(_) => {} // the refusal's error frame; the close follows
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(_) => return started.elapsed(),
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the helper never dropped a trickling client"
        );
    }
    unreachable!("the frame iterator is endless")
}

fn still_serves(inst: &mut Instance) {
    assert!(inst.helper_alive(), "helper died: {}", inst.helper_stderr());
    assert_eq!(code(&inst.keyward(&["status"], b"")), Some(0));
}

#[test]
fn agent_class_may_look_but_not_change() {
    let mut inst = Instance::prepare().start();
    inst.bootstrap();
    // The agent (the service user) may read status and verify…
    let out = inst.keyward_as(Some(NOBODY), &["status", "--json"], b"");
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    // …but not grant or revoke: refused (exit 4) and audited as the agent class.
    let out = inst.keyward_as(
        Some(NOBODY),
        &["grant", "data", "daemon", "--passphrase-stdin"],
        b"pw\n",
    );
    assert_eq!(code(&out), Some(4), "{}", stderr(&out));
    // Refused for who asks, and saying so.
    assert!(
        stderr(&out).contains("not allowed for the agent class"),
        "{}",
        stderr(&out)
    );
    let out = inst.keyward_as(Some(NOBODY), &["revoke", "data", "daemon"], b"");
    assert_eq!(code(&out), Some(4), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("not allowed for the agent class"),
        "{}",
        stderr(&out)
    );
    let refused: Vec<_> = inst
        .audit_lines()
        .into_iter()
        .filter(|l| l.contains("\"caller\":\"agent\"") && l.contains("Refused"))
        .collect();
    assert_eq!(refused.len(), 2, "{refused:?}");
    assert!(refused[0].contains(&format!("\"uid\":{NOBODY}")));
    still_serves(&mut inst);
}

/// Issue 14: the agent class (the service user, `nobody` here) trickling bytes on many
/// connections cannot starve root: it has a budget of its own, over which its connections are
/// closed unread (and recorded, folded), and each connection is dropped when its frame's
/// deadline passes. Meanwhile root's CLI is answered at once.
#[test]
fn a_trickling_agent_cannot_starve_root() {
    let inst = Instance::prepare().start();
    inst.bootstrap();
    let script = r#"
import socket, sys, time
held = []
for _ in range(24):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(sys.argv[1]); held.append(s)
    except OSError:
        pass
print(len(held), flush=True)
frame = b"\0\0\0\xc8" + b"\7" * 200   # a 200-byte frame, a byte a second
start = time.time()
end = start + 12
i = 0
dropped = []
while time.time() < end:
    for s in list(held):
        try:
            s.send(frame[i:i + 1])
        except OSError:
            held.remove(s)
            dropped.append(time.time() - start)
    i += 1
    time.sleep(1)
print(len(held), max(dropped, default=-1.0), flush=True)
"#;
    let mut flood = std::process::Command::new("setpriv")
        .args([
            format!("--reuid={NOBODY}"),
            format!("--regid={NOBODY}"),
            "--clear-groups".into(),
        ])
        .args(["/usr/bin/python3", "-c", script])
        .arg(inst.socket())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut said = std::io::BufReader::new(flood.stdout.take().unwrap());
    let mut first = String::new();
    std::io::BufRead::read_line(&mut said, &mut first).unwrap();
    assert!(
        first.trim().parse::<u32>().unwrap() > 0,
        "the flood connected: {first}"
    );
    for _ in 0..5 {
        let started = Instant::now();
        let out = inst.keyward(&["status"], b"");
        assert_eq!(code(&out), Some(0), "{}", stderr(&out));
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "root waited {:?}",
            started.elapsed()
        );
        std::thread::sleep(Duration::from_secs(2));
    }
    // Every connection is dropped, the last within the 5 s frame deadline (plus the second
    // or two the trickler needs to notice): none is allowed to stay by trickling.
    let mut last = String::new();
    std::io::BufRead::read_line(&mut said, &mut last).unwrap();
    flood.wait().unwrap();
    let (left, latest) = last.trim().split_once(' ').unwrap();
    let latest: f64 = latest.parse().unwrap();
    assert_eq!(left, "0", "connections still open after 12 s: {last}");
    assert!(
        latest < 8.5,
        "a trickling connection lasted {latest:.1}s (deadline 5 s)"
    );
    let lines = inst.audit_lines();
    let over = lines
        .iter()
        .filter(|l| {
            l.contains("\"caller\":\"agent\"")
                && l.contains("\"op\":\"connect\"")
                && l.contains("too many connections")
        })
        .count();
    assert!(over >= 1, "the refusals are on record: {lines:#?}");
    assert!(over <= 2, "…folded, not one record each: {over}");
    let slow = lines
        .iter()
        .filter(|l| l.contains("\"caller\":\"agent\"") && l.contains("client too slow"))
        .count();
    assert!(
        slow >= 1,
        "the trickling connections were dropped: {lines:#?}"
    );
}

#[test]
fn unrelated_uid_is_closed_before_reading() {
    let mut inst = Instance::prepare().start();
    // The socket's own permissions already keep other users out…
    let out = inst.keyward_as(Some(12345), &["status"], b"");
    assert_eq!(code(&out), Some(5), "{}", stderr(&out));
    // …and if they were loosened by mistake, the peer-credential check still closes the door.
    chmod(&inst.path("run"), 0o755);
    chmod(&inst.socket(), 0o666);
    let out = inst.keyward_as(Some(12345), &["status"], b"");
    assert_eq!(code(&out), Some(5), "{}", stderr(&out));
    let lines = inst.audit_lines();
    let last = lines.last().unwrap();
    assert!(
        last.contains("\"caller\":\"refused\"") && last.contains("\"uid\":12345"),
        "{last}"
    );
    assert!(last.contains("\"op\":\"connect\""));
    // Closed before a byte is read: a stranger's hello finds the socket closed already, or is
    // still unread when the helper closes (Linux then fails the stranger's next read with
    // ECONNRESET, where a socket closed after reading it ends with a clean EOF); one that
    // sends nothing is not waited for.
    let probe = r#"
import socket, sys, time
def ask(payload):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(3)
    s.connect(sys.argv[1])
    if payload:
        try:
            s.sendall(payload)
        except (BrokenPipeError, ConnectionResetError):
            return "closed", 0.0
    start = time.time()
    try:
        got = "eof" if s.recv(1) == b"" else "data"
    except ConnectionResetError:
        got = "reset"
    except socket.timeout:
        got = "waited"
    return got, time.time() - start
hello = bytes([0, 0, 0, 5, 0, 0, 0, 0, 3])
(a, _), (b, waited) = ask(hello), ask(b"")
print(a, b, f"{waited:.2f}")
"#;
    let out = run(
        std::process::Command::new("setpriv")
            .args(["--reuid=12345", "--regid=12345", "--clear-groups"])
            .args(["/usr/bin/python3", "-c", probe])
            .arg(inst.socket()),
        b"",
    );
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    let said: Vec<&str> = said.split_whitespace().collect();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        ["reset", "closed"].contains(&said[0]) && said[1] == "eof",
        "the helper read a stranger's bytes: {said:?}"
    );
    let waited: f64 = said[2].parse().unwrap();
    assert!(waited < 1.0, "a stranger was kept {waited}s");
    still_serves(&mut inst);
}

#[test]
fn malformed_frames_are_refused_and_the_helper_stays_up() {
    let mut inst = Instance::prepare().start();
    let before = inst.audit_lines().len();

    // Unknown opcode (variant 99 of the request enum) after a good hello.
    let mut s = connect(&inst);
    hello(&mut s);
    s.write_all(&[0, 0, 0, 1, 99]).unwrap();
    assert!(is_error(response_then_close(&mut s), ipc::ErrorCode::Usage));

    // Garbage instead of a hello.
    let mut s = connect(&inst);
    s.write_all(&[0, 0, 0, 5, 0xde, 0xad, 0xbe, 0xef, 0x00])
        .unwrap();
    assert!(is_error(response_then_close(&mut s), ipc::ErrorCode::Usage));

    // Oversized length prefix: refused without reading the payload.
    let mut s = connect(&inst);
    s.write_all(&(ipc::MAX_FRAME as u32 + 1).to_be_bytes())
        .unwrap();
    assert!(is_error(response_then_close(&mut s), ipc::ErrorCode::Usage));

    // Zero length.
    let mut s = connect(&inst);
    s.write_all(&[0, 0, 0, 0]).unwrap();
    assert!(is_error(response_then_close(&mut s), ipc::ErrorCode::Usage));

    // Wrong protocol version.
    let mut s = connect(&inst);
    s.write_all(&ipc::encode_frame(&Request::Hello { version: 999 }).unwrap())
        .unwrap();
    assert!(is_error(response_then_close(&mut s), ipc::ErrorCode::Usage));

    // A request before the hello.
    let mut s = connect(&inst);
    s.write_all(&ipc::encode_frame(&Request::Status { volume: None }).unwrap())
        .unwrap();
    assert!(is_error(response_then_close(&mut s), ipc::ErrorCode::Usage));

    // Truncated frame: the prefix promises 100 bytes, 3 arrive, then the client hangs up.
    let mut s = connect(&inst);
    s.write_all(&[0, 0, 0, 100, 1, 2, 3]).unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let _ = response_then_close(&mut s);

    // A slow client (sends half a prefix, then nothing) is dropped once the frame's deadline
    // passes, and so is one that keeps trickling a byte a second (which the old per-read
    // timeout let hold its connection for ever).
    let mut s = connect(&inst);
    s.write_all(&[0, 0]).unwrap();
    let mut buf = Vec::new();
    let started = Instant::now();
    let _ = s.read_to_end(&mut buf); // returns when the helper closes
    assert!(started.elapsed() < Duration::from_secs(10));
    let dropped_after = trickle_until_closed(&inst);
    assert!(
        dropped_after < Duration::from_secs(9),
        "a trickling client held its connection for {dropped_after:?}"
    );
    still_serves(&mut inst);

    let lines = inst.audit_lines();
    let frames = lines[before..]
        .iter()
        .filter(|l| l.contains("\"op\":\"frame\"") || l.contains("\"op\":\"hello\""))
        .count();
    assert!(
        frames >= 7,
        "every refusal is audited: {:#?}",
        &lines[before..]
    );
}

#[test]
fn hostile_names_never_reach_a_handler() {
    let mut inst = Instance::prepare().start();
    inst.bootstrap();
    let before = inst.metadata();
    let long = "a".repeat(4096);
    // Through the CLI: refused while parsing arguments (exit 2), before any connection.
    let audit_before = inst.audit_lines().len();
    for bad in [
        "../etc/passwd",
        "-rf",
        "--",
        "a b",
        "a\nb",
        "Δ",
        &long,
        "root/x",
    ] {
        let out = inst.keyward(&["revoke", "data", "--", bad], b"");
        assert_eq!(code(&out), Some(2), "{bad:?}: {}", stderr(&out));
        let out = inst.keyward(&["status", "--", bad], b"");
        assert_eq!(code(&out), Some(2), "{bad:?}");
    }
    assert_eq!(
        inst.audit_lines().len(),
        audit_before,
        "nothing reached the helper"
    );

    // Straight onto the socket: names the newtypes refuse do not even decode.
    #[derive(serde::Serialize)]
    enum Raw {
        _Hello {
            version: u16,
        },
        _Status {
            volume: Option<String>,
        },
        _Bootstrap {
            volume: String,
            passphrase: Vec<u8>,
        },
        Grant {
            volume: String,
            user: String,
            passphrase: Vec<u8>,
        },
        Revoke {
            volume: String,
            user: String,
        },
    }
    let cases = [
        Raw::Revoke {
            volume: "data".into(),
            user: "../../etc/shadow".into(),
        },
        Raw::Revoke {
            volume: "data".into(),
            user: "-o".into(),
        },
        Raw::Revoke {
            volume: "data".into(),
            user: "a\0b".into(),
        },
        Raw::Revoke {
            volume: "../data".into(),
            user: "daemon".into(),
        },
        Raw::Grant {
            volume: "data".into(),
            user: long.clone(),
            passphrase: b"x".to_vec(),
        },
        Raw::Grant {
            volume: "data".into(),
            user: "daemon\n".into(),
            passphrase: b"x".to_vec(),
        },
    ];
    for raw in cases {
        let mut s = connect(&inst);
        hello(&mut s);
        s.write_all(&ipc::encode_frame(&raw).unwrap()).unwrap();
        assert!(is_error(response_then_close(&mut s), ipc::ErrorCode::Usage));
    }
    assert_eq!(inst.metadata(), before, "no header change");
    still_serves(&mut inst);
}
