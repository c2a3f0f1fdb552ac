//! The records of what the helper does by itself: start-up settling, a rekey begun ahead of
//! its login job's record. Every record is built by `keyward_core::audit::Record::new`; which
//! are written, folded or refused for lack of room is the edge's (`edge_audit`) and the jobs'
//! business. No I/O here.

use keyward_core::audit::Record;

/// A record of `op`, done by the helper itself, with `result` (`ok…` or `error:…`).
pub fn event(op: &str, result: &str) -> Record {
    let pid = i32::try_from(std::process::id()).unwrap_or(0);
    Record::new("helper", 0, pid, op, result)
}
