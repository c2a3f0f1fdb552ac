//! The edge: accepting connections, classifying each caller once by its kernel credentials,
//! framing, the allow-list check, the wire `Response` (an `OpError` becomes its error code and
//! so the CLI's exit code here, and nowhere else), and the audit record for every request
//! answered or refused. What a request does is `dispatch`'s.

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use keyward_core::access::{permits, CallerClass};
use keyward_core::catalog::Operation;
use keyward_core::ipc::{self, ErrorCode, FrameError, Reply, Request, Response};
use keyward_core::{UserName, VolumeName};
use keyward_sys::peer::{self, Peer};
use zeroize::Zeroizing;

use crate::audit;
use crate::ctx::Ctx;

/// At most this many root connections (the CLI, the PAM module) are served at once.
const MAX_ADMIN_CONNECTIONS: usize = 16;
/// At most this many of the agent's at once: a budget of its own, so the agent class (anyone
/// in the service user's shoes) can never take the connections root's CLI and logins need.
const MAX_AGENT_CONNECTIONS: usize = 4;
/// A whole request frame must arrive within this, however it is trickled; a client idle this
/// long between frames is dropped too.
const FRAME_DEADLINE: Duration = Duration::from_secs(5);
/// Writing a reply may take no longer.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// Connections in service, per class.
#[derive(Debug, Default)]
struct InService {
    admin: AtomicUsize,
    agent: AtomicUsize,
}

/// Accept forever. Each caller is classified once, here, by its kernel credentials, and
/// counted against its class's budget; anyone else, or a caller over budget, is closed before
/// a byte is read, and recorded (refusals of one kind are folded into one record a minute).
pub fn serve(listener: &UnixListener, ctx: &Arc<Ctx>) {
    let in_service = Arc::new(InService::default());
    for stream in listener.incoming() {
        let stream = match stream {
            Ok(s) => s,
            Err(e) => {
                eprintln!("keyward-helper: accept: {e}");
                continue;
            }
        };
        let peer = match peer::credentials(&stream) {
            Ok(p) => p,
            Err(e) => {
                refuse(ctx, None, None, &format!("no peer credentials: {e}"));
                continue;
            }
        };
        let Some(class) = CallerClass::of(peer.uid, Some(ctx.service_uid)) else {
            refuse(
                ctx,
                None,
                Some(peer),
                "caller is neither root nor the service user",
            );
            continue;
        };
        let (count, max) = match class {
            CallerClass::Agent => (&in_service.agent, MAX_AGENT_CONNECTIONS),
            _ => (&in_service.admin, MAX_ADMIN_CONNECTIONS),
        };
        if count.fetch_add(1, Ordering::SeqCst) >= max {
            count.fetch_sub(1, Ordering::SeqCst);
            refuse(ctx, Some(class), Some(peer), "too many connections");
            continue;
        }
        let (ctx, in_service) = (Arc::clone(ctx), Arc::clone(&in_service));
        let spawned = std::thread::Builder::new()
            .name("conn".into())
            .spawn(move || {
                handle(stream, &ctx, peer, class);
                let count = match class {
                    CallerClass::Agent => &in_service.agent,
                    _ => &in_service.admin,
                };
                count.fetch_sub(1, Ordering::SeqCst);
            });
        if let Err(e) = spawned {
            eprintln!("keyward-helper: cannot start a connection thread: {e}");
        }
    }
}

/// Record a connection closed unread (folded like every untrusted caller's refusals).
fn refuse(ctx: &Ctx, class: Option<CallerClass>, peer: Option<Peer>, why: &str) {
    let result = format!("error:refused: {why}");
    match record(
        ctx,
        class,
        peer,
        "connect",
        Named::default(),
        &result,
        false,
    ) {
        Ok(true) => eprintln!("keyward-helper: connection refused: {why}"),
        Ok(false) => {}
        Err(e) => eprintln!("keyward-helper: audit log: {e}"),
    }
}

/// The volume and user a request named, for its audit record.
#[derive(Clone, Copy, Default)]
struct Named<'a> {
    volume: Option<&'a VolumeName>,
    user: Option<&'a UserName>,
}

impl<'a> From<&'a Request> for Named<'a> {
    fn from(r: &'a Request) -> Self {
        Named {
            volume: r.volume(),
            user: r.user(),
        }
    }
}

fn audit(
    ctx: &Ctx,
    class: Option<CallerClass>,
    peer: Option<Peer>,
    op: &str,
    named: Named<'_>,
    result: &str,
) {
    if let Err(e) = record(ctx, class, peer, op, named, result, false) {
        eprintln!("keyward-helper: audit log: {e}");
    }
}

