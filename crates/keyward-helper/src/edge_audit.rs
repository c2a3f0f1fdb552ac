//! The edge's audit trail: the one record of every request the helper answers or refuses
//! and of every connection it closes unread, the folding of an untrusted caller's repeats into
//! one record a minute (the key: `keyward_core::audit::fold_key`), and the room check before
//! a change. Records are built by `audit`; this module decides which are written.

use keyward_core::access::CallerClass;
use keyward_core::audit::{fold_key, result_of};
use keyward_core::catalog::Operation;
use keyward_core::ipc::{ErrorCode, Request, Response};
use keyward_core::{UserName, VolumeName};
use keyward_sys::peer::Peer;

use crate::audit;
use crate::ctx::{lock, Ctx};

/// Record a connection closed unread (folded like every untrusted caller's refusals).
pub(crate) fn refuse(ctx: &Ctx, class: Option<CallerClass>, peer: Option<Peer>, why: &str) {
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
pub(crate) struct Named<'a> {
    pub(crate) volume: Option<&'a VolumeName>,
    pub(crate) user: Option<&'a UserName>,
}

impl<'a> From<&'a Request> for Named<'a> {
    fn from(r: &'a Request) -> Self {
        Named {
            volume: r.volume(),
            user: r.user(),
        }
    }
}

/// Record a refusal or fault (folded for untrusted callers).
pub(crate) fn audit(
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
    if let Some(key) = fold_key(class, peer.map(|p| p.uid.get()), op, result, change) {
        match lock(&ctx.fold).admit(&key, keyward_sys::clock::unix_secs()) {
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
    let mut log = lock(&ctx.audit);
    // An untrusted caller's error (a refusal, a forged command) is no change record either.
    let no_change = !change || result.starts_with("error:");
    if class != Some(CallerClass::Admin) && no_change && log.room_for_untrusted().is_err() {
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
pub(crate) fn room_for_change(ctx: &Ctx) -> std::io::Result<()> {
    lock(&ctx.audit).room_for_change()
}

/// Record an answered request. A state change whose record cannot be written is reported to
/// the caller as a failure (the change itself already happened: the error says so); an
/// agent's repeated reads are folded into one record a minute.
pub(crate) fn audit_answer(
    ctx: &Ctx,
    class: CallerClass,
    peer: Peer,
    op: Operation,
    named: Named<'_>,
    response: Response,
) -> Response {
    let result = result_of(&response);
    // Every answer of an operation that may change state is a durable record, a verify too:
    // `audit --verify` allows only reads and refusals past the durable head, and a record does
    // not say whether the verify it records revoked anything.
    let change = op.changes_state();
    match record(
        ctx,
        Some(class),
        Some(peer),
        op.name(),
        named,
        &result,
        change,
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

/// An error reply.
pub(crate) fn error(code: ErrorCode, message: impl Into<String>) -> Response {
    Response::Error {
        code,
        message: message.into(),
    }
}
