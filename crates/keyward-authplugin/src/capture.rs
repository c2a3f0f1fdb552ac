//! The `keyward:capture` mechanism: read the user name and password `builtin:authenticate`
//! accepted, hand them to the helper, and allow — always. Safe Rust over [`Engine`]; the only
//! I/O is the one helper exchange, through the same client code and budget as the PAM module
//! (`keyward_sys::helper_client::send_login_capture`, `LOGIN_PATH_BUDGET`).
//!
//! What it may not do: deny or delay a login beyond the budget, send anything but the one
//! `LoginCapture` frame, or put the password anywhere but that frame (no log line, file, argv
//! or environment). A name keyward could not manage (`UserName`'s grammar) stops it before the
//! password is read.

use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

use keyward_core::{Secret, UserName};
use keyward_sys::helper_client;
use zeroize::Zeroizing;

use crate::engine::{ContextKey, Engine, EngineError};

/// Why nothing was sent. Never carries the password; never the user name either (a user who
/// typed their password into the name field must not find it in a log).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CaptureError {
    /// The context has no such value (a login that did not go through the password path:
    /// a smart card, an auto-login).
    #[error("no {0} in the authorization context")]
    Absent(&'static str),
    /// The engine failed to give the value.
    #[error("the engine did not give the {key}: {source}")]
    Engine {
        /// Which value.
        key: &'static str,
        /// What the engine said.
        #[source]
        source: EngineError,
    },
    /// The value is not a C string (a NUL inside it: some other type stored under the key).
    #[error("the {key} in the authorization context is not a string ({why})")]
    Malformed {
        /// Which value.
        key: &'static str,
        /// What is wrong with it.
        why: &'static str,
    },
    /// The name is not UTF-8 or not a name keyward manages (`UserName`'s grammar).
    #[error("the user name is not one keyward manages ({0})")]
    NotManaged(&'static str),
    /// An empty password: nothing a Secure Token could be granted with.
    #[error("the password is empty: nothing to send")]
    EmptyPassword,
    /// The helper was down, slow, or refused (its message; no secret is in it).
    #[error("the helper did not take the login: {0}")]
    Helper(String),
}

/// What happened to the login's password.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Captured {
    /// One `LoginCapture` was handed to the helper, which queued it.
    Sent,
    /// Nothing was handed over, for this reason.
    Skipped(CaptureError),
    /// The logic panicked; the panic was caught.
    Panicked,
}

/// Why telling the engine "allow" failed (the engine then decides; keyward did what it could).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AllowFailure {
    /// `SetResult` failed.
    Engine(EngineError),
    /// The engine adapter panicked; the panic was caught.
    Panicked,
}

/// The outcome of one invocation, for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// What happened to the password.
    pub captured: Captured,
    /// Whether "allow" reached the engine.
    pub allowed: Result<(), AllowFailure>,
}

impl Report {
    /// Syslog severity: 6 (info) when all went well, 5 (notice) when nothing was sent, 4
    /// (warning) after a panic or when "allow" did not reach the engine.
    pub fn severity(&self) -> u8 {
        match (&self.captured, &self.allowed) {
            (_, Err(_)) | (Captured::Panicked, _) => 4,
            (Captured::Skipped(_), Ok(())) => 5,
            (Captured::Sent, Ok(())) => 6,
        }
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.captured {
            Captured::Sent => f.write_str("login handed to the helper")?,
            Captured::Skipped(why) => write!(f, "nothing sent: {why}")?,
            Captured::Panicked => f.write_str("nothing sent after an internal error")?,
        }
        match &self.allowed {
            Ok(()) => f.write_str("; allowed"),
            Err(AllowFailure::Engine(e)) => write!(f, "; could not tell the engine to allow: {e}"),
            Err(AllowFailure::Panicked) => {
                f.write_str("; could not tell the engine to allow: internal error")
            }
        }
    }
}

