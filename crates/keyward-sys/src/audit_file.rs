//! The audit log on disk: hash-chained JSON lines (format in `keyward_core::audit`), appended
//! and fsynced before the helper answers a change (reads: see `append_read`), with the chain
//! head kept in the helper's root-only
//! state directory and every line mirrored to syslog (facility authpriv).

use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};

use keyward_core::audit::{line_hash, Head, Record};

use crate::safe_fs::{self, Expect};

/// The open audit log.
#[derive(Debug)]
pub struct AuditLog {
    file: std::fs::File,
    head_dir: PathBuf,
    head: Head,
    syslog: Option<UnixDatagram>,
}

const HEAD_FILE: &str = "audit.head";

/// The log's advisory lock (`flock`), held by the helper while it writes a record and its
/// head, and shared by a reader while it reads the log and the head: a reader never sees a
/// change record whose head is not written yet, nor half a line. Released when dropped.
struct LogLock<'a>(&'a std::fs::File);

/// How long the helper waits for readers before it writes a record without the lock. Anyone
/// who may read the log (group `adm`) can take the lock: holding it must not stall the helper.
const WRITER_PATIENCE: std::time::Duration = std::time::Duration::from_secs(1);

/// After the writer has given up waiting once, it only tries the lock (no wait) for this long:
/// a reader that holds it on and on costs the helper one second a minute, not one a record.
const IMPATIENT_FOR: std::time::Duration = std::time::Duration::from_secs(60);

/// Until when the writer does not wait for the lock (set when it last gave up).
static IMPATIENT_UNTIL: std::sync::Mutex<Option<std::time::Instant>> = std::sync::Mutex::new(None);

impl<'a> LogLock<'a> {
    /// A reader's shared lock, waiting as long as a write takes.
    fn shared(file: &'a std::fs::File) -> std::io::Result<Self> {
        rustix::fs::flock(file, rustix::fs::FlockOperation::LockShared)?;
        Ok(LogLock(file))
    }

    /// The writer's exclusive lock, or None after [`WRITER_PATIENCE`] (the write goes ahead
    /// unlocked: a reader holding the lock that long is not keyward's).
    fn exclusive(file: &'a std::fs::File) -> Option<Self> {
        let now = std::time::Instant::now();
        let mut impatient = IMPATIENT_UNTIL
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let deadline = match *impatient {
            Some(until) if now < until => now,
            _ => now + WRITER_PATIENCE,
        };
        loop {
            match rustix::fs::flock(file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
                Ok(()) => return Some(LogLock(file)),
                Err(rustix::io::Errno::WOULDBLOCK | rustix::io::Errno::INTR)
                    if std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(2));
                }
                Err(e) => {
                    if impatient.is_none_or(|until| now >= until) {
                        eprintln!("keyward-helper: audit log: writing without the log's lock: {e}");
                    }
                    *impatient = Some(std::time::Instant::now() + IMPATIENT_FOR);
                    return None;
                }
            }
        }
    }
}

impl Drop for LogLock<'_> {
    fn drop(&mut self) {
        // Closing the file would release it too; an unlock that fails leaves nothing held.
        let _ = rustix::fs::flock(self.0, rustix::fs::FlockOperation::Unlock);
    }
}

/// The log (`path`, root's and not group- or world-writable, at most `limit` bytes) and its
/// recorded head, read together under the log's shared lock: what `keyward audit` checks.
/// No log yet: empty.
pub fn read_log_and_head(
    path: &Path,
    state_dir: &Path,
    limit: u64,
) -> std::io::Result<(Vec<u8>, Option<Head>)> {
    let expect = Expect {
        uid: 0,
        forbidden_mode: 0o022,
    };
    let file = match safe_fs::open_read(path, expect) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok((Vec::new(), read_head(state_dir)?))
        }
        Err(e) => return Err(e),
    };
    let _lock = LogLock::shared(&file)?;
    let mut bytes = Vec::new();
    (&file).take(limit + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{} is larger than {limit} bytes", path.display()),
        ));
    }
    Ok((bytes, read_head(state_dir)?))
}

/// Free space below which the helper refuses to change anything: a change it could not record
/// must not happen. Generous next to a record (~300 bytes), small next to any disk.
pub const RESERVED_BYTES: u64 = 1 << 20;

/// Read the recorded head (root-only state), if any.
pub fn read_head(state_dir: &Path) -> std::io::Result<Option<Head>> {
    let raw = safe_fs::read_checked(&state_dir.join(HEAD_FILE), Expect::private(0), 4096)?;
    Ok(raw.and_then(|b| serde_json::from_slice(&b).ok()))
}

