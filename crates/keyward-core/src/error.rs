//! keyward's typed errors. Messages quote caller-supplied strings through [`crate::quote`], so
//! an error can be logged without letting control characters or 4 KiB names through, and no
//! error ever carries a secret.

use thiserror::Error;

use crate::ids::{SlotId, TokenId};

/// Input that failed to parse into one of keyward's types.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum InputError {
    /// A keyslot number outside `0..32`.
    #[error("keyslot {0} is out of range (0..32)")]
    SlotOutOfRange(u32),
    /// A keyslot written in a non-canonical form.
    #[error("keyslot {0} is not a canonical decimal number")]
    BadSlot(String),
    /// A token number outside `0..32`.
    #[error("token {0} is out of range (0..32)")]
    TokenOutOfRange(u32),
    /// `(uid_t)-1`, which no user has.
    #[error("uid {0} is not a valid user id")]
    BadUid(u32),
    /// A volume name outside `[a-z0-9_-]{{1,32}}`.
    #[error(
        "volume name {0} is invalid: use 1-32 of a-z, 0-9, '_' and '-', not starting with '-'"
    )]
    BadVolumeName(String),
    /// A user name that shadow-utils would not create.
    #[error("user name {0} is invalid")]
    BadUserName(String),
    /// A recovery key that is not 64 modhex characters in 8 groups.
    #[error("recovery key is malformed: {0}")]
    BadRecoveryKey(&'static str),
}

/// Why a safety rule refused an operation (exit code 4 at the CLI).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum Refusal {
    /// The slot is not keyward's (invariant I2): keyward never changes it.
    #[error("keyslot {0} is not managed by keyward; keyward never modifies it")]
    Unmanaged(SlotId),
    /// Removing the slot would leave no committed unlock path (invariant I1).
    #[error("removing keyslot {0} would leave the volume with no other working unlock path")]
    WouldLockOut(SlotId),
    /// The holder already has an unlock right on this volume.
    #[error("this holder already has keyslot {0}")]
    AlreadyHolds(SlotId),
    /// Only a pending slot can be committed.
    #[error("keyslot {0} is not pending; there is nothing to commit")]
    NotPending(SlotId),
    /// The slot is in the middle of an unfinished operation; reconcile first.
    #[error("keyslot {0} is in the middle of another operation")]
    InTransition(SlotId),
}

/// Everything an [`crate::UnlockStore`] can fail with.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum StoreError {
    /// No slot accepted the secret offered as authority (exit code 3 at the CLI).
    #[error("authentication failed: the passphrase does not open any keyslot")]
    AuthenticationFailed,
    /// The service secret was offered, but the volume has no active service slot yet
    /// (bootstrap first).
    #[error("the volume has no service slot; run `keyward bootstrap` first")]
    NoServiceSlot,
    /// A safety rule refused the operation; nothing was changed.
    #[error("refused: {0}")]
    Refused(Refusal),
    /// The slot does not exist.
    #[error("keyslot {0} does not exist")]
    NoSuchSlot(SlotId),
    /// All 32 keyslots are in use.
    #[error("the keyslot table is full (32 slots)")]
    NoFreeSlot,
    /// The LUKS2 token area (32 tokens or the JSON area) is full.
    #[error("the LUKS2 token area is full")]
    TokenAreaFull,
    /// Another writer holds the volume, and retries ran out (exit code 6).
    #[error("the volume is busy: another process is updating its header")]
    Busy,
    /// The device is not LUKS at all.
    #[error("{0} is not a LUKS device")]
    NotLuks(String),
    /// The device is LUKS, but not a version keyward manages.
    #[error("{device} is {found}; keyward manages LUKS2 only (convert with `cryptsetup convert --type luks2`)")]
    UnsupportedFormat {
        /// The device, quoted.
        device: String,
        /// What was found, e.g. "LUKS1".
        found: &'static str,
    },
    /// The LUKS2 header could not be read; keyward never writes to such a header.
    #[error("the LUKS2 header of {0} is corrupt or truncated; it was not modified")]
    CorruptHeader(String),
    /// A check of I1–I3 failed after an operation. This is a bug; the report says which.
    #[error("invariant violated after the operation: {0}")]
    InvariantViolated(String),
    /// A step failed at a named failpoint (tests only).
    #[error("failpoint {0} fired")]
    Failpoint(&'static str),
    /// Token `{0}` is not a keyward token.
    #[error("token {0} is not a keyward token")]
    NotKeywardToken(TokenId),
    /// Any other error from the backend, already quoted and free of secrets.
    #[error("{0}")]
    Backend(String),
}

impl From<Refusal> for StoreError {
    fn from(r: Refusal) -> Self {
        StoreError::Refused(r)
    }
}
