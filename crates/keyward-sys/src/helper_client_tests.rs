//! The helper client against real sockets: listeners that hang, stay mute, or are not root.
#![allow(clippy::unwrap_used)]

use super::*;

/// A listener that never accepts, its backlog full: `connect` would block forever.
fn hung_listener(dir: &Path) -> (rustix::fd::OwnedFd, Vec<rustix::fd::OwnedFd>) {
    use rustix::net::{AddressFamily, SocketAddrUnix, SocketType};
    let path = dir.join("hung.sock");
    let addr = SocketAddrUnix::new(&path).expect("addr");
    let listener =
        rustix::net::socket(AddressFamily::UNIX, SocketType::STREAM, None).expect("socket");
    rustix::net::bind(&listener, &addr).expect("bind");
    rustix::net::listen(&listener, 1).expect("listen");
    let mut held = Vec::new();
    for _ in 0..4096 {
        let fd = nonblocking_socket().expect("socket");
        match rustix::net::connect(&fd, &addr) {
            Ok(()) => held.push(fd),
            Err(rustix::io::Errno::AGAIN) => return (listener, held),
            Err(e) => panic!("connect: {e}"),
        }
    }
    panic!("the backlog never filled");
}

#[test]
fn a_helper_that_accepts_nothing_costs_at_most_the_budget() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_listener, _held) = hung_listener(dir.path());
    let socket = dir.path().join("hung.sock");
    // A blocking connect would hang here: prove it, in a thread we abandon.
    let blocked = std::sync::mpsc::channel::<()>();
    let s = socket.clone();
    std::thread::spawn(move || {
        let _ = UnixStream::connect(&s);
        let _ = blocked.0.send(());
    });
    assert!(
        blocked.1.recv_timeout(Duration::from_millis(500)).is_err(),
        "the listener does accept: the test proves nothing"
    );
    let started = Instant::now();
    let e =
        call_by(&socket, Request::Policy, Duration::from_millis(200)).expect_err("nothing answers");
    assert_eq!(e.code, 5, "{e}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn a_helper_that_accepts_and_says_nothing_costs_at_most_the_budget() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("mute.sock");
    let listener = std::os::unix::net::UnixListener::bind(&socket).expect("bind");
    std::thread::spawn(move || {
        let mut keep = Vec::new();
        for s in listener.incoming() {
            keep.push(s);
        }
    });
    let started = Instant::now();
    let e =
        call_by(&socket, Request::Policy, Duration::from_millis(200)).expect_err("nothing answers");
    assert_eq!(e.code, 5, "{e}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

/// A stand-in helper run by python3 (as `uid`, or as this test's root when `None`): it binds
/// `helper.sock` in its own directory, says `ready <euid>`, then for each of `conns`
/// connections answers the first bytes it gets with the helper's hello reply — so a client
/// that went on would send its request, password and all — and prints how many bytes it
/// received before the client closed.
#[cfg(target_os = "linux")]
struct Listener {
    child: std::process::Child,
    lines: std::io::Lines<std::io::BufReader<std::process::ChildStdout>>,
    socket: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

#[cfg(target_os = "linux")]
const LISTENER: &str = include_str!("../../../tests/impostor/listener.py");

#[cfg(target_os = "linux")]
impl Listener {
    fn start(uid: Option<u32>, conns: usize) -> Self {
        use std::io::BufRead;
        assert_eq!(
            rustix::process::geteuid().as_raw(),
            0,
            "these tests run as root (as scripts/test does): they start a listener as another uid"
        );
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("helper.sock");
        let mut cmd = match uid {
            Some(u) => {
                std::os::unix::fs::chown(dir.path(), Some(u), Some(u)).unwrap();
                let mut c = std::process::Command::new("setpriv");
                c.args([
                    format!("--reuid={u}"),
                    format!("--regid={u}"),
                    "--clear-groups".into(),
                    // Debian's, by path: root's PATH may lead to a python `nobody` cannot run.
                    "/usr/bin/python3".into(),
                ]);
                c
            }
            None => std::process::Command::new("/usr/bin/python3"),
        };
        let mut child = cmd
            .args(["-c", LISTENER])
            .arg(&socket)
            .arg(conns.to_string())
            .arg(hello_reply_hex())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let ready = lines.next().unwrap().unwrap();
        let want = format!("ready {}", uid.unwrap_or(0));
        assert_eq!(ready, want, "the listener did not start as it should");
        Listener {
            child,
            lines,
            socket,
            _dir: dir,
        }
    }

    /// The byte count the listener printed for its next connection.
    fn bytes_received(&mut self) -> usize {
        self.lines.next().unwrap().unwrap().parse().unwrap()
    }
}

#[cfg(target_os = "linux")]
impl Drop for Listener {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The frame a helper answers a hello with, in hex.
#[cfg(target_os = "linux")]
fn hello_reply_hex() -> String {
    let reply = ipc::encode_frame(&Response::Ok(Reply::Hello {
        version: ipc::PROTOCOL_VERSION,
    }))
    .unwrap();
    reply.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(target_os = "linux")]
fn password() -> WireSecret {
    WireSecret::from_secret(&Secret::copy_from(b"hunter2 hunter2"))
}

#[cfg(target_os = "linux")]
fn refused_as_not_root(e: &CallError) {
    assert_eq!(e.code, 5, "{e}");
    assert!(
        e.message.contains("uid 65534, not root") && e.message.contains("nothing was sent"),
        "{e}"
    );
}

#[test]
#[cfg(target_os = "linux")]
fn a_listener_that_is_not_root_is_sent_nothing_not_even_the_hello() {
    let mut nobody = Listener::start(Some(65534), 3);
    let volume = keyward_core::VolumeName::parse("data").unwrap();
    let alice = UserName::parse("alice").unwrap();
    let grant = Request::Grant {
        volume,
        user: alice.clone(),
        passphrase: password(),
    };
    refused_as_not_root(&call(&nobody.socket, grant).unwrap_err());
    assert_eq!(nobody.bytes_received(), 0, "call");
    let login = Secret::copy_from(b"hunter2 hunter2");
    refused_as_not_root(&send_login_capture(&nobody.socket, alice.clone(), &login).unwrap_err());
    assert_eq!(nobody.bytes_received(), 0, "send_login_capture");
    let change = Request::PasswordChange {
        user: alice,
        new: password(),
        old: Some(password()),
    };
    let e = call_within(&nobody.socket, change, Duration::from_secs(1)).unwrap_err();
    refused_as_not_root(&e);
    assert_eq!(nobody.bytes_received(), 0, "call_within");
}

/// The control: the same listener run by root gets the hello and then the request with its
/// password, so the zero above is the client's refusal and not a listener that counts nothing.
#[test]
#[cfg(target_os = "linux")]
fn the_same_listener_run_by_root_receives_the_frames() {
    let mut root = Listener::start(None, 1);
    let login = Secret::copy_from(b"hunter2 hunter2");
    let alice = UserName::parse("alice").unwrap();
    let e = send_login_capture(&root.socket, alice.clone(), &login).unwrap_err();
    assert_eq!(e.code, 5, "{e}");
    assert!(!e.message.contains("not root"), "{e}");
    let hello = ipc::encode_frame(&Request::Hello {
        version: ipc::PROTOCOL_VERSION,
    })
    .unwrap();
    let capture = ipc::encode_frame(&Request::LoginCapture {
        user: alice,
        password: password(),
    })
    .unwrap();
    assert_eq!(root.bytes_received(), hello.len() + capture.len());
}

/// The agent's control socket: a listener that is not the agent's account gets nothing, not
/// even the hello (an enrollment request carries a token); the same listener asked for as the
/// account it runs as gets the hello and the request, so the zero is the client's refusal.
#[test]
#[cfg(target_os = "linux")]
fn an_agent_socket_not_held_by_the_agents_account_is_sent_nothing() {
    let mut nobody = Listener::start(Some(65534), 2);
    let root = UserName::parse("root").unwrap();
    let e = call_agent(&nobody.socket, &root, AgentRequest::CheckInNow).unwrap_err();
    assert_eq!(e.code, 5, "{e}");
    assert!(
        e.message
            .contains("uid 65534, not the agent's account root")
            && e.message.contains("nothing was sent"),
        "{e}"
    );
    assert_eq!(nobody.bytes_received(), 0, "refused");
    let agent = UserName::parse("nobody").unwrap();
    // Asked for as the account it runs as, the listener gets the hello and, its hello reply
    // taken for the agent's, the request; then it closes, which is the error.
    let e = call_agent(&nobody.socket, &agent, AgentRequest::CheckInNow).unwrap_err();
    assert!(!e.message.contains("nothing was sent"), "{e}");
    let hello = ipc::encode_frame(&AgentRequest::Hello {
        version: ipc::PROTOCOL_VERSION,
    })
    .unwrap();
    let request = ipc::encode_frame(&AgentRequest::CheckInNow).unwrap();
    assert_eq!(
        nobody.bytes_received(),
        hello.len() + request.len(),
        "the hello and the request, as the agent's account"
    );
}