/// What opening the log found and did, for the first records the helper appends: the evidence
/// of a crash or of tampering goes into the chain itself.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum OpenEvent {
    /// A crash cut the last record short; its bytes were moved aside and the log cut back to
    /// its last whole line.
    TornTail {
        /// How many bytes the partial line had.
        bytes: usize,
        /// Where they were saved (root:adm 0640, beside the log).
        saved: PathBuf,
    },
    /// The log and its recorded head disagree in a way no crash explains (records removed
    /// from the end, the log replaced or the head deleted).
    Discontinuity(String),
}

impl OpenEvent {
    /// The audit record's `op`.
    pub fn op(&self) -> &'static str {
        match self {
            OpenEvent::TornTail { .. } => "audit-repair",
            OpenEvent::Discontinuity(_) => "audit-discontinuity",
        }
    }

    /// The audit record's `result`.
    pub fn result(&self) -> String {
        match self {
            OpenEvent::TornTail { bytes, saved } => format!(
                "ok: repaired: the last record was cut short by a crash; its {bytes} bytes were moved to {}",
                keyward_core::quote(&saved.to_string_lossy())
            ),
            OpenEvent::Discontinuity(why) => format!("error:failed: {why}"),
        }
    }
}

/// Move a torn tail aside: a new file beside the log, never over an existing one.
fn save_torn(log: &Path, torn: &[u8], gid: u32) -> std::io::Result<PathBuf> {
    let secs = crate::clock::unix_secs();
    let name = log.file_name().map_or_else(
        || "audit.jsonl".into(),
        |n| n.to_string_lossy().into_owned(),
    );
    for n in 0..100u32 {
        let saved = log.with_file_name(format!("{name}.torn-{secs}-{n}"));
        let created = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o640)
            .custom_flags(
                (rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::CLOEXEC).bits() as i32,
            )
            .open(&saved);
        let mut f = match created {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        };
        rustix::fs::fchown(
            &f,
            Some(rustix::fs::Uid::ROOT),
            Some(rustix::fs::Gid::from_raw(gid)),
        )?;
        f.write_all(torn)?;
        f.sync_all()?;
        return Ok(saved);
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::AlreadyExists,
        "too many saved torn records",
    ))
}

/// The head of the log's whole lines, and the hash of line `n` (1-based) for each `n`.
fn scan(text: &str) -> (Head, Vec<String>) {
    let hashes: Vec<String> = text.lines().map(line_hash).collect();
    let head = match text.lines().last() {
        Some(last) => Head {
            seq: serde_json::from_str::<Record>(last).map_or(0, |r| r.seq),
            hash: line_hash(last),
        },
        None => Head::default(),
    };
    (head, hashes)
}

/// Whether every record in the log is one written without moving the head (a read or a
/// refusal, `keyward_core::audit::may_follow_head`).
fn only_reads(text: &str) -> bool {
    text.lines().all(|l| {
        serde_json::from_str::<Record>(l).is_ok_and(|r| keyward_core::audit::may_follow_head(&r))
    })
}

impl AuditLog {
    /// Open (or create, 0640) the log at `path`; the head lives in `state_dir`. A last line a
    /// crash cut short is moved aside and the log cut back to its last whole record; a
    /// recorded head one or more records behind the log (a crash after the record was written,
    /// before the head was) is caught up. Anything else that makes the log and the head
    /// disagree is reported, so the helper records it as the first thing it appends.
    pub fn open(
        path: &Path,
        state_dir: &Path,
        reader_gid: u32,
    ) -> std::io::Result<(Self, Vec<OpenEvent>)> {
        let expect = Expect {
            uid: 0,
            forbidden_mode: 0o137,
        };
        let mut file = safe_fs::open_append(path, expect, 0o640)?;
        // root:adm 0640: log readers may read it; nobody but root may write it.
        let gid = rustix::fs::Gid::from_raw(reader_gid);
        rustix::fs::fchown(&file, Some(rustix::fs::Uid::ROOT), Some(gid))?;
        // Held through the repairs below (a reader waits for them); released on return.
        let repairing = LogLock::exclusive(&file).map(std::mem::forget).is_some();
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        let mut events = Vec::new();
        let whole = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        if whole < bytes.len() {
            let saved = save_torn(path, &bytes[whole..], reader_gid)?;
            file.set_len(whole as u64)?;
            file.sync_all()?;
            events.push(OpenEvent::TornTail {
                bytes: bytes.len() - whole,
                saved,
            });
            bytes.truncate(whole);
        }
        let text = String::from_utf8_lossy(&bytes);
        let (found, hashes) = scan(&text);
        let recorded = read_head(state_dir)?;
        let behind = |h: &Head| {
            h.seq < found.seq
                && usize::try_from(h.seq)
                    .ok()
                    .and_then(|n| n.checked_sub(1))
                    .and_then(|i| hashes.get(i))
                    .is_some_and(|hash| *hash == h.hash)
        };
        let log = AuditLog {
            file,
            head_dir: state_dir.to_owned(),
            head: found.clone(),
            syslog: UnixDatagram::unbound()
                .ok()
                .filter(|s| s.connect("/dev/log").is_ok()),
        };
        match recorded {
            Some(h) if h == found => {}
            // The record reached the disk, the head did not: the chain proves the rest.
            Some(h) if behind(&h) => log.write_head()?,
            Some(h) => events.push(OpenEvent::Discontinuity(format!(
                "audit log does not match its recorded head (recorded {} records, found {})",
                h.seq, found.seq
            ))),
            // Only reads and refusals so far, none of them synced (a first start that crashed
            // before any change): nothing a head was ever written for.
            None if found.seq > 0 && only_reads(&text) => log.write_head()?,
            None if found.seq > 0 => events.push(OpenEvent::Discontinuity(format!(
                "the audit log has {} records but no recorded head",
                found.seq
            ))),
            None => {}
        }
        if repairing {
            rustix::fs::flock(&log.file, rustix::fs::FlockOperation::Unlock)?;
        }
        Ok((log, events))
    }

