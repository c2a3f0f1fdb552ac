//! The audit trail's format: one JSON object per line, each naming the SHA-256 of the line
//! before it, so that a changed, removed, inserted or reordered record breaks the chain at the
//! first bad line. A separate head (sequence number and hash of the last line, kept root-only
//! by the helper and mirrored to syslog) catches a truncated tail. Pure: the file I/O is in
//! keyward-sys. Records never hold secrets, and JSON escapes every control character.

use serde::{Deserialize, Serialize};

use crate::access::CallerClass;
use crate::catalog::Operation;
use crate::ipc::{Reply, Response};

/// `prev` of the first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One answered request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    /// 1-based position in the log.
    pub seq: u64,
    /// RFC 3339 UTC time.
    pub time: String,
    /// SHA-256 (hex) of the previous line, or [`GENESIS`].
    pub prev: String,
    /// `admin`, `agent`, or `refused` (no class).
    pub caller: String,
    /// Peer uid from the kernel.
    pub uid: u32,
    /// Peer pid from the kernel.
    pub pid: i32,
    /// Catalog operation name, or what was refused (`connect`, `frame`, …).
    pub op: String,
    /// Volume named, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume: Option<String>,
    /// User named, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// `ok`, or `error:<code>: <message>`.
    pub result: String,
    /// How many identical requests before this one were folded into it instead of being
    /// recorded one by one (an agent's repeated reads; see [`Fold`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub folded: Option<u64>,
}

/// Folds repeated identical read-only requests (same caller class, operation, volume and
/// result) into at most one record per [`Fold::WINDOW_SECS`], so a caller that can only read
/// cannot flood the log and fill its disk. The record written at the end of a quiet spell
/// names how many were folded into it. Pure: the caller passes the clock.
#[derive(Debug, Default)]
pub struct Fold {
    /// Per key: when its window opened, and how many requests were folded since.
    windows: std::collections::HashMap<String, (u64, u64)>,
}

impl Fold {
    /// One record per key per this many seconds.
    pub const WINDOW_SECS: u64 = 60;
    /// Keys remembered at once; past this the oldest windows are forgotten (which only means
    /// more records, never fewer).
    pub const MAX_KEYS: usize = 256;

    /// `Some(n)`: record this request, noting `n` earlier ones folded into it. `None`: fold it.
    pub fn admit(&mut self, key: &str, now_secs: u64) -> Option<u64> {
        if let Some((opened, folded)) = self.windows.get_mut(key) {
            if now_secs < opened.saturating_add(Self::WINDOW_SECS) {
                *folded += 1;
                return None;
            }
            let n = *folded;
            *opened = now_secs;
            *folded = 0;
            return Some(n);
        }
        if self.windows.len() >= Self::MAX_KEYS {
            let oldest = self
                .windows
                .iter()
                .min_by_key(|(_, (opened, _))| *opened)
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                self.windows.remove(&k);
            }
        }
        self.windows.insert(key.to_owned(), (now_secs, 0));
        Some(0)
    }
}

/// The last record's position and hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Head {
    /// Number of records.
    pub seq: u64,
    /// SHA-256 (hex) of the last line.
    pub hash: String,
}

impl Default for Head {
    fn default() -> Self {
        Head {
            seq: 0,
            hash: GENESIS.to_owned(),
        }
    }
}

/// Hex SHA-256 of one line (without its newline).
pub fn line_hash(line: &str) -> String {
    crate::hex::sha256(line.as_bytes())
}

impl Record {
    /// The one constructor of a record: `op` by a caller (its class label — `admin`, `agent`,
    /// `refused`, or `helper` for what the helper does by itself — and its kernel uid and pid),
    /// with `result` (`ok…` or `error:…`). The volume, user and fold count are set by name where
    /// they apply; the log fills in the sequence number, time and chain as it appends.
    pub fn new(caller: &str, uid: u32, pid: i32, op: &str, result: &str) -> Record {
        Record {
            seq: 0,
            time: String::new(),
            prev: String::new(),
            caller: caller.into(),
            uid,
            pid,
            op: op.into(),
            volume: None,
            user: None,
            result: result.into(),
            folded: None,
        }
    }

