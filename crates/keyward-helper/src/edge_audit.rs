//! The edge's audit trail: the one record of every request the helper answers or refuses
//! and of every connection it closes unread, the folding of an untrusted caller's repeats into
//! one record a minute (the key: `keyward_core::audit::fold_key`), and the room check before
//! a change. Records are built by `keyward_core::audit::Record::new`; this module decides which are written.

use keyward_core::access::CallerClass;
use keyward_core::audit::{fold_key, result_of, Record};
use keyward_core::catalog::Operation;
use keyward_core::ipc::{ErrorCode, Request, Response};
use keyward_core::{UserName, VolumeName};
use keyward_sys::peer::Peer;

use crate::ctx::{lock, Ctx};

/// Who a record is about: the caller as far as the kernel said (no class: refused before one
/// was known), and the volume and user its request named.
#[derive(Clone, Copy, Default)]
pub(crate) struct Subject<'a> {
    pub(crate) class: Option<CallerClass>,
    pub(crate) peer: Option<Peer>,
    pub(crate) volume: Option<&'a VolumeName>,
    pub(crate) user: Option<&'a UserName>,
}

impl<'a> Subject<'a> {
    /// A classified caller; what its `request`, if any, named.
    pub(crate) fn of(class: CallerClass, peer: Peer, request: Option<&'a Request>) -> Self {
        Subject {
            class: Some(class),
            peer: Some(peer),
            volume: request.and_then(Request::volume),
            user: request.and_then(Request::user),
        }
    }
}

/// Record a connection closed unread (folded like every untrusted caller's refusals).
pub(crate) fn refuse(ctx: &Ctx, s: Subject<'_>, why: &str) {
    match record(ctx, s, "connect", &format!("error:refused: {why}"), false) {
        Ok(true) => eprintln!("keyward-helper: connection refused: {why}"),
        Ok(false) => {}
        Err(e) => eprintln!("keyward-helper: audit log: {e}"),
    }
}

/// Record a refusal or fault (folded for untrusted callers).
pub(crate) fn audit(ctx: &Ctx, s: Subject<'_>, op: &str, result: &str) {
    if let Err(e) = record(ctx, s, op, result, false) {
        eprintln!("keyward-helper: audit log: {e}");
    }
}

/// Append one record; `Ok(false)` when it was folded into a later one, or skipped because the
/// log's file system is down to what keyward keeps for change records (an untrusted caller's
/// reads and refusals never eat into that).
fn record(
    ctx: &Ctx,
    s: Subject<'_>,
    op: &str,
    result: &str,
    change: bool,
) -> std::io::Result<bool> {
    let uid = s.peer.map(|p| p.uid.get());
    let mut folded = None;
    if let Some(key) = fold_key(s.class, uid, op, result, change) {
        match lock(&ctx.fold).admit(&key, keyward_sys::clock::unix_secs()) {
            None => return Ok(false),
            Some(n) => folded = (n > 0).then_some(n),
        }
    }
    let caller = s.class.map_or("refused", CallerClass::label);
    let pid = s.peer.map_or(0, |p| p.pid);
    let entry = Record {
        volume: s.volume.map(ToString::to_string),
        user: s.user.map(ToString::to_string),
        folded,
        ..Record::new(caller, uid.unwrap_or(u32::MAX), pid, op, result)
    };
    let mut log = lock(&ctx.audit);
    // An untrusted caller's error (a refusal, a forged command) is no change record either.
    let no_change = !change || result.starts_with("error:");
    if s.class != Some(CallerClass::Admin) && no_change && log.room_for_untrusted().is_err() {
        return Ok(false);
    }
    let appended = if change {
        log.append(entry)
    } else {
        log.append_read(entry)
    };
    appended.map(|()| true)
}

/// Is there room in the audit log to record a change? Asked before every state-changing
/// operation: a change that could not be recorded must not happen.
pub(crate) fn room_for_change(ctx: &Ctx) -> std::io::Result<()> {
    lock(&ctx.audit).room_for_change()
}

/// Record an answered request. A state change whose record cannot be written is reported to
/// the caller as a failure (the change itself already happened: the error says so); an
/// agent's repeated reads are folded into one record a minute.
pub(crate) fn audit_answer(
    ctx: &Ctx,
    s: Subject<'_>,
    op: Operation,
    response: Response,
) -> Response {
    let result = result_of(&response);
    // Every answer of an operation that may change state is a durable record, a verify too:
    // `audit --verify` allows only reads and refusals past the durable head, and a record does
    // not say whether the verify it records revoked anything.
    let change = op.changes_state();
    match record(ctx, s, op.name(), &result, change) {
        Ok(_) => response,
        Err(e) if change => {
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

/// An error reply.
pub(crate) fn error(code: ErrorCode, message: impl Into<String>) -> Response {
    Response::Error {
        code,
        message: message.into(),
    }
}
