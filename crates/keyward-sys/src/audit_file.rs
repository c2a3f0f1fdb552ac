//! The audit log on disk: hash-chained JSON lines (format in `keyward_core::audit`), appended
//! and fsynced before the helper answers, with the chain head kept in the helper's root-only
//! state directory and every line mirrored to syslog (facility authpriv).

use std::io::Write;
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

/// Read the recorded head (root-only state), if any.
pub fn read_head(state_dir: &Path) -> std::io::Result<Option<Head>> {
    let raw = safe_fs::read_checked(&state_dir.join(HEAD_FILE), Expect::private(0), 4096)?;
    Ok(raw.and_then(|b| serde_json::from_slice(&b).ok()))
}

impl AuditLog {
    /// Open (or create, 0640) the log at `path`; the head lives in `state_dir`. If the log and
    /// the recorded head disagree, the first record appended says so, so the evidence survives.
    pub fn open(
        path: &Path,
        state_dir: &Path,
        reader_gid: u32,
    ) -> std::io::Result<(Self, Option<String>)> {
        let expect = Expect {
            uid: 0,
            forbidden_mode: 0o137,
        };
        let file = safe_fs::open_append(path, expect, 0o640)?;
        // root:adm 0640: log readers may read it; nobody but root may write it.
        let gid = rustix::fs::Gid::from_raw(reader_gid);
        rustix::fs::fchown(&file, Some(rustix::fs::Uid::ROOT), Some(gid))?;
        let text = std::fs::read_to_string(path)?;
        let found = match text.lines().last() {
            Some(last) => {
                let seq = serde_json::from_str::<Record>(last)
                    .map(|r| r.seq)
                    .unwrap_or(0);
                Head {
                    seq,
                    hash: line_hash(last),
                }
            }
            None => Head::default(),
        };
        let recorded = read_head(state_dir)?;
        let discontinuity = match recorded {
            Some(h) if h != found => Some(format!(
                "audit log does not match its recorded head (recorded {} records, found {})",
                h.seq, found.seq
            )),
            _ => None,
        };
        let syslog = UnixDatagram::unbound()
            .ok()
            .filter(|s| s.connect("/dev/log").is_ok());
        let log = AuditLog {
            file,
            head_dir: state_dir.to_owned(),
            head: found,
            syslog,
        };
        Ok((log, discontinuity))
    }

    /// Append one record durably; returns once it is on disk.
    pub fn append(&mut self, record: Record) -> std::io::Result<()> {
        let (line, head) = record.chain(&self.head);
        let mut bytes = line.clone().into_bytes();
        bytes.push(b'\n');
        self.file.write_all(&bytes)?;
        self.file.sync_data()?;
        let head_json = serde_json::to_vec(&head)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        safe_fs::write_atomic(&self.head_dir, HEAD_FILE, &head_json, 0o600)?;
        self.head = head;
        if let Some(s) = &self.syslog {
            // authpriv.info; best effort — the file is the record of truth.
            let msg = format!("<86>keyward-helper[{}]: {line}", std::process::id());
            let _ = s.send(msg.as_bytes());
        }
        Ok(())
    }
}

/// The current time as RFC 3339 (seconds).
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}