/// The key under which an untrusted caller's record is folded with identical ones, or `None`
/// when it must be written on its own: root's records, and the agent's state changes that did
/// something (only its idempotent verify and recovery-begin fold when plain "ok"). The key
/// holds the error's code, never its message, and no volume or user name: those are the
/// caller's to choose, and a new name must not buy a new record.
fn fold_key(
    class: Option<CallerClass>,
    peer: Option<Peer>,
    op: &str,
    result: &str,
    change: bool,
) -> Option<String> {
    // Root's records, and every signed command the agent relays (each refusal names the
    // command: evidence of a forged or replayed one), are written one by one.
    if class == Some(CallerClass::Admin) || op == Operation::RunCommand.name() {
        return None;
    }
    let outcome = if result.starts_with("error:") {
        result.splitn(3, ':').take(2).collect::<Vec<_>>().join(":")
    } else if result == "ok" && (!change || matches!(op, "verify" | "recovery-begin")) {
        "ok".to_owned()
    } else {
        return None;
    };
    Some(format!(
        "{} {} {op} {outcome}",
        class.map_or("refused", CallerClass::label),
        peer.map_or(u32::MAX, |p| p.uid.get())
    ))
}

/// Append one record; `Ok(false)` when it was folded into a later one, or skipped because the
/// log's file system is down to what keyward keeps for change records (an untrusted caller's
/// reads and refusals never eat into that).
fn record(
    ctx: &Ctx,
    class: Option<CallerClass>,
    peer: Option<Peer>,
    op: &str,
    named: Named<'_>,
    result: &str,
    change: bool,
) -> std::io::Result<bool> {
    let mut folded = None;
    if let Some(key) = fold_key(class, peer, op, result, change) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let admitted = match ctx.fold.lock() {
            Ok(mut f) => f.admit(&key, now),
            Err(poisoned) => poisoned.into_inner().admit(&key, now),
        };
        match admitted {
            None => return Ok(false),
            Some(n) => folded = (n > 0).then_some(n),
        }
    }
    let who = audit::Who {
        caller: class.map_or("refused", CallerClass::label),
        uid: peer.map_or(u32::MAX, |p| p.uid.get()),
        pid: peer.map_or(0, |p| p.pid),
    };
    let entry = audit::record(
        who,
        op,
        named.volume.map(VolumeName::as_str),
        named.user.map(UserName::as_str),
        result,
        folded,
    );
    let mut log = match ctx.audit.lock() {
        Ok(log) => log,
        Err(poisoned) => poisoned.into_inner(),
    };
    if class != Some(CallerClass::Admin) && !change && log.room_for_untrusted().is_err() {
        return Ok(false);
    }
    if change {
        log.append(entry).map(|()| true)
    } else {
        log.append_read(entry).map(|()| true)
    }
}

/// Is there room in the audit log to record a change? Asked before every state-changing
/// operation: a change that could not be recorded must not happen.
fn room_for_change(ctx: &Ctx) -> std::io::Result<()> {
    match ctx.audit.lock() {
        Ok(log) => log.room_for_change(),
        Err(poisoned) => poisoned.into_inner().room_for_change(),
    }
}

/// Record an answered request. A state change whose record cannot be written is reported to
/// the caller as a failure (the change itself already happened: the error says so); an
/// agent's repeated reads are folded into one record a minute.
fn audit_answer(
    ctx: &Ctx,
    class: CallerClass,
    peer: Peer,
    op: Operation,
    named: Named<'_>,
    response: Response,
) -> Response {
    let result = result_text(&response);
    match record(
        ctx,
        Some(class),
        Some(peer),
        op.name(),
        named,
        &result,
        op.changes_state(),
    ) {
        Ok(_) => response,
        Err(e) if op.changes_state() => {
            eprintln!("keyward-helper: audit log: {e}");
            error(
                ErrorCode::Failed,
                format!(
                    "{} could not be recorded in the audit log ({e}); its outcome was: {result}",
                    op.name()
                ),
            )
        }
        Err(e) => {
            eprintln!("keyward-helper: audit log: {e}");
            response
        }
    }
}

fn result_text(r: &Response) -> String {
    match r {
        // A signed command's record names it and what it did (its errors name it too).
        Response::Ok(Reply::CommandDone { id, outcome }) => {
            format!("ok: command {}: {outcome}", keyward_core::quote(id))
        }
        Response::Ok(_) => "ok".into(),
        Response::Error { code, message } => format!("error:{code:?}: {message}"),
    }
}

/// Why a connection ended early.
enum Fault {
    Closed,
    Frame(FrameError),
    Io(std::io::Error),
}

/// Read exactly `buf.len()` bytes, all before `deadline`: each read may wait only for the
/// time left, so a client trickling a byte at a time cannot stretch a frame past it.
fn read_by(stream: &mut UnixStream, buf: &mut [u8], deadline: Instant) -> Result<(), Fault> {
    let mut got = 0;
    while got < buf.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Fault::Io(std::io::ErrorKind::TimedOut.into()));
        }
        stream.set_read_timeout(Some(left)).map_err(Fault::Io)?;
        match stream.read(&mut buf[got..]) {
            Ok(0) if got == 0 => return Err(Fault::Closed),
            Ok(0) => return Err(Fault::Io(std::io::ErrorKind::UnexpectedEof.into())),
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Fault::Io(e)),
        }
    }
    Ok(())
}