/// Run the mechanism once: capture (every error and panic caught), then "allow" whatever
/// happened. Returns within the login-path budget plus the engine's own time.
pub fn invoke<E: Engine + ?Sized>(engine: &mut E, socket: &Path) -> Report {
    let captured = match catch_unwind(AssertUnwindSafe(|| capture(&*engine, socket))) {
        Ok(Ok(())) => Captured::Sent,
        Ok(Err(why)) => Captured::Skipped(why),
        Err(_) => Captured::Panicked,
    };
    let allowed = match catch_unwind(AssertUnwindSafe(|| engine.set_result_allow())) {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(AllowFailure::Engine(e)),
        Err(_) => Err(AllowFailure::Panicked),
    };
    Report { captured, allowed }
}

/// Read, check and send. The caller allows, whatever this returns.
fn capture<E: Engine + ?Sized>(engine: &E, socket: &Path) -> Result<(), CaptureError> {
    let name = string_value(engine, ContextKey::Username)?;
    // Parsed before the password is even read: nothing is built from an unchecked name.
    let text = std::str::from_utf8(&name).map_err(|_| CaptureError::NotManaged("not UTF-8"))?;
    let user = UserName::parse(text).map_err(|_| CaptureError::NotManaged("its grammar"))?;
    let mut password = string_value(engine, ContextKey::Password)?;
    if password.is_empty() {
        return Err(CaptureError::EmptyPassword);
    }
    // The buffer moves into the Secret (wiped on drop); the Zeroizing shell is left empty.
    let password = Secret::from_vec(std::mem::take(&mut *password));
    helper_client::send_login_capture(socket, user, &password)
        .map_err(|e| CaptureError::Helper(e.message))
}

/// A context value as the bytes of a C string.
fn string_value<E: Engine + ?Sized>(
    engine: &E,
    key: ContextKey,
) -> Result<Zeroizing<Vec<u8>>, CaptureError> {
    let value = engine
        .context_value(key)
        .map_err(|source| CaptureError::Engine {
            key: key.name(),
            source,
        })?
        .ok_or(CaptureError::Absent(key.name()))?;
    c_string_bytes(value).map_err(|why| CaptureError::Malformed {
        key: key.name(),
        why,
    })
}

/// SecurityAgent stores strings in the context with or without their terminating NUL: one
/// trailing NUL is dropped; a NUL anywhere else means the value is not a string.
pub fn c_string_bytes(mut value: Zeroizing<Vec<u8>>) -> Result<Zeroizing<Vec<u8>>, &'static str> {
    if value.last() == Some(&0) {
        value.pop();
    }
    if value.contains(&0) {
        return Err("a NUL inside the value");
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn z(b: &[u8]) -> Zeroizing<Vec<u8>> {
        Zeroizing::new(b.to_vec())
    }

    #[test]
    fn one_trailing_nul_is_dropped_and_an_inner_one_refused() {
        assert_eq!(
            c_string_bytes(z(b"alice\0")).as_deref().map(|v| &v[..]),
            Ok(&b"alice"[..])
        );
        assert_eq!(
            c_string_bytes(z(b"alice")).as_deref().map(|v| &v[..]),
            Ok(&b"alice"[..])
        );
        assert_eq!(
            c_string_bytes(z(b"\0")).as_deref().map(|v| &v[..]),
            Ok(&b""[..])
        );
        assert!(c_string_bytes(z(b"al\0ce")).is_err());
        assert!(c_string_bytes(z(b"alice\0\0")).is_err());
        assert!(c_string_bytes(z(&[0xf5, 0x01, 0, 0])).is_err());
    }

    #[test]
    fn the_report_never_names_the_user_or_the_password() {
        let r = Report {
            captured: Captured::Skipped(CaptureError::NotManaged("its grammar")),
            allowed: Ok(()),
        };
        assert_eq!(r.severity(), 5);
        assert_eq!(
            r.to_string(),
            "nothing sent: the user name is not one keyward manages (its grammar); allowed"
        );
    }
}