    fn write_head(&self) -> std::io::Result<()> {
        let head_json = serde_json::to_vec(&self.head)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        safe_fs::write_atomic(&self.head_dir, HEAD_FILE, &head_json, 0o600)
    }

    /// Is there room to record a change? The helper asks before every state-changing
    /// operation and refuses the change when there is not.
    pub fn room_for_change(&self) -> std::io::Result<()> {
        self.room(RESERVED_BYTES)
    }

    /// Is there room for a record of an untrusted caller's read or refusal? Only above twice
    /// the reserve: such records never eat into what is kept for changes.
    pub fn room_for_untrusted(&self) -> std::io::Result<()> {
        self.room(2 * RESERVED_BYTES)
    }

    fn room(&self, keep: u64) -> std::io::Result<()> {
        let full = |what: &str, st: rustix::fs::StatVfs| {
            let free = st.f_bavail.saturating_mul(st.f_frsize);
            if free < keep {
                Err(std::io::Error::new(
                    std::io::ErrorKind::StorageFull,
                    format!(
                        "the {what} has {} KiB free and keyward keeps {} KiB for its audit records",
                        free / 1024,
                        keep / 1024
                    ),
                ))
            } else {
                Ok(())
            }
        };
        full(
            "audit log's file system",
            rustix::fs::fstatvfs(self.file.as_fd())?,
        )?;
        full(
            "helper's state directory",
            rustix::fs::statvfs(&self.head_dir)?,
        )
    }

    /// Append one record durably; returns once it is on disk (with every record appended
    /// before it). A write that fails part-way (a full disk) is cut back off, so the log never
    /// holds a torn line while the helper runs.
    pub fn append(&mut self, record: Record) -> std::io::Result<()> {
        self.write_record(record, true)
    }

    /// Append the record of a read (a status, a refusal): written, chained, mirrored, but not
    /// fsynced, and the head file is not rewritten — a read changes nothing that a power loss
    /// could make disagree with its record. The next durable [`AuditLog::append`] makes it
    /// durable too. After a power loss such records are there, or cut at a line (the torn tail
    /// is repaired at start), or gone; the chain verifies in every case, and a head file behind
    /// the log is caught up at start. (Issue 18: three syncs per `keyward status` were most of
    /// its round trip.)
    pub fn append_read(&mut self, record: Record) -> std::io::Result<()> {
        self.write_record(record, false)
    }

    fn write_record(&mut self, mut record: Record, durable: bool) -> std::io::Result<()> {
        // Stamped here, as it is chained: the records' times follow the chain's order.
        record.time = crate::clock::now_rfc3339();
        let (line, head) = record.chain(&self.head);
        let mut bytes = line.clone().into_bytes();
        bytes.push(b'\n');
        let lock = LogLock::exclusive(&self.file);
        let before = self.file.metadata()?.len();
        let written = (&self.file).write_all(&bytes).and_then(|()| {
            if durable {
                self.file.sync_data()
            } else {
                Ok(())
            }
        });
        if let Err(e) = written {
            if let Err(undo) = self
                .file
                .set_len(before)
                .and_then(|()| self.file.sync_data())
            {
                eprintln!("keyward-helper: audit log: cannot cut back a failed record: {undo}");
            }
            return Err(e);
        }
        // The line is the record of truth: chain from it even if the head cannot be written
        // now (a head behind the log is caught up at the next start).
        self.head = head;
        if durable {
            if let Err(e) = self.write_head() {
                eprintln!("keyward-helper: audit log: recording the head: {e}");
            }
        }
        drop(lock);
        if let Some(s) = &self.syslog {
            // authpriv.info; best effort — the file is the record of truth.
            let msg = format!("<86>keyward-helper[{}]: {line}", std::process::id());
            let _ = s.send(msg.as_bytes());
        }
        Ok(())
    }
}