    /// Serialize as one line (no newline), chained after `head`; returns the new head.
    pub fn chain(mut self, head: &Head) -> (String, Head) {
        self.seq = head.seq + 1;
        self.prev = head.hash.clone();
        // A struct of strings and integers always serializes.
        let line = serde_json::to_string(&self).unwrap_or_default();
        let next = Head {
            seq: self.seq,
            hash: line_hash(&line),
        };
        (line, next)
    }
}

/// Where verification failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChainError {
    /// Line `n` (1-based) is not a valid record.
    #[error("line {0}: not a valid audit record")]
    Malformed(usize),
    /// Line `n` does not follow the line before it (changed, removed, inserted, reordered).
    #[error("line {0}: does not follow the line before it (a record was changed, removed, inserted or reordered)")]
    Broken(usize),
    /// The log ends before the recorded head (records removed from the end) or after it.
    #[error("the log has {found} records but the head says {expected}: records were removed from or added to the end")]
    Truncated {
        /// Records found.
        found: u64,
        /// Records the head names.
        expected: u64,
    },
    /// The record the head names is not the one in the log (it was changed).
    #[error("line {0}: the record does not match the recorded head")]
    HeadMismatch(usize),
    /// A successful state change lies past the durable head: only reads and refusals are
    /// written without moving the head, so the head was rolled back or the record added.
    #[error("line {0}: a state change recorded after the durable head (the head was rolled back, or the record added)")]
    ChangePastHead(usize),
}

/// Whether a record may lie past the durable head. The helper writes the records of reads and
/// refusals without fsync and without rewriting the head (issue 18: three syncs per `status`),
/// so a log may end with such records after the head; a successful state change is always
/// written durably, with the head.
pub fn may_follow_head(r: &Record) -> bool {
    let reads = [Operation::Status, Operation::Audit, Operation::PolicyShow];
    r.caller == "refused"
        || r.result.starts_with("error:")
        || reads.iter().any(|o| o.name() == r.op)
}

/// The key under which an untrusted caller's record is folded with identical ones (one record
/// a minute, [`Fold`]), or `None` when it must be written on its own: root's records, every
/// signed command the agent relays (each refusal names the command: evidence of a forged or
/// replayed one), and the agent's state changes that did something (only its idempotent
/// verify and escrowed recovery begin fold when plain "ok"). The key holds the error's code,
/// never its message, and no volume or user name: those are the caller's to choose, and a new
/// name must not buy a new record. `caller` is `None` for a connection refused unclassified;
/// `uid` is the peer's, if known.
pub fn fold_key(
    caller: Option<CallerClass>,
    uid: Option<u32>,
    op: &str,
    result: &str,
    change: bool,
) -> Option<String> {
    if caller == Some(CallerClass::Admin) || op == Operation::RunCommand.name() {
        return None;
    }
    let idempotent = [Operation::Verify, Operation::RecoveryEscrowBegin];
    let outcome = if result.starts_with("error:") {
        result.splitn(3, ':').take(2).collect::<Vec<_>>().join(":")
    } else if result == "ok" && (!change || idempotent.iter().any(|o| o.name() == op)) {
        "ok".to_owned()
    } else {
        return None;
    };
    Some(format!(
        "{} {} {op} {outcome}",
        caller.map_or("refused", CallerClass::label),
        uid.unwrap_or(u32::MAX)
    ))
}

/// The `result` field of an answered request's record: `ok`, a signed command's id and outcome,
/// or `error:<code>: <message>`.
pub fn result_of(r: &Response) -> String {
    match r {
        Response::Ok(Reply::CommandDone { id, outcome }) => {
            format!("ok: command {}: {outcome}", crate::quote(id))
        }
        Response::Ok(_) => "ok".into(),
        Response::Error { code, message } => format!("error:{code:?}: {message}"),
    }
}

