//! The PAM check in a child process: the helper's side ([`ask`]) starts `/proc/self/exe
//! --check-password` with a clean environment; the child's side ([`child_main`]) runs the
//! `keyward` PAM service in it ([`super::check`]). A module that hangs or crashes (sssd
//! unreachable, say) never takes the helper with it: at a deadline the child is killed, and
//! every process its modules started with it (the child is a subreaper from its start, so a
//! program pam_exec ran in a session of its own is still found below it: [`process_tree`]).
//!
//! One socket pair, the child's stdin, carries both ways: the helper sends `USER\nPASSWORD` in
//! a zeroizing buffer allocated at its final size and shuts its sending side; the child answers
//! `accepted` or `refused: WHY` (exit 0), or `error: WHY` (exit 1), at most [`MAX_VERDICT`]
//! bytes. The child's stdout and stderr are /dev/null and it moves the socket off stdin before
//! any module runs, so what a module prints can neither block the check (a full pipe) nor be
//! taken for its verdict.

use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, ExitCode, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use keyward_core::{Secret, UserName};
use rustix::process::{Pid, Signal};
use zeroize::Zeroizing;

use super::Verdict;
use crate::process_tree;

/// The argument that makes the helper binary this child.
pub const CHILD_FLAG: &str = "--check-password";
/// How long the PAM stack may take (sssd's own offline detection is shorter).
const DEADLINE: Duration = Duration::from_secs(30);
/// The most the child reads: a user name, a newline and a password.
const MAX_INPUT: usize = 8 * 1024;
/// The most of the child's answer the helper reads.
pub const MAX_VERDICT: usize = 4096;

/// Why the check gave no verdict.
#[derive(Debug, thiserror::Error)]
pub enum AskError {
    /// No socket pair.
    #[error("socketpair: {0}")]
    Socket(std::io::Error),
    /// The child did not start.
    #[error("starting the PAM check: {0}")]
    Start(std::io::Error),
    /// The stack took longer than the deadline: the child and its processes were killed.
    #[error("the PAM stack did not answer within {} s", .0.as_secs())]
    Deadline(Duration),
    /// The name and password did not reach the child.
    #[error("sending to the PAM check: {0}")]
    Send(std::io::Error),
    /// The answer could not be read.
    #[error("reading the PAM check: {0}")]
    Read(std::io::Error),
    /// The child's state could not be read.
    #[error("waiting for the PAM check: {0}")]
    Wait(std::io::Error),
    /// The child failed, or answered something else than a verdict (shown printable).
    #[error("the PAM check failed ({status}): {answer}")]
    Failed {
        /// How the child ended.
        status: ExitStatus,
        /// What it answered.
        answer: String,
    },
}

/// Ask the `keyward` PAM service, in a child process, whether `password` is `user`'s.
pub fn ask(user: &UserName, password: &Secret) -> Result<Verdict, AskError> {
    ask_with(
        Path::new("/proc/self/exe"),
        &[CHILD_FLAG],
        DEADLINE,
        user,
        password,
    )
}

/// [`ask`], with the child's program and arguments and the deadline given (tests run
/// stand-ins for the child).
fn ask_with(
    program: &Path,
    args: &[&str],
    deadline: Duration,
    user: &UserName,
    password: &Secret,
) -> Result<Verdict, AskError> {
    let (ours, theirs) = UnixStream::pair().map_err(AskError::Socket)?;
    let mut command = Command::new(program);
    command
        .args(args)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .stdin(Stdio::from(OwnedFd::from(theirs)))
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: between fork and exec the hook makes one system call (prctl), allocating nothing
    // and taking no lock: async-signal-safe.
    unsafe { command.pre_exec(process_tree::become_subreaper) };
    let spawned = command.spawn();
    // The command holds the child's end of the pair: closed here, so the child's exit ends
    // the answer.
    drop(command);
    let mut child = spawned.map_err(AskError::Start)?;
    let outcome = exchange(ours, &mut child, deadline, user, password);
    let (status, answer) = outcome.inspect_err(|_| end(&mut child))?;
    let answer = String::from_utf8_lossy(&answer);
    let answer = keyward_core::printable(answer.trim_end());
    match (status.code(), answer.strip_prefix("refused: ")) {
        (Some(0), _) if answer == "accepted" => Ok(Verdict::Accepted),
        (Some(0), Some(why)) => Ok(Verdict::Refused(why.to_owned())),
        _ => Err(AskError::Failed { status, answer }),
    }
}

/// Send the name and password, read the answer, wait for the child's exit: all within
/// `deadline`. The socket is closed once the answer is read, so a child that says more than
/// that cannot block on it.
fn exchange(
    mut ours: UnixStream,
    child: &mut Child,
    deadline: Duration,
    user: &UserName,
    password: &Secret,
) -> Result<(ExitStatus, Vec<u8>), AskError> {
    let until = Instant::now() + deadline;
    let mut input = Zeroizing::new(Vec::with_capacity(user.as_str().len() + 1 + password.len()));
    input.extend_from_slice(user.as_str().as_bytes());
    input.push(b'\n');
    input.extend_from_slice(password.expose());
    let sent = ours
        .write_all(&input)
        .and_then(|()| ours.shutdown(std::net::Shutdown::Write));
    drop(input);
    // A child that has exited ends the answer too, even if a process a module forked (without
    // exec) still holds the socket open: its crash is reported as one, not as a timeout.
    let exited = || matches!(child.try_wait(), Ok(Some(_)));
    let answer = read_answer(&mut ours, until, exited).map_err(|e| match e.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
            AskError::Deadline(deadline)
        }
        _ => AskError::Read(e),
    })?;
    drop(ours);
    let status = loop {
        match child.try_wait().map_err(AskError::Wait)? {
            Some(status) => break status,
            None if Instant::now() < until => std::thread::sleep(Duration::from_millis(20)),
            None => return Err(AskError::Deadline(deadline)),
        }
    };
    sent.map_err(AskError::Send)?;
    Ok((status, answer))
}

