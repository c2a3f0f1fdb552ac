//! One request to the helper: connect, hello, request, response. Used by the CLI and the agent,
//! and — through [`send_login_capture`] and [`LOGIN_PATH_BUDGET`] — by the two login-path
//! callers, the PAM module and the macOS authorization plugin, so both speak the same frames
//! under the same time rule.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use keyward_core::ipc::{
    self, AgentReply, AgentRequest, AgentResponse, Reply, Request, Response, WireSecret,
};
use keyward_core::{Secret, UserName};

/// A failed call: the CLI exit code that goes with it, and a message safe to print.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallError {
    /// Exit code per the CLI contract (5: helper unavailable).
    pub code: u8,
    /// What went wrong.
    pub message: String,
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

fn failure(code: u8, message: impl Into<String>) -> CallError {
    CallError {
        code,
        message: message.into(),
    }
}

/// Long enough for an argon2id grant at LUKS2 defaults on a slow machine.
const TIMEOUT: Duration = Duration::from_secs(300);

fn unavailable(e: impl std::fmt::Display) -> CallError {
    failure(5, format!("the keyward helper is unavailable: {e}"))
}

fn exchange(stream: &mut UnixStream, req: &Request) -> Result<Response, CallError> {
    let frame = ipc::encode_frame(req).map_err(|e| failure(2, e.to_string()))?;
    stream.write_all(&frame).map_err(unavailable)?;
    let mut prefix = [0u8; 4];
    stream.read_exact(&mut prefix).map_err(unavailable)?;
    let len = ipc::frame_len(prefix).map_err(unavailable)?;
    let mut payload = vec![0u8; len];
    stream.read_exact(&mut payload).map_err(unavailable)?;
    ipc::decode_response(&payload).map_err(unavailable)
}

/// Send `req` and return the reply, or the helper's error with its exit code.
pub fn call(socket: &Path, req: Request) -> Result<Reply, CallError> {
    call_within(socket, req, TIMEOUT)
}

/// Like [`call`], giving up when any single read or write takes longer than `timeout`.
pub fn call_within(socket: &Path, req: Request, timeout: Duration) -> Result<Reply, CallError> {
    let mut stream = UnixStream::connect(socket).map_err(unavailable)?;
    stream
        .set_read_timeout(Some(timeout))
        .map_err(unavailable)?;
    stream
        .set_write_timeout(Some(timeout))
        .map_err(unavailable)?;
    match exchange(
        &mut stream,
        &Request::Hello {
            version: ipc::PROTOCOL_VERSION,
        },
    )? {
        Response::Ok(Reply::Hello { .. }) => {}
        Response::Ok(other) => return Err(unexpected(&other)),
        Response::Error { code, message } => return Err(failure(code.exit_code(), message)),
    }
    match exchange(&mut stream, &req)? {
        Response::Ok(reply) => Ok(reply),
        Response::Error { code, message } => Err(failure(code.exit_code(), message)),
    }
}

/// Like [`call`], but the whole exchange — connecting included — ends within `budget`, however
/// the helper behaves: hung, not accepting (a full listen backlog makes a Unix socket's
/// `connect` block), or answering a byte at a time. For callers that must never wait, such as
/// the PAM module in a login.
pub fn call_by(socket: &Path, req: Request, budget: Duration) -> Result<Reply, CallError> {
    let deadline = Instant::now() + budget;
    let mut stream = connect_by(socket, deadline)?;
    let hello = Request::Hello {
        version: ipc::PROTOCOL_VERSION,
    };
    match exchange_by(&mut stream, &hello, deadline)? {
        Response::Ok(Reply::Hello { .. }) => {}
        Response::Ok(other) => return Err(unexpected(&other)),
        Response::Error { code, message } => return Err(failure(code.exit_code(), message)),
    }
    match exchange_by(&mut stream, &req, deadline)? {
        Response::Ok(reply) => Ok(reply),
        Response::Error { code, message } => Err(failure(code.exit_code(), message)),
    }
}

/// The longest a caller on a login path (pam_keyward.so, the macOS authorization plugin) waits
/// on the helper for one whole exchange, connecting included. A login never waits longer for
/// keyward, whatever the helper does.
pub const LOGIN_PATH_BUDGET: Duration = Duration::from_millis(200);

/// Hand a login's user and password to the helper (`Request::LoginCapture`) within
/// [`LOGIN_PATH_BUDGET`]. The password goes from `password` into the zeroizing request and
/// frame and nowhere else. The helper answers at once (`Reply::Queued`) and does the work
/// later; any other outcome is the error the caller logs and ignores.
pub fn send_login_capture(
    socket: &Path,
    user: UserName,
    password: &Secret,
) -> Result<(), CallError> {
    let req = Request::LoginCapture {
        user,
        password: WireSecret::from_secret(password),
    };
    call_by(socket, req, LOGIN_PATH_BUDGET).map(drop)
}

/// Time left before `deadline`, or the error that says it passed.
fn left(deadline: Instant) -> Result<Duration, CallError> {
    let d = deadline.saturating_duration_since(Instant::now());
    if d.is_zero() {
        Err(unavailable("no answer within the time allowed"))
    } else {
        Ok(d)
    }
}

