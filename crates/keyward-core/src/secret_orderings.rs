//! The orderings of DESIGN.md section 5 that also keep a secret at rest: the service slot's
//! life ([`service`]: its secret written as `next` before the slot that needs it exists) and
//! the recovery slots' life ([`recovery`]: the pending key sealed before its slot exists).
//! They build on the slot orderings of [`crate::orderings`] through [`UnlockStore`], and get
//! everything else — the stored secrets, fresh randomness, the clock, the named step
//! boundaries a crash test stops at — from a [`Host`] (the helper's root-only state files in
//! production, [`memory::MemoryHost`] in tests), so they are property-tested here under a crash
//! at every step.
//!
//! [`UnlockStore`]: crate::store::UnlockStore

#[cfg(feature = "fake")]
pub mod memory;
pub mod recovery;
pub mod service;

use std::time::{Duration, SystemTime};

use crate::error::StoreError;
use crate::ids::{SlotId, VolumeName};
use crate::secret::Secret;

/// What the protocols need from outside the sans-IO core. Every write is durable when it
/// returns (the helper: written atomically and fsynced), so a crash after it keeps it.
pub trait Host {
    /// The host's own failures (the helper: its `OpError`, worded for the state involved).
    type Error;

    /// The current service secret, if one is stored.
    fn service_secret(&mut self) -> Result<Option<Secret>, Self::Error>;
    /// A new service secret stored by an unfinished bootstrap or rotation, if any.
    fn next_service_secret(&mut self) -> Result<Option<Secret>, Self::Error>;
    /// Store `secret` as the next service secret (before the slot it opens exists).
    fn store_next_service_secret(&mut self, secret: &Secret) -> Result<(), Self::Error>;
    /// Make the next service secret the current one, in one step.
    fn promote_next_service_secret(&mut self) -> Result<(), Self::Error>;
    /// Drop the next service secret (its slot never came to be); nothing if there is none.
    fn discard_next_service_secret(&mut self) -> Result<(), Self::Error>;
    /// Forget the current service secret (its slot is gone); nothing if there is none.
    fn forget_service_secret(&mut self) -> Result<(), Self::Error>;

    /// The sealed pending recovery key, if any.
    fn pending_key(&mut self) -> Result<Option<Secret>, Self::Error>;
    /// Seal `key` as the pending recovery key (before its slot exists).
    fn seal_pending_key(&mut self, key: &Secret) -> Result<(), Self::Error>;
    /// Forget the pending recovery key and whatever is kept beside it; nothing if there is none.
    fn drop_pending_key(&mut self) -> Result<(), Self::Error>;

    /// A fresh random service secret.
    fn new_service_secret(&mut self) -> Result<Secret, Self::Error>;
    /// A fresh random recovery key.
    fn new_recovery_key(&mut self) -> Result<Secret, Self::Error>;

    /// The time now (pending recovery keys expire).
    fn now(&self) -> SystemTime;
    /// How long a recovery key may stay pending (`[policy] pending_max_age_secs`).
    fn pending_max_age(&self) -> Duration;
    /// Told that the pending recovery slot `slot` was revoked for its age (the helper logs it).
    fn expired(&mut self, slot: SlotId);

    /// A named step boundary, as [`crate::orderings::SlotBackend::failpoint`]: the helper's
    /// crash tests stop the process here (`KEYWARD_FAILPOINT`); a shipped helper does nothing.
    fn failpoint(&mut self, name: &str) -> Result<(), Self::Error>;
}

pub use crate::store::ServiceStanding;

/// Why a protocol stopped. `E` is the [`Host`]'s error.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError<E> {
    /// The volume's store refused or failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The host failed (its state, its randomness, a crash test's stop).
    #[error("{0}")]
    Host(E),
    /// `service repair` of a service slot that works.
    #[error("service slot {0} works; nothing to repair (rotate it with `keyward service rotate`)")]
    NothingToRepair(SlotId),
    /// `service repair` of a volume that has no service slot.
    #[error("{0} has no service slot; run `keyward bootstrap {0}`")]
    NoServiceSlot(VolumeName),
    /// After a repair, settling did not find the new slot working.
    #[error("after repair the service slot is {0:?}; run `keyward verify`")]
    RepairUnsettled(ServiceStanding),
    /// Uninstall would leave no way in but keyward's (I1): nothing was removed.
    #[error("{0}: every way in is keyward's; removing them would lock the volume. Add another key (cryptsetup luksAddKey) first")]
    EveryWayInIsKeywards(VolumeName),
}

impl<E> ProtocolError<E> {
    /// Is this a refusal by a safety rule (nothing changed), not a failure?
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            ProtocolError::NothingToRepair(_)
                | ProtocolError::NoServiceSlot(_)
                | ProtocolError::EveryWayInIsKeywards(_)
        )
    }
}

/// A host failure as a protocol error (for `map_err`).
fn host<E>(e: E) -> ProtocolError<E> {
    ProtocolError::Host(e)
}
