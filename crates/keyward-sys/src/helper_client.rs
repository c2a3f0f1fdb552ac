//! One request to the helper: connect, check that the helper's end of the socket is root, hello,
//! request, response. Used by the CLI and the agent, and — through [`send_login_capture`] and
//! [`LOGIN_PATH_BUDGET`] — by the two login-path callers, the PAM module and the macOS
//! authorization plugin, so both speak the same frames under the same time rule. Also the CLI's
//! one request to the agent's control socket ([`call_agent`]). Frames are read and written by
//! [`crate::frame_io`].

use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use keyward_core::ipc::{
    self, AgentReply, AgentRequest, AgentResponse, Reply, Request, Response, WireSecret,
};
use keyward_core::{Secret, UserName};

use crate::frame_io::{self, FrameFault};
use crate::peer;

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

/// A request that cannot be framed (too large) is the caller's error; anything else while
/// sending means the helper is not there to take it.
fn not_sent(fault: FrameFault) -> CallError {
    match fault {
        FrameFault::Frame(e) => failure(2, e.to_string()),
        other => unavailable(other),
    }
}

/// How long one exchange may take.
#[derive(Debug, Clone, Copy)]
enum Limit {
    /// Each frame, written or read, within this of starting it; `connect` may block.
    PerFrame(Duration),
    /// The whole exchange, connecting included, by this instant.
    By(Instant),
}

impl Limit {
    fn deadline(self) -> Instant {
        match self {
            // A day bounds what a caller may ask for, so the sum cannot overflow.
            Limit::PerFrame(d) => Instant::now() + d.min(Duration::from_secs(86_400)),
            Limit::By(deadline) => deadline,
        }
    }
}

/// The helper runs as root. Anything else listening at its socket path — a socket planted
/// where a stale or misconfigured path points, a test double run by a user — is not the helper
/// and is sent nothing: not a password, not even the hello. The kernel recorded the listener's
/// credentials when it called `listen(2)`, so this needs no answer from it.
fn insist_on_root(stream: &UnixStream, socket: &Path) -> Result<(), CallError> {
    let uid = peer::effective_uid(stream).map_err(unavailable)?;
    if uid.get() == 0 {
        return Ok(());
    }
    Err(failure(
        5,
        format!(
            "refusing to talk to {}: the process listening there runs as uid {}, not root, so it \
             is not the keyward helper; nothing was sent",
            keyward_core::quote(&socket.display().to_string()),
            uid.get()
        ),
    ))
}

/// One frame out and one back.
fn exchange(stream: &UnixStream, req: &Request, limit: Limit) -> Result<Response, CallError> {
    frame_io::write_message(stream, req, limit.deadline()).map_err(not_sent)?;
    frame_io::read_message(stream, limit.deadline(), ipc::decode_response).map_err(unavailable)
}

/// Hello, then `req`, on a stream already checked to be the helper's.
fn converse(stream: &UnixStream, req: &Request, limit: Limit) -> Result<Reply, CallError> {
    let hello = Request::Hello {
        version: ipc::PROTOCOL_VERSION,
    };
    match exchange(stream, &hello, limit)? {
        Response::Ok(Reply::Hello { .. }) => {}
        Response::Ok(other) => return Err(unexpected(&other)),
        Response::Error { code, message } => return Err(failure(code.exit_code(), message)),
    }
    match exchange(stream, req, limit)? {
        Response::Ok(reply) => Ok(reply),
        Response::Error { code, message } => Err(failure(code.exit_code(), message)),
    }
}

/// Send `req` and return the reply, or the helper's error with its exit code.
pub fn call(socket: &Path, req: Request) -> Result<Reply, CallError> {
    call_within(socket, req, TIMEOUT)
}

/// Like [`call`], giving up when any one frame, written or read, takes longer than `timeout`.
pub fn call_within(socket: &Path, req: Request, timeout: Duration) -> Result<Reply, CallError> {
    let stream = UnixStream::connect(socket).map_err(unavailable)?;
    insist_on_root(&stream, socket)?;
    converse(&stream, &req, Limit::PerFrame(timeout))
}

/// Like [`call`], but the whole exchange — connecting included — ends within `budget`, however
/// the helper behaves: hung, not accepting (a full listen backlog makes a Unix socket's
/// `connect` block), or answering a byte at a time. For callers that must never wait, such as
/// the PAM module in a login.
pub fn call_by(socket: &Path, req: Request, budget: Duration) -> Result<Reply, CallError> {
    let deadline = Instant::now() + budget;
    let stream = connect_by(socket, deadline)?;
    insist_on_root(&stream, socket)?;
    converse(&stream, &req, Limit::By(deadline))
}

/// The longest a caller on a login path (pam_keyward.so, the macOS authorization plugin) waits
/// on the helper for one whole exchange, connecting included. A login never waits longer for
/// keyward, whatever the helper does.
pub const LOGIN_PATH_BUDGET: Duration = Duration::from_millis(200);

/// Hand a login's user and password to the helper (`Request::LoginCapture`) within
/// [`LOGIN_PATH_BUDGET`]. The password goes from `password` into the zeroizing request and
/// frame and nowhere else — and only to a helper running as root. The helper answers at once
/// (`Reply::Queued`) and does the work later; any other outcome is the error the caller logs
/// and ignores.
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

/// A reply of the wrong kind (a helper of another version).
pub fn unexpected(r: &Reply) -> CallError {
    failure(1, format!("unexpected reply from the helper: {r:?}"))
}

/// One request to the agent's control socket (root only), which may carry a secret (an
/// enrollment token). The agent runs as the service user `agent` names, so anything else
/// listening at the socket path — a socket planted where a misconfigured `agent_state_dir`
/// points, another account's process — is not the agent and is sent nothing, not even the
/// hello. The kernel recorded the listener's credentials when it called `listen(2)`.
pub fn call_agent(
    socket: &Path,
    agent: &UserName,
    req: AgentRequest,
) -> Result<AgentReply, CallError> {
    let agent_down = |e: FrameFault| failure(5, format!("the keyward agent is unavailable: {e}"));
    let want = crate::users::user(agent)
        .map_err(|e| failure(5, format!("looking up the agent's account {agent}: {e}")))?
        .ok_or_else(|| failure(5, format!("the agent's account {agent} does not exist")))?;
    let stream = UnixStream::connect(socket).map_err(|e| agent_down(FrameFault::Io(e)))?;
    let uid = peer::effective_uid(&stream).map_err(|e| agent_down(FrameFault::Io(e)))?;
    if uid != want.uid {
        return Err(failure(
            5,
            format!(
                "refusing to talk to {}: the process listening there runs as uid {}, not the \
                 agent's account {agent} (uid {}), so it is not the keyward agent; nothing was sent",
                keyward_core::quote(&socket.display().to_string()),
                uid.get(),
                want.uid.get()
            ),
        ));
    }
    let ask = |r: &AgentRequest| -> Result<AgentResponse, CallError> {
        let limit = Limit::PerFrame(TIMEOUT);
        frame_io::write_message(&stream, r, limit.deadline()).map_err(|f| match f {
            FrameFault::Frame(e) => failure(2, e.to_string()),
            other => agent_down(other),
        })?;
        frame_io::read_message(&stream, limit.deadline(), ipc::decode_agent_response)
            .map_err(agent_down)
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
#[path = "helper_client_tests.rs"]
mod tests;