/// At most [`MAX_VERDICT`] bytes, up to the end of the child's answer or, once `exited()`
/// says the child is gone, what it left in the socket; `TimedOut` (or `WouldBlock`, the
/// socket's own timeout) at `until`.
fn read_answer(
    ours: &mut UnixStream,
    until: Instant,
    mut exited: impl FnMut() -> bool,
) -> std::io::Result<Vec<u8>> {
    const POLL: Duration = Duration::from_millis(100);
    let mut answer = Vec::with_capacity(MAX_VERDICT);
    let mut chunk = [0u8; 512];
    let mut child_gone = false;
    while answer.len() < MAX_VERDICT {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(std::io::ErrorKind::TimedOut.into());
        }
        ours.set_read_timeout(Some(left.min(POLL)))?;
        let room = chunk.len().min(MAX_VERDICT - answer.len());
        match ours.read(&mut chunk[..room]) {
            // A reset: the child closed its end before reading all it was sent (it refused
            // early); what it said before is its answer.
            Ok(0) => break,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Ok(n) => answer.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                // Nothing more for now: the child gone, what is left was drained; else wait.
                if child_gone {
                    break;
                }
                child_gone = exited();
            }
            Err(e) => return Err(e),
        }
    }
    Ok(answer)
}

/// Kill the child and every process below it, then reap it. Best effort: the check has
/// failed already, and that failure is what the caller reports. The tree is killed only while
/// the child is not reaped: until then its pid is its own (a zombie keeps it), after that it
/// may be a stranger's. The child is stopped first, so it forks nothing while its tree goes.
fn end(child: &mut Child) {
    if matches!(child.try_wait(), Ok(None)) {
        if let Some(pid) = i32::try_from(child.id()).ok().and_then(Pid::from_raw) {
            let _ = rustix::process::kill_process(pid, Signal::STOP);
        }
        let _ = process_tree::kill_descendants(child.id());
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// `keyward-helper --check-password`: read `USER\nPASSWORD` from the socket on stdin, ask PAM,
/// answer on the same socket. Fails silently (exit 1, no answer) only if the socket cannot be
/// taken off stdin: then there is nowhere to answer.
pub fn child_main() -> ExitCode {
    let Ok(socket) = take_stdin() else {
        return ExitCode::FAILURE;
    };
    let ready =
        crate::hardening::make_undumpable().map_err(|e| format!("prctl(PR_SET_DUMPABLE): {e}"));
    serve(socket, ready, super::check)
}

/// The socket on stdin, as a new close-on-exec descriptor; stdin becomes /dev/null, so no
/// module (nor a program it runs) reads or writes the socket.
fn take_stdin() -> std::io::Result<UnixStream> {
    let socket = std::io::stdin().as_fd().try_clone_to_owned()?;
    let null = std::fs::File::open("/dev/null")?;
    // SAFETY: dup2 between two descriptors this process holds open; it touches no memory.
    if unsafe { libc::dup2(null.as_raw_fd(), libc::STDIN_FILENO) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(UnixStream::from(socket))
}

/// The child's work once it holds the socket: unless not `ready`, read the name and password,
/// `check` them, answer.
fn serve(
    mut socket: UnixStream,
    ready: Result<(), String>,
    check: impl FnOnce(&UserName, &Secret) -> Result<Verdict, String>,
) -> ExitCode {
    let verdict = ready
        .and_then(|()| receive(&mut socket))
        .and_then(|(user, password)| check(&user, &password));
    let (answer, code) = match verdict {
        Ok(Verdict::Accepted) => ("accepted".to_owned(), ExitCode::SUCCESS),
        Ok(Verdict::Refused(why)) => (format!("refused: {why}"), ExitCode::SUCCESS),
        Err(e) => (format!("error: {e}"), ExitCode::FAILURE),
    };
    let mut end = MAX_VERDICT.min(answer.len());
    while !answer.is_char_boundary(end) {
        end -= 1;
    }
    let answered = socket
        .write_all(&answer.as_bytes()[..end])
        .and_then(|()| socket.shutdown(std::net::Shutdown::Write));
    if answered.is_err() {
        return ExitCode::FAILURE;
    }
    code
}

/// The name and password the helper sent.
fn receive(socket: &mut UnixStream) -> Result<(UserName, Secret), String> {
    let input = read_input(socket).map_err(|e| format!("reading: {e}"))?;
    let split = input
        .iter()
        .position(|&b| b == b'\n')
        .ok_or("no user name")?;
    if input.len() > MAX_INPUT {
        return Err("input too long".into());
    }
    let user = std::str::from_utf8(&input[..split])
        .ok()
        .and_then(|n| UserName::parse(n).ok())
        .ok_or("not a user name")?;
    Ok((user, Secret::copy_from(&input[split + 1..])))
}

/// Read at most `MAX_INPUT + 1` bytes into one buffer allocated at that size up front: a
/// growing buffer would leave copies of the password in freed memory, unwiped.
fn read_input(from: impl Read) -> std::io::Result<Zeroizing<Vec<u8>>> {
    let mut input = Zeroizing::new(Vec::with_capacity(MAX_INPUT + 1));
    from.take(MAX_INPUT as u64 + 1).read_to_end(&mut input)?;
    Ok(input)
}

#[cfg(test)]
#[path = "child_tests.rs"]
mod tests;