/// A non-blocking, close-on-exec Unix stream socket.
fn nonblocking_socket() -> std::io::Result<rustix::fd::OwnedFd> {
    use rustix::net::{AddressFamily, SocketType};
    #[cfg(target_os = "linux")]
    let fd = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::STREAM,
        rustix::net::SocketFlags::NONBLOCK | rustix::net::SocketFlags::CLOEXEC,
        None,
    )?;
    // No SOCK_NONBLOCK or SOCK_CLOEXEC elsewhere (macOS): set both right after.
    #[cfg(not(target_os = "linux"))]
    let fd = {
        let fd = rustix::net::socket(AddressFamily::UNIX, SocketType::STREAM, None)?;
        rustix::io::fcntl_setfd(&fd, rustix::io::FdFlags::CLOEXEC)?;
        let flags = rustix::fs::fcntl_getfl(&fd)?;
        rustix::fs::fcntl_setfl(&fd, flags | rustix::fs::OFlags::NONBLOCK)?;
        fd
    };
    Ok(fd)
}

/// Connect non-blocking, retrying while the listener's backlog is full, until `deadline`.
fn connect_by(socket: &Path, deadline: Instant) -> Result<UnixStream, CallError> {
    let addr = rustix::net::SocketAddrUnix::new(socket).map_err(unavailable)?;
    loop {
        let fd = nonblocking_socket().map_err(unavailable)?;
        match rustix::net::connect(&fd, &addr) {
            Ok(()) => {
                let flags = rustix::fs::fcntl_getfl(&fd).map_err(unavailable)?;
                rustix::fs::fcntl_setfl(&fd, flags - rustix::fs::OFlags::NONBLOCK)
                    .map_err(unavailable)?;
                return Ok(UnixStream::from(fd));
            }
            // The backlog is full: the helper is not accepting. Try again, briefly.
            Err(rustix::io::Errno::AGAIN) => {
                std::thread::sleep(left(deadline)?.min(Duration::from_millis(5)));
            }
            Err(e) => return Err(unavailable(e)),
        }
    }
}

/// One frame out and one back, each read and write bounded by the time left.
fn exchange_by(
    stream: &mut UnixStream,
    req: &Request,
    deadline: Instant,
) -> Result<Response, CallError> {
    let frame = ipc::encode_frame(req).map_err(|e| failure(2, e.to_string()))?;
    let mut sent = 0;
    while sent < frame.len() {
        stream
            .set_write_timeout(Some(left(deadline)?))
            .map_err(unavailable)?;
        match stream.write(&frame[sent..]) {
            Ok(0) => return Err(unavailable("the helper closed the connection")),
            Ok(n) => sent += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(unavailable(e)),
        }
    }
    let mut read_exactly = |buf: &mut [u8]| -> Result<(), CallError> {
        let mut got = 0;
        while got < buf.len() {
            stream
                .set_read_timeout(Some(left(deadline)?))
                .map_err(unavailable)?;
            match stream.read(&mut buf[got..]) {
                Ok(0) => return Err(unavailable("the helper closed the connection")),
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(unavailable(e)),
            }
        }
        Ok(())
    };
    let mut prefix = [0u8; 4];
    read_exactly(&mut prefix)?;
    let len = ipc::frame_len(prefix).map_err(unavailable)?;
    let mut payload = vec![0u8; len];
    read_exactly(&mut payload)?;
    ipc::decode_response(&payload).map_err(unavailable)
}

/// A reply of the wrong kind (a helper of another version).
pub fn unexpected(r: &Reply) -> CallError {
    failure(1, format!("unexpected reply from the helper: {r:?}"))
}

/// One request to the agent's control socket (root only).
pub fn call_agent(socket: &Path, req: AgentRequest) -> Result<AgentReply, CallError> {
    let agent_down =
        |e: std::io::Error| failure(5, format!("the keyward agent is unavailable: {e}"));
    let mut stream = UnixStream::connect(socket).map_err(agent_down)?;
    stream.set_read_timeout(Some(TIMEOUT)).map_err(agent_down)?;
    let mut ask = |r: &AgentRequest| -> Result<AgentResponse, CallError> {
        let frame = ipc::encode_frame(r).map_err(|e| failure(2, e.to_string()))?;
        stream.write_all(&frame).map_err(agent_down)?;
        let mut prefix = [0u8; 4];
        stream.read_exact(&mut prefix).map_err(agent_down)?;
        let len = ipc::frame_len(prefix).map_err(|e| failure(5, e.to_string()))?;
        let mut payload = vec![0u8; len];
        stream.read_exact(&mut payload).map_err(agent_down)?;
        ipc::decode_agent_response(&payload).map_err(|e| failure(5, e.to_string()))
    };
    match ask(&AgentRequest::Hello {
        version: ipc::PROTOCOL_VERSION,
    })? {
        AgentResponse::Ok(AgentReply::Hello { .. }) => {}
        _ => return Err(failure(5, "the agent did not answer the hello")),
    }
    match ask(&req)? {
        AgentResponse::Ok(reply) => Ok(reply),
        AgentResponse::Error { code, message } => Err(failure(code.exit_code(), message)),
    }
}

#[cfg(test)]
mod tests {
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
        let e = call_by(&socket, Request::Policy, Duration::from_millis(200))
            .expect_err("nothing answers");
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
        let e = call_by(&socket, Request::Policy, Duration::from_millis(200))
            .expect_err("nothing answers");
        assert_eq!(e.code, 5, "{e}");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
    }
}
