//! The macOS backend's typed errors, and how each maps onto keyward's [`StoreError`] (and so
//! onto the CLI's exit codes). No variant carries a secret; excerpts of a tool's output are
//! quoted, cut short, and never taken from a command that was given a secret.

use keyward_core::{Refusal, SlotId, StoreError};

use crate::command::Purpose;
use crate::runner::RunError;

/// Everything the macOS backend can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MacError {
    /// A name, id or path that is not valid as an operand.
    #[error("invalid name or id {0}")]
    BadName(String),
    /// The command could not be run.
    #[error(transparent)]
    Run(#[from] RunError),
    /// The tool refused a password (`eDSAuthFailed`, fdesetup exit 11 "User could not be
    /// authenticated", diskutil's "passphrase is incorrect").
    #[error("{0:?}: authentication failed")]
    AuthenticationFailed(Purpose),
    /// sysadminctl: "Operation is not permitted without secure token unlock." — the account
    /// named as authority holds no Secure Token, or its password was wrong.
    #[error("{0:?}: not permitted without a Secure Token holder's unlock")]
    NeedsTokenUnlock(Purpose),
    /// The tool said it succeeded (or said nothing and exited 0), but the change is not there:
    /// "phantom success".
    #[error("{purpose:?} reported success, but {detail}")]
    PhantomSuccess {
        /// The command.
        purpose: Purpose,
        /// What was found instead.
        detail: String,
    },
    /// fdesetup exit 136, "Unable to change key".
    #[error("fdesetup could not change the recovery key")]
    UnableToChangeKey,
    /// A tool printed something keyward does not recognise; nothing is assumed.
    #[error("{purpose:?}: unrecognised output ({exit}){}", excerpt.as_deref().map(|e| format!(": {e}")).unwrap_or_default())]
    Unrecognized {
        /// The command.
        purpose: Purpose,
        /// How it exited.
        exit: String,
        /// A quoted, shortened excerpt of stderr, when the command had no secret stdin.
        excerpt: Option<String>,
    },
    /// FileVault is not on (recovery keys need it).
    #[error("FileVault is not on ({0})")]
    FileVaultNotOn(String),
    /// The account does not exist.
    #[error("no local account {0}")]
    NoSuchAccount(String),
    /// An account exists where keyward would create its own, and it is not keyward's.
    #[error("an account {0} exists and is not keyward's hidden service account")]
    AccountConflict(String),
    /// No free uid below 500 for the service account.
    #[error("no free uid in 401..=499 for the service account")]
    NoFreeServiceUid,
    /// A password that cannot reach the tool intact through its stdin form.
    #[error("the password contains {0}, which cannot be passed to the tool safely")]
    PasswordNotRepresentable(&'static str),
    /// The operation needs an account's own current password, which keyward does not keep
    /// (Apple: a token can be removed, or a password changed without breaking FileVault, only
    /// with it).
    #[error("{0}: macOS needs this account's current password for it")]
    NeedsOwnPassword(String),
    /// A rotated recovery key did not validate with `fdesetup validaterecovery`.
    #[error("the new recovery key did not validate; it was not recorded as usable")]
    RecoveryKeyNotValidated,
    /// The password was changed for login but FileVault still takes the old one (or neither):
    /// a torn change. `reverted` says whether the login password was put back.
    #[error("torn password change for {account}: FileVault does not take the new password{}", if *reverted { " (login password reverted)" } else { "" })]
    TornPasswordChange {
        /// The account.
        account: String,
        /// Whether keyward changed the password back.
        reverted: bool,
    },
    /// The service password is not in the keychain.
    #[error("the service account's password is not in the System keychain")]
    NoServicePassword,
    /// A safety rule refused the operation.
    #[error("refused: {0}")]
    Refused(Refusal),
    /// Deleting the service account would leave no other token holder and no escrowed
    /// recovery key.
    #[error("refusing to delete the service account: no other Secure Token holder and no escrowed recovery key would remain")]
    WouldStrand,
    /// Not something macOS can do the way the caller asked.
    #[error("not supported on macOS: {0}")]
    Unsupported(&'static str),
    /// The slot does not exist.
    #[error("keyslot {0} does not exist")]
    NoSuchSlot(SlotId),
    /// keyward's record of what it manages could not be read or written.
    #[error("keyward's macOS registry: {0}")]
    Registry(String),
    /// The record of users out of step with FileVault (`out_of_step`) could not be read or
    /// written.
    #[error("filevault-out-of-step.json: {0}")]
    OutOfStepRecord(String),
    /// The keychain failed.
    #[error("keychain: {0}")]
    Keychain(String),
    /// A property list could not be built or parsed.
    #[error("property list: {0}")]
    Plist(String),
    /// More holders than keyward's 32 slot numbers.
    #[error("more than 32 unlock rights on this volume")]
    TooManyHolders,
    /// The `system.login.console` right is not one keyward can edit.
    #[error("system.login.console: {0}")]
    LoginRight(#[from] crate::login_right::LoginRightError),
    /// `security authorizationdb write system.login.console` failed; `unchanged` says whether
    /// the right read back afterwards is the one that was there before (`None`: it could not
    /// be read back).
    #[error("security authorizationdb write system.login.console failed ({reason}); {}", match unchanged {
        Some(true) => "the right is unchanged",
        Some(false) => "the right no longer reads as it did before: check it with `security authorizationdb read system.login.console`",
        None => "it could not be read back to check it",
    })]
    LoginRightNotWritten {
        /// What `security` said.
        reason: String,
        /// Whether the right is as it was.
        unchanged: Option<bool>,
    },
    /// A check of I1–I3 failed after an operation.
    #[error("invariant violated after the operation: {0}")]
    InvariantViolated(String),
}

impl From<Refusal> for MacError {
    fn from(r: Refusal) -> Self {
        MacError::Refused(r)
    }
}

impl From<MacError> for StoreError {
    fn from(e: MacError) -> Self {
        match e {
            MacError::AuthenticationFailed(_) | MacError::NeedsTokenUnlock(_) => {
                StoreError::AuthenticationFailed
            }
            MacError::Refused(r) => StoreError::Refused(r),
            MacError::NoSuchSlot(s) => StoreError::NoSuchSlot(s),
            MacError::TooManyHolders => StoreError::NoFreeSlot,
            MacError::InvariantViolated(v) => StoreError::InvariantViolated(v),
            other => StoreError::Backend(other.to_string()),
        }
    }
}
