//! The helper's one error type: why an operation did not succeed. Operations return it; only
//! the edge (`server.rs`) turns it into the wire's `Response`, and so into the CLI's exit code
//! ([`OpError::code`]). No I/O here.

use keyward_core::ipc::ErrorCode;
use keyward_core::{StoreError, VolumeName};

/// Why an operation failed. Every message is safe to show the caller: none holds a secret.
#[derive(Debug, thiserror::Error)]
pub enum OpError {
    /// The request names a volume the root-owned config does not have (exit 2).
    #[error("no volume named {0} in the configuration")]
    NoSuchVolume(VolumeName),
    /// The volume's backend refused or failed (its exit code follows the kind of failure).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A root-only state file (`what`) could not be read or written (exit 1).
    #[error("{what}: {source}")]
    Io {
        /// Which state: "service secret", "pending recovery key", …
        what: &'static str,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Malformed, or not possible as asked (exit 2).
    #[error("{0}")]
    Usage(String),
    /// A safety rule refused it; nothing changed (exit 4).
    #[error("{0}")]
    Refused(String),
    /// Anything else (exit 1).
    #[error("{0}")]
    Failed(String),
    /// A failure worded for its context, keeping the class (`code`) of the one it wraps.
    #[error("{message}")]
    Worded {
        /// The class of the failure it wraps.
        code: ErrorCode,
        /// The whole message.
        message: String,
    },
}

impl OpError {
    /// An I/O error on the root-only state named `what`.
    pub fn io(what: &'static str) -> impl Fn(std::io::Error) -> OpError + Copy {
        move |source| OpError::Io { what, source }
    }

    /// The protocol's error code, and so the CLI's exit code.
    pub fn code(&self) -> ErrorCode {
        match self {
            OpError::NoSuchVolume(_) | OpError::Usage(_) => ErrorCode::Usage,
            OpError::Store(e) => store_code(e),
            OpError::Io { .. } | OpError::Failed(_) => ErrorCode::Failed,
            OpError::Refused(_) => ErrorCode::Refused,
            OpError::Worded { code, .. } => *code,
        }
    }

    /// The same failure (same code), its message rewritten by `f`.
    #[must_use]
    pub fn reworded(self, f: impl FnOnce(String) -> String) -> OpError {
        OpError::Worded {
            code: self.code(),
            message: f(self.to_string()),
        }
    }
}

/// The code of a backend error: a wrong secret is exit 3, a safety rule exit 4, a busy volume
/// exit 6, anything else exit 1.
fn store_code(e: &StoreError) -> ErrorCode {
    match e {
        StoreError::AuthenticationFailed => ErrorCode::AuthenticationFailed,
        StoreError::Refused(_) => ErrorCode::Refused,
        StoreError::Busy => ErrorCode::Busy,
        _ => ErrorCode::Failed,
    }
}
