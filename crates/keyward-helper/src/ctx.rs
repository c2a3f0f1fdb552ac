//! What every connection and job shares: the root-owned configuration, the audit log, and the
//! PAM events queued per user with the memory of which password last opened which slot
//! (`keyward_core::slot_memory`). Data and its locks only; what a job does is `ops::jobs`, what
//! a connection does is `server`.

use std::sync::{Mutex, MutexGuard, PoisonError};

use keyward_core::audit::Fold;
use keyward_core::config::Config;
use keyward_core::login_queue::LoginQueue;
use keyward_core::slot_memory::SlotMemory;
use keyward_core::Uid;
use keyward_sys::audit_file::AuditLog;

/// What every connection shares.
#[derive(Debug)]
pub struct Ctx {
    /// The root-owned configuration.
    pub config: Config,
    /// The service user: connections from it are the agent class.
    pub service_uid: Uid,
    /// The audit log (appends are serialized).
    pub audit: Mutex<AuditLog>,
    /// The agent's repeated reads, folded into one audit record a minute.
    pub fold: Mutex<Fold>,
    /// PAM events waiting or running.
    pub jobs: Jobs,
}

/// Who handed the event over (the PAM module's process), for the audit record. The request
/// itself is not audited on arrival: the job writes one record with its outcome, so a login
/// costs the PAM stack no fsync.
pub type Caller = keyward_sys::peer::Peer;

/// The queue and the verification memory.
#[derive(Debug)]
pub struct Jobs {
    /// Per user.
    pub queue: Mutex<LoginQueue<Caller>>,
    /// Which password last opened which slot (keyed digests, memory only).
    pub opened: Mutex<SlotMemory>,
}

/// A poisoned lock still guards consistent data here (every update is one insert or remove).
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Jobs {
    /// An empty queue, and a memory keyed by a fresh secret.
    pub fn new() -> Result<Self, String> {
        let key = keyward_sys::random::service_secret().map_err(|e| e.to_string())?;
        Ok(Jobs {
            queue: Mutex::default(),
            opened: Mutex::new(SlotMemory::new(key)),
        })
    }
}

/// Who owns the helper's root-only state files (uid, gid): root; a unit test's temporary state
/// is whoever runs the test.
pub fn state_owner(config: &Config) -> (u32, u32) {
    #[cfg(test)]
    if let Ok(meta) = std::fs::metadata(&config.state_dir) {
        use std::os::unix::fs::MetadataExt;
        return (meta.uid(), meta.gid());
    }
    let _ = config;
    (0, 0)
}
