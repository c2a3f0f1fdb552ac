//! An in-memory [`Host`] for tests (feature `fake`): the stored secrets in fields, numbered
//! secrets instead of random ones, a settable clock, and a trace of every step passed. It can
//! stop at any named step, as a crash would.

use std::time::{Duration, SystemTime};

use super::Host;
use crate::ids::SlotId;
use crate::secret::Secret;

/// Why the in-memory host failed: only ever a crash test's stop.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MemoryHostError {
    /// The step named was set to fail.
    #[error("stopped at step {0}")]
    Stopped(String),
}

/// The host's state: what a real one keeps at rest, and the test's knobs.
#[derive(Debug)]
pub struct MemoryHost {
    /// The current service secret.
    pub current: Option<Secret>,
    /// The next service secret.
    pub next: Option<Secret>,
    /// The sealed pending recovery key.
    pub pending: Option<Secret>,
    /// The clock.
    pub now: SystemTime,
    /// `[policy] pending_max_age_secs`.
    pub max_age: Duration,
    /// Every step passed, in order.
    pub trace: Vec<String>,
    /// The pending slots expired, in order.
    pub expired: Vec<SlotId>,
    made: u32,
    fail_at: Option<String>,
}

impl MemoryHost {
    /// Nothing stored; the clock at `now`, pending keys allowed a day.
    pub fn new(now: SystemTime) -> Self {
        MemoryHost {
            current: None,
            next: None,
            pending: None,
            now,
            max_age: Duration::from_secs(86_400),
            trace: Vec::new(),
            expired: Vec::new(),
            made: 0,
            fail_at: None,
        }
    }

    /// Make the next pass over step `name` fail.
    pub fn fail_at(&mut self, name: &str) {
        self.fail_at = Some(name.to_owned());
    }

    fn fresh(&mut self, kind: &str) -> Secret {
        self.made += 1;
        Secret::from_string(format!("{kind}-{}", self.made))
    }
}

impl Host for MemoryHost {
    type Error = MemoryHostError;

    fn service_secret(&mut self) -> Result<Option<Secret>, Self::Error> {
        Ok(self.current.as_ref().map(Secret::duplicate))
    }

    fn next_service_secret(&mut self) -> Result<Option<Secret>, Self::Error> {
        Ok(self.next.as_ref().map(Secret::duplicate))
    }

    fn store_next_service_secret(&mut self, secret: &Secret) -> Result<(), Self::Error> {
        self.next = Some(secret.duplicate());
        Ok(())
    }

    fn promote_next_service_secret(&mut self) -> Result<(), Self::Error> {
        if let Some(next) = self.next.take() {
            self.current = Some(next);
        }
        Ok(())
    }

    fn discard_next_service_secret(&mut self) -> Result<(), Self::Error> {
        self.next = None;
        Ok(())
    }

    fn forget_service_secret(&mut self) -> Result<(), Self::Error> {
        self.current = None;
        Ok(())
    }

    fn pending_key(&mut self) -> Result<Option<Secret>, Self::Error> {
        Ok(self.pending.as_ref().map(Secret::duplicate))
    }

    fn seal_pending_key(&mut self, key: &Secret) -> Result<(), Self::Error> {
        self.pending = Some(key.duplicate());
        Ok(())
    }

    fn drop_pending_key(&mut self) -> Result<(), Self::Error> {
        self.pending = None;
        Ok(())
    }

    fn new_service_secret(&mut self) -> Result<Secret, Self::Error> {
        Ok(self.fresh("service"))
    }

    fn new_recovery_key(&mut self) -> Result<Secret, Self::Error> {
        Ok(self.fresh("recovery"))
    }

    fn now(&self) -> SystemTime {
        self.now
    }

    fn pending_max_age(&self) -> Duration {
        self.max_age
    }

    fn expired(&mut self, slot: SlotId) {
        self.expired.push(slot);
    }

    fn failpoint(&mut self, name: &str) -> Result<(), Self::Error> {
        self.trace.push(name.to_owned());
        if self.fail_at.as_deref() == Some(name) {
            self.fail_at = None;
            return Err(MemoryHostError::Stopped(name.to_owned()));
        }
        Ok(())
    }
}
