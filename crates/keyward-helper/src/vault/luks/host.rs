//! What keyward-core's secret orderings (`keyward_core::secret_orderings`: the service slot's
//! and the recovery slots' life) get from the helper on a LUKS2 volume: the service secret,
//! stored root-only (0600, written atomically) in `state_dir/service/<volume>` with
//! `<volume>.next` holding a new one until the slot it opens is committed — the helper's only
//! long-lived secret —, the pending recovery key (`pending_key`) in root-only state, fresh
//! secrets from the kernel, the clock, the policy's pending age, and the crash tests'
//! failpoints at the protocols' named steps. Their errors become the helper's [`OpError`],
//! worded as before.

use std::time::{Duration, SystemTime};

use keyward_core::config::Config;
use keyward_core::secret_orderings::{Host, ProtocolError};
use keyward_core::{Secret, SlotId, VolumeName};

use keyward_sys::safe_fs;

use crate::ctx::state_owner;
use crate::error::OpError;
use crate::pending_key;
use keyward_sys::failpoint::failpoint;

fn io(source: std::io::Error) -> OpError {
    OpError::io("service secret")(source)
}

/// The helper's state of one LUKS2 volume, as the protocols see it.
pub struct LuksHost<'c> {
    c: &'c Config,
    name: &'c VolumeName,
    /// The service secrets' directory, and the next secret's file name in it.
    dir: std::path::PathBuf,
    next: String,
}

impl<'c> LuksHost<'c> {
    /// The state of volume `name` under `c`.
    pub fn new(c: &'c Config, name: &'c VolumeName) -> Self {
        let (dir, next) = (c.state_dir.join("service"), format!("{name}.next"));
        LuksHost { c, name, dir, next }
    }
}

impl Host for LuksHost<'_> {
    type Error = OpError;

    fn service_secret(&mut self) -> Result<Option<Secret>, OpError> {
        let path = self.c.service_secret_path(self.name);
        safe_fs::read_secret(&path, state_owner(self.c).0).map_err(io)
    }

    fn next_service_secret(&mut self) -> Result<Option<Secret>, OpError> {
        safe_fs::read_secret(&self.dir.join(&self.next), state_owner(self.c).0).map_err(io)
    }

    fn store_next_service_secret(&mut self, secret: &Secret) -> Result<(), OpError> {
        safe_fs::write_atomic(&self.dir, &self.next, secret.expose(), 0o600).map_err(io)
    }

    fn promote_next_service_secret(&mut self) -> Result<(), OpError> {
        safe_fs::rename_durable(&self.dir, &self.next, self.name.as_str()).map_err(io)
    }

    fn discard_next_service_secret(&mut self) -> Result<(), OpError> {
        safe_fs::remove_if_present(&self.dir.join(&self.next)).map_err(io)
    }

    fn forget_service_secret(&mut self) -> Result<(), OpError> {
        safe_fs::remove_if_present(&self.c.service_secret_path(self.name)).map_err(io)
    }

    fn pending_key(&mut self) -> Result<Option<Secret>, OpError> {
        pending_key::load(self.c, self.name)
    }

    fn seal_pending_key(&mut self, key: &Secret) -> Result<(), OpError> {
        // The protocol's step "recovery-begin.sealed" follows.
        pending_key::seal(self.c, self.name, key)
    }

    fn drop_pending_key(&mut self) -> Result<(), OpError> {
        pending_key::drop(self.c, self.name)
    }

    fn new_service_secret(&mut self) -> Result<Secret, OpError> {
        Ok(keyward_sys::random::service_secret()?)
    }

    fn new_recovery_key(&mut self) -> Result<Secret, OpError> {
        Ok(keyward_sys::random::recovery_key()?)
    }

    fn now(&self) -> SystemTime {
        SystemTime::now()
    }

    fn pending_max_age(&self) -> Duration {
        Duration::from_secs(self.c.policy.pending_max_age_secs)
    }

    fn expired(&mut self, slot: SlotId) {
        eprintln!(
            "keyward-helper: {}: pending recovery key in keyslot {slot} is older than {}s; revoked",
            self.name, self.c.policy.pending_max_age_secs
        );
    }

    fn failpoint(&mut self, name: &str) -> Result<(), OpError> {
        failpoint(name);
        Ok(())
    }
}

/// A protocol's error as the helper's: the store's and the helper's own as they were, a
/// refusal exit 4, anything else exit 1.
impl From<ProtocolError<OpError>> for OpError {
    fn from(e: ProtocolError<OpError>) -> Self {
        match e {
            ProtocolError::Store(e) => OpError::Store(e),
            ProtocolError::Host(e) => e,
            e if e.is_refusal() => OpError::Refused(e.to_string()),
            e => OpError::Failed(e.to_string()),
        }
    }
}
