//! Smoke tests against the real server: `keyward-server init`, tokens from
//! `token create --count N`, `serve` on a free loopback port, then a few seconds of
//! `keyward-loadgen` must show requests and no error: escrows with enrollment from stdin, and a
//! fleet saved to a file, then check-ins and escrows over two URLs with receipts verified.
#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// `keyward-server` beside this crate's binary in `target/<profile>/`. Cargo builds it for this
/// test only as part of a workspace build, so it is (re)built here: a missing or stale binary
/// (one without `token create --count`) would fail the test for the wrong reason. A no-op
/// when it is up to date.
fn server_bin() -> PathBuf {
    let loadgen = Path::new(env!("CARGO_BIN_EXE_keyward-loadgen"));
    let dir = loadgen.parent().unwrap();
    let server = dir.join(format!("keyward-server{}", std::env::consts::EXE_SUFFIX));
    {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut build = Command::new(cargo);
        build.args([
            "build",
            "-q",
            "-p",
            "keyward-server",
            "--bin",
            "keyward-server",
        ]);
        if dir.file_name().is_some_and(|p| p == "release") {
            build.arg("--release");
        }
        let status = build.status().unwrap();
        assert!(status.success(), "cargo build -p keyward-server failed");
    }
    assert!(server.exists(), "{} not built", server.display());
    server
}

fn checked(out: Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The serving server; killed when dropped, so a failed assertion leaves no process behind.
struct Serving(Child);

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn serve(bin: &Path, state: &Path) -> (Serving, u16) {
    let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(bin)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--state"])
        .arg(state)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut server = Serving(child);
    let until = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_err() {
        assert!(
            server.0.try_wait().unwrap().is_none(),
            "keyward-server serve exited"
        );
        assert!(Instant::now() < until, "keyward-server did not listen");
        std::thread::sleep(Duration::from_millis(50));
    }
    (server, port)
}

#[test]
fn loadgen_escrows_against_the_real_server_without_errors() {
    let server = server_bin();
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let init = Command::new(&server)
        .arg("init")
        .arg("--state")
        .arg(&state)
        .output()
        .unwrap();
    // The server stores only age files to its own recipient: escrows are sealed to it.
    let recipient = recipient_of(&checked(init, "init"));
    let tokens = Command::new(&server)
        .args(["token", "create", "--count", "5", "--state"])
        .arg(&state)
        .output()
        .unwrap();
    let tokens = checked(tokens, "token create --count 5");
    assert_eq!(tokens.lines().count(), 5, "{tokens}");
    let (_serving, port) = serve(&server, &state);

    let mut loadgen = Command::new(env!("CARGO_BIN_EXE_keyward-loadgen"))
        .args(["--server", &format!("http://127.0.0.1:{port}")])
        .args(["--recipient", &recipient])
        .args(["--concurrency", "4", "--duration", "2"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    loadgen
        .stdin
        .take()
        .unwrap()
        .write_all(tokens.as_bytes())
        .unwrap();
    let report = checked(loadgen.wait_with_output().unwrap(), "keyward-loadgen");

    let result = report.lines().last().unwrap();
    assert!(result.starts_with("RESULT rps="), "{report}");
    assert!(result.ends_with(" errors=0"), "{report}");
    let requests: u64 = report
        .lines()
        .find_map(|l| l.strip_prefix("requests "))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(requests >= 1, "{report}");
    // With no warm-up, every request sent is one of the window's (the bench divides the
    // server's CPU by this count); the window's are the last count (the first is enrollment's).
    let window: u64 = report
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("requests "))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let sent: u64 = report
        .lines()
        .find_map(|l| l.strip_prefix("sent "))
        .and_then(|l| l.split_whitespace().next())
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(sent, window, "{report}");
}

#[test]
fn a_saved_fleet_checks_in_and_escrows_across_two_urls() {
    let server = server_bin();
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let init_keys = |state: &Path| {
        let init = Command::new(&server)
            .arg("init")
            .arg("--state")
            .arg(state)
            .output()
            .unwrap();
        let lines = checked(init, "init");
        let signing = lines
            .lines()
            .find_map(|l| l.strip_prefix("server_signing_key = "))
            .unwrap()
            .trim_matches('"')
            .to_owned();
        (signing, recipient_of(&lines))
    };
    let (server_key, recipient) = init_keys(&state);
    let tokens = Command::new(&server)
        .args(["token", "create", "--count", "6", "--state"])
        .arg(&state)
        .output()
        .unwrap();
    let tokens = checked(tokens, "token create --count 6");
    let (_serving, port) = serve(&server, &state);
    let url = format!("http://127.0.0.1:{port}");
    let fleet = tmp.path().join("fleet");

    // Enroll only, spread over "two" servers, and keep the devices.
    let mut enroll = Command::new(env!("CARGO_BIN_EXE_keyward-loadgen"))
        .args(["--server", &format!("{url},{url}"), "--duration", "0"])
        .arg("--save-devices")
        .arg(&fleet)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    enroll
        .stdin
        .take()
        .unwrap()
        .write_all(tokens.as_bytes())
        .unwrap();
    let report = checked(enroll.wait_with_output().unwrap(), "enroll");
    assert!(report.contains("RESULT kind=enroll"), "{report}");
    assert_eq!(std::fs::read_to_string(&fleet).unwrap().lines().count(), 6);

    // The same devices, no tokens: check-ins and escrows, every receipt verified.
    let mixed = Command::new(env!("CARGO_BIN_EXE_keyward-loadgen"))
        .args(["--server", &url, "--server", &url, "--mode", "mixed"])
        .args(["--escrow-every", "3", "--server-key", &server_key])
        .args(["--recipient", &recipient])
        .args(["--concurrency", "4", "--duration", "2"])
        .arg("--devices-from")
        .arg(&fleet)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let report = checked(mixed, "keyward-loadgen --mode mixed");
    for kind in ["escrow", "checkin"] {
        let line = report
            .lines()
            .find(|l| l.starts_with(&format!("RESULT kind={kind} ")))
            .unwrap_or_else(|| panic!("no {kind} line: {report}"));
        assert!(line.ends_with(" errors=0"), "{report}");
    }
    assert!(
        report.lines().last().unwrap().ends_with(" errors=0"),
        "{report}"
    );

    // A receipt signed by another key is refused, as the helper would.
    let (other, _) = init_keys(&tmp.path().join("another"));
    let wrong = Command::new(env!("CARGO_BIN_EXE_keyward-loadgen"))
        .args(["--server", &url, "--mode", "escrow", "--server-key", &other])
        .args(["--recipient", &recipient])
        .args(["--concurrency", "1", "--duration", "1"])
        .arg("--devices-from")
        .arg(&fleet)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let report = checked(wrong, "keyward-loadgen with a wrong key");
    assert!(report.contains("bad-answer"), "{report}");
}

/// The `recipient = "age1…"` line `keyward-server init` prints.
fn recipient_of(init_output: &str) -> String {
    init_output
        .lines()
        .find_map(|l| l.strip_prefix("recipient = "))
        .expect("init prints the recipient")
        .trim_matches('"')
        .to_owned()
}
