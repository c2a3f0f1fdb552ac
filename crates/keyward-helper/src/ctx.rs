//! What every connection and job shares: the root-owned configuration, the audit log, and the
//! PAM events queued per user with the verification memory of the slots they opened. Data and
//! its locks only; what a job does is `ops::jobs`, what a connection does is `server`.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use keyward_core::audit::Fold;
use keyward_core::config::Config;
use keyward_core::{Secret, SlotId, Uid, UserName, VolumeName};
use keyward_sys::audit_file::AuditLog;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

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

/// One PAM event.
#[derive(Debug)]
pub enum Job {
    /// A login with this password.
    Login(Secret),
    /// A password change to `new`.
    Change {
        /// The new password.
        new: Secret,
    },
}

/// Who handed the event over (the PAM module's process), for the audit record. The request
/// itself is not audited on arrival: the job writes one record with its outcome, so a login
/// costs the PAM stack no fsync.
pub type Caller = keyward_sys::peer::Peer;

/// A user's queue: at most one event waiting behind the running one.
#[derive(Debug, Default)]
pub struct Pending {
    /// A worker runs for this user.
    pub running: bool,
    /// The next event.
    pub next: Option<(Job, Option<Caller>)>,
    /// Events folded into `next` since the last record.
    pub folded: u32,
}

/// The queue and the verification memory.
#[derive(Debug)]
pub struct Jobs {
    /// Per user.
    pub queue: Mutex<HashMap<UserName, Pending>>,
    verified: Mutex<HashMap<(VolumeName, SlotId), [u8; 32]>>,
    key: Secret,
}

/// The digest's input: the key, the password's length and the password, zero-padded to whole
/// 64-byte blocks (SHA-256's), in one wiped buffer allocated at its final size up front (a
/// growing buffer would leave copies behind in freed memory).
fn digest_input(key: &[u8], password: &[u8]) -> Zeroizing<Vec<u8>> {
    let whole_blocks = (key.len() + 8 + password.len()).div_ceil(64) * 64;
    let mut input = Zeroizing::new(Vec::with_capacity(whole_blocks));
    input.extend_from_slice(key);
    input.extend_from_slice(&(password.len() as u64).to_be_bytes());
    input.extend_from_slice(password);
    input.resize(whole_blocks, 0);
    input
}

/// A poisoned lock still guards consistent data here (every update is one insert or remove).
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Jobs {
    /// An empty queue with a fresh digest key.
    pub fn new() -> Result<Self, String> {
        let key = keyward_sys::random::service_secret().map_err(|e| e.to_string())?;
        Ok(Jobs {
            queue: Mutex::default(),
            verified: Mutex::default(),
            key,
        })
    }

    /// The keyed digest of `password`, computed over [`digest_input`] only: sha2 does not wipe
    /// its block buffer, and given whole blocks from its start it compresses them in place and
    /// copies none of them into it, so the one copy of the password here is the wiped one.
    fn digest(&self, password: &Secret) -> [u8; 32] {
        Sha256::digest(digest_input(self.key.expose(), password.expose())).into()
    }

    /// `password` opened `slot` on `v` just now.
    pub fn remember(&self, v: &VolumeName, slot: SlotId, password: &Secret) {
        let d = self.digest(password);
        lock(&self.verified).insert((v.clone(), slot), d);
    }

    /// Did `password` open `slot` on `v` last time?
    pub fn recently_verified(&self, v: &VolumeName, slot: SlotId, password: &Secret) -> bool {
        let d = self.digest(password);
        lock(&self.verified)
            .get(&(v.clone(), slot))
            .is_some_and(|known| known == &d)
    }

    /// `slot` on `v` is gone or changed.
    pub fn forget(&self, v: &VolumeName, slot: SlotId) {
        lock(&self.verified).remove(&(v.clone(), slot));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hasher is handed whole blocks only, from a buffer that was never regrown; and the
    /// length before the password keeps two passwords that differ only in trailing NULs apart.
    #[test]
    fn the_digest_input_is_whole_blocks_in_one_allocation() {
        let key = [7u8; 32];
        for len in [0, 1, 23, 24, 25, 55, 64, 100, 1000] {
            let pw = vec![b'p'; len];
            let input = digest_input(&key, &pw);
            assert_eq!(input.len() % 64, 0, "password of {len} bytes");
            assert_eq!(input.capacity(), input.len(), "password of {len} bytes");
        }
        assert_ne!(*digest_input(&key, b"pw"), *digest_input(&key, b"pw\0"));
    }
}
