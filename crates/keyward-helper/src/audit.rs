//! The one constructor of the helper's audit records. Which records are written, folded or
//! refused for lack of room is the edge's (`server.rs`) and the jobs' business; this module
//! only says what a record holds. No I/O here beyond the clock.

use keyward_core::audit::Record;
use keyward_sys::clock::now_rfc3339;

/// Who a record is about: the caller's class label and kernel credentials.
#[derive(Debug, Clone, Copy)]
pub struct Who<'a> {
    /// "admin", "agent", "refused" or "helper".
    pub caller: &'a str,
    /// The caller's uid (`u32::MAX` when unknown).
    pub uid: u32,
    /// The caller's pid (0 when unknown).
    pub pid: i32,
}

impl Who<'static> {
    /// The helper itself (start-up events).
    pub fn helper() -> Self {
        Who {
            caller: "helper",
            uid: 0,
            pid: i32::try_from(std::process::id()).unwrap_or(0),
        }
    }
}

/// A record of `op` on `volume` / `user` with `result` (`ok…` or `error:…`); the log fills in
/// its sequence number and chain.
pub fn record(
    who: Who<'_>,
    op: &str,
    volume: Option<&str>,
    user: Option<&str>,
    result: &str,
    folded: Option<u64>,
) -> Record {
    Record {
        seq: 0,
        time: now_rfc3339(),
        prev: String::new(),
        caller: who.caller.into(),
        uid: who.uid,
        pid: who.pid,
        op: op.into(),
        volume: volume.map(str::to_owned),
        user: user.map(str::to_owned),
        result: result.into(),
        folded,
    }
}

/// A record for something that is not a request (start-up events).
pub fn event(op: &str, result: &str) -> Record {
    record(Who::helper(), op, None, None, result, None)
}
