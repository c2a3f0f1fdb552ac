//! The seam between the mechanism's logic and the authorization engine: [`Engine`], the two
//! things the mechanism asks of it. The real implementation is the callback adapter in
//! `macos_ffi`; tests use fakes. No I/O and no FFI here.

use std::ffi::CStr;

use zeroize::Zeroizing;

/// The largest context value the mechanism copies out of the engine. A user name or a password
/// is far shorter; anything longer is not what the mechanism is looking for.
pub const MAX_VALUE_LEN: usize = 4096;

/// The context keys the mechanism reads: the ones SecurityAgent's login mechanisms fill in
/// (`AuthorizationTags.h`: `kAuthorizationEnvironmentUsername`, `…Password`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ContextKey {
    /// `"username"`: the account's short name, as `builtin:authenticate` accepted it.
    Username,
    /// `"password"`: the password `builtin:authenticate` checked.
    Password,
}

impl ContextKey {
    /// The key's C name, as the engine's callbacks take it.
    pub fn c_name(self) -> &'static CStr {
        match self {
            ContextKey::Username => c"username",
            ContextKey::Password => c"password",
        }
    }

    /// The key's name, for messages.
    pub fn name(self) -> &'static str {
        match self {
            ContextKey::Username => "username",
            ContextKey::Password => "password",
        }
    }
}

/// What the engine failed with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// A callback answered a non-zero `OSStatus` (for a context value: usually "not set").
    #[error("{callback} answered OSStatus {status}")]
    Status {
        /// Which callback.
        callback: &'static str,
        /// What it answered.
        status: i32,
    },
    /// The engine did not provide a callback the mechanism needs.
    #[error("the authorization engine provides no {0} callback")]
    MissingCallback(&'static str),
    /// A value whose data pointer is null but whose length is not zero.
    #[error("the engine returned a value with no data and a length of {0}")]
    NullData(usize),
    /// A value longer than [`MAX_VALUE_LEN`].
    #[error("the engine returned a value of {0} bytes, more than the mechanism reads")]
    TooLong(usize),
}

/// The authorization engine, as one mechanism invocation sees it.
pub trait Engine {
    /// The context value `key`, copied into a buffer that is wiped on drop; `None` when the
    /// engine has no value for it.
    fn context_value(&self, key: ContextKey) -> Result<Option<Zeroizing<Vec<u8>>>, EngineError>;

    /// Tell the engine that, as far as this mechanism is concerned, the right is granted
    /// (`SetResult(kAuthorizationResultAllow)`).
    fn set_result_allow(&mut self) -> Result<(), EngineError>;
}