/// Verify a whole log against its head. Returns the parsed records.
pub fn verify<'a>(
    lines: impl IntoIterator<Item = &'a str>,
    head: Option<&Head>,
) -> Result<Vec<Record>, ChainError> {
    let mut current = Head::default();
    let mut records = Vec::new();
    let mut hashes = Vec::new();
    for (i, line) in lines.into_iter().enumerate() {
        let n = i + 1;
        let r: Record = serde_json::from_str(line).map_err(|_| ChainError::Malformed(n))?;
        if r.prev != current.hash || r.seq != current.seq + 1 {
            return Err(ChainError::Broken(n));
        }
        current = Head {
            seq: r.seq,
            hash: line_hash(line),
        };
        hashes.push(current.hash.clone());
        records.push(r);
    }
    if let Some(h) = head {
        if h.seq > current.seq {
            return Err(ChainError::Truncated {
                found: current.seq,
                expected: h.seq,
            });
        }
        // The head names a record of the log (or the empty log): that record is intact...
        let named = usize::try_from(h.seq).unwrap_or(usize::MAX);
        let hash = match named.checked_sub(1) {
            Some(i) => hashes.get(i).map(String::as_str),
            None => Some(GENESIS),
        };
        if hash != Some(h.hash.as_str()) {
            return Err(ChainError::HeadMismatch(named));
        }
        // ...and only reads and refusals follow it.
        if let Some(i) = records
            .iter()
            .enumerate()
            .skip(named)
            .find_map(|(i, r)| (!may_follow_head(r)).then_some(i))
        {
            return Err(ChainError::ChangePastHead(i + 1));
        }
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fold_keys_fold_untrusted_repeats_by_code_and_never_roots_or_commands() {
        let agent = Some(CallerClass::Agent);
        assert_eq!(
            fold_key(Some(CallerClass::Admin), Some(0), "status", "ok", false),
            None
        );
        assert_eq!(
            fold_key(agent, Some(7), "run-command", "error:Refused: x", true),
            None
        );
        // By code, not message: a new message (or name in it) buys no new record.
        let a = fold_key(
            agent,
            Some(7),
            "grant",
            "error:Refused: grant of alice",
            true,
        );
        let b = fold_key(agent, Some(7), "grant", "error:Refused: grant of bob", true);
        assert_eq!(a.as_deref(), Some("agent 7 grant error:Refused"));
        assert_eq!(a, b);
        assert_eq!(
            fold_key(agent, Some(7), "status", "ok", false).as_deref(),
            Some("agent 7 status ok")
        );
        // A change that did something is written; the idempotent ones fold.
        assert_eq!(
            fold_key(agent, Some(7), "recovery-commit", "ok", true),
            None
        );
        assert!(fold_key(agent, Some(7), "recovery-begin", "ok", true).is_some());
        assert!(fold_key(agent, Some(7), "verify", "ok", true).is_some());
        assert_eq!(fold_key(agent, Some(7), "recovery-show", "ok", true), None);
        assert_eq!(
            fold_key(None, None, "connect", "error:refused: too many", false).as_deref(),
            Some("refused 4294967295 connect error:refused")
        );
    }

    #[test]
    fn an_answers_result_names_a_commands_id_or_the_errors_code() {
        use crate::ipc::ErrorCode;
        assert_eq!(result_of(&Response::Ok(Reply::Queued)), "ok");
        let e = Response::Error {
            code: ErrorCode::Refused,
            message: "no".into(),
        };
        assert_eq!(result_of(&e), "error:Refused: no");
    }

    fn rec(op: &str, user: Option<&str>) -> Record {
        Record {
            time: "2026-11-22T10:00:00Z".into(),
            volume: Some("root".into()),
            user: user.map(Into::into),
            ..Record::new("admin", 0, 42, op, "ok")
        }
    }

    fn log(n: usize) -> (Vec<String>, Head) {
        let mut head = Head::default();
        let mut lines = Vec::new();
        for i in 0..n {
            let (line, h) = rec("grant", Some(&format!("u{i}"))).chain(&head);
            lines.push(line);
            head = h;
        }
        (lines, head)
    }

    #[test]
    fn intact_log_verifies() {
        let (lines, head) = log(5);
        let r = verify(lines.iter().map(String::as_str), Some(&head)).expect("intact");
        assert_eq!(r.len(), 5);
    }

    #[test]
    fn tampering_names_the_first_bad_line() {
        let (lines, head) = log(5);
        let check = |l: &[String]| verify(l.iter().map(String::as_str), Some(&head));
        let mut changed = lines.clone();
        changed[1] = changed[1].replace("u1", "u9");
        assert_eq!(check(&changed), Err(ChainError::Broken(3)));
        let mut removed = lines.clone();
        removed.remove(2);
        assert_eq!(check(&removed), Err(ChainError::Broken(3)));
        let mut swapped = lines.clone();
        swapped.swap(1, 2);
        assert_eq!(check(&swapped), Err(ChainError::Broken(2)));
        let truncated = lines[..4].to_vec();
        assert!(matches!(
            check(&truncated),
            Err(ChainError::Truncated {
                found: 4,
                expected: 5
            })
        ));
        let mut last = lines.clone();
        last[4] = last[4].replace("u4", "u8");
        assert_eq!(check(&last), Err(ChainError::HeadMismatch(5)));
        let mut garbage = lines;
        garbage[0] = "not json".into();
        assert_eq!(check(&garbage), Err(ChainError::Malformed(1)));
    }

    #[test]
    fn reads_and_refusals_may_follow_the_durable_head_changes_may_not() {
        let (mut lines, head) = log(3);
        let mut current = head.clone();
        for (op, result, caller) in [
            ("status", "ok", "admin"),
            ("bootstrap", "error:Refused: agent may not", "agent"),
            ("frame", "ok", "refused"),
        ] {
            let mut r = rec(op, None);
            r.result = result.into();
            r.caller = caller.into();
            let (line, h) = r.chain(&current);
            lines.push(line);
            current = h;
        }
        let check = |l: &[String], h: &Head| verify(l.iter().map(String::as_str), Some(h));
        assert_eq!(check(&lines, &head).map(|r| r.len()), Ok(6));
        assert_eq!(check(&lines, &current).map(|r| r.len()), Ok(6));
        let (change, _) = rec("revoke", Some("u1")).chain(&current);
        lines.push(change);
        assert_eq!(check(&lines, &head), Err(ChainError::ChangePastHead(7)));
        // An empty head before any record: only reads may follow it either.
        assert_eq!(
            check(&lines, &Head::default()),
            Err(ChainError::ChangePastHead(1))
        );
    }

    #[test]
    fn repeated_reads_fold_into_one_record_a_minute() {
        let mut f = Fold::default();
        assert_eq!(f.admit("agent status data ok", 1000), Some(0));
        for t in 1001..1060 {
            assert_eq!(f.admit("agent status data ok", t), None, "{t}");
        }
        assert_eq!(f.admit("agent status other ok", 1001), Some(0));
        assert_eq!(f.admit("agent status data ok", 1060), Some(59));
        assert_eq!(f.admit("agent status data ok", 1061), None);
        for k in 0..Fold::MAX_KEYS + 10 {
            assert_eq!(f.admit(&format!("k{k}"), 2000), Some(0));
        }
        assert!(f.windows.len() <= Fold::MAX_KEYS);
    }

    #[test]
    fn control_characters_are_escaped() {
        let (line, _) = rec("grant", Some("a\nb\u{1b}[2J")).chain(&Head::default());
        assert!(!line.contains('\n') && !line.contains('\u{1b}'));
    }
}