/// One whole frame within [`FRAME_DEADLINE`] of starting to wait for it. Frames carry
/// passwords (a login capture, a grant), so the payload is read into one buffer of its final
/// size that is wiped when dropped.
fn read_frame(stream: &mut UnixStream) -> Result<Zeroizing<Vec<u8>>, Fault> {
    let deadline = Instant::now() + FRAME_DEADLINE;
    let mut prefix = [0u8; 4];
    read_by(stream, &mut prefix, deadline)?;
    let len = ipc::frame_len(prefix).map_err(Fault::Frame)?;
    let mut payload = Zeroizing::new(vec![0u8; len]);
    match read_by(stream, &mut payload, deadline) {
        // The prefix came: a close now is a cut frame, not a goodbye.
        Err(Fault::Closed) => Err(Fault::Io(std::io::ErrorKind::UnexpectedEof.into())),
        other => other.map(|()| payload),
    }
}

fn send(stream: &mut UnixStream, r: &Response) -> std::io::Result<()> {
    let frame = ipc::encode_frame(r).map_err(|e| std::io::Error::other(e.to_string()))?;
    stream.write_all(&frame)
}

fn error(code: ErrorCode, message: impl Into<String>) -> Response {
    Response::Error {
        code,
        message: message.into(),
    }
}

fn handle(mut stream: UnixStream, ctx: &Arc<Ctx>, peer: Peer, class: CallerClass) {
    if stream.set_write_timeout(Some(WRITE_TIMEOUT)).is_err() {
        return;
    }
    let mut greeted = false;
    loop {
        let payload = match read_frame(&mut stream) {
            Ok(p) => p,
            Err(Fault::Closed) => return,
            Err(fault) => {
                let why = match fault {
                    Fault::Frame(e) => e.to_string(),
                    Fault::Io(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) =>
                    {
                        "client too slow".to_owned()
                    }
                    Fault::Io(e) => format!("read: {e}"),
                    Fault::Closed => String::new(),
                };
                audit(
                    ctx,
                    Some(class),
                    Some(peer),
                    "frame",
                    Named::default(),
                    &format!("error:Usage: {why}"),
                );
                let _ = send(&mut stream, &error(ErrorCode::Usage, why));
                return;
            }
        };
        let request = match ipc::decode_request(&payload) {
            Ok(r) => r,
            Err(e) => {
                audit(
                    ctx,
                    Some(class),
                    Some(peer),
                    "frame",
                    Named::default(),
                    &format!("error:Usage: {e}"),
                );
                let _ = send(&mut stream, &error(ErrorCode::Usage, e.to_string()));
                return;
            }
        };
        let op = match (&request, greeted) {
            (Request::Hello { version }, false) if *version == ipc::PROTOCOL_VERSION => {
                greeted = true;
                let hello = Response::Ok(Reply::Hello {
                    version: ipc::PROTOCOL_VERSION,
                });
                if send(&mut stream, &hello).is_err() {
                    return;
                }
                continue;
            }
            (Request::Hello { version }, false) => {
                let msg = format!(
                    "protocol version {version} is not supported (need {})",
                    ipc::PROTOCOL_VERSION
                );
                audit(
                    ctx,
                    Some(class),
                    Some(peer),
                    "hello",
                    Named::default(),
                    &format!("error:Usage: {msg}"),
                );
                let _ = send(&mut stream, &error(ErrorCode::Usage, msg));
                return;
            }
            (_, false) | (Request::Hello { .. }, true) => {
                let msg = "the first frame must be the only hello";
                audit(
                    ctx,
                    Some(class),
                    Some(peer),
                    "hello",
                    Named::from(&request),
                    &format!("error:Usage: {msg}"),
                );
                let _ = send(&mut stream, &error(ErrorCode::Usage, msg));
                return;
            }
            (r, true) => match r.operation() {
                Some(op) => op,
                None => return,
            },
        };
        if !permits(class, op) {
            let msg = format!(
                "{} is not allowed for the {} class",
                op.name(),
                class.label()
            );
            audit(
                ctx,
                Some(class),
                Some(peer),
                op.name(),
                Named::from(&request),
                &format!("error:Refused: {msg}"),
            );
            let _ = send(&mut stream, &error(ErrorCode::Refused, msg));
            return;
        }
        if op.changes_state() {
            if let Err(e) = room_for_change(ctx) {
                let msg = format!("nothing was changed: {e}");
                audit(
                    ctx,
                    Some(class),
                    Some(peer),
                    op.name(),
                    Named::from(&request),
                    &format!("error:Refused: {msg}"),
                );
                eprintln!("keyward-helper: {}: {msg}", op.name());
                let _ = send(&mut stream, &error(ErrorCode::Refused, msg));
                return;
            }
        }
        let (volume, user) = (request.volume().cloned(), request.user().cloned());
        let response = match crate::dispatch::run(ctx, request, peer) {
            Ok(reply) => Response::Ok(reply),
            Err(e) => error(e.code(), e.to_string()),
        };
        let named = Named {
            volume: volume.as_ref(),
            user: user.as_ref(),
        };
        // A queued PAM event is audited once, by its job, with its outcome.
        let response = if response == Response::Ok(Reply::Queued) {
            response
        } else {
            audit_answer(ctx, class, peer, op, named, response)
        };
        if send(&mut stream, &response).is_err() {
            return;
        }
    }
}
