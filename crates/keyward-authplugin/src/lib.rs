//! keyward-authplugin: the macOS counterpart of `pam_keyward.so`. Built as the executable of
//! `/Library/Security/SecurityAgentPlugins/keyward.bundle`, it provides one authorization
//! mechanism, `keyward:capture,privileged`, which runs in `system.login.console` right after
//! `builtin:authenticate,privileged` has accepted the login. It reads the user name and
//! password from the authorization context and hands them to the keyward helper over its
//! socket — the same `Request::LoginCapture` frame, the same budget and the same zeroizing
//! buffers as the PAM module (`keyward_sys::helper_client::send_login_capture`) — then tells
//! the engine "allow".
//!
//! It never blocks or fails a login: every outcome, including a panic, ends in "allow" within
//! the login-path budget.
//!
//! * [`engine`]: the seam — a small trait over the authorization engine, so the logic is tested
//!   on Linux with a fake engine.
//! * [`capture`]: the mechanism's logic, safe Rust.
//! * `macos_ffi` (macOS, and Linux test builds): the hand-written `#[repr(C)]` types of
//!   Security.framework's `AuthorizationPlugin.h`, the exported `AuthorizationPluginCreate`,
//!   and the adapter that implements [`engine::Engine`] over the engine's callbacks. The only
//!   module allowed `unsafe`.
#![deny(unsafe_code)]

pub mod capture;
pub mod engine;
#[cfg(any(target_os = "macos", test))]
#[allow(unsafe_code)]
pub mod macos_ffi;

/// The helper's socket on a Mac (`runtime_dir` `/var/run/keyward`, dist/macos/README.md).
pub const HELPER_SOCKET: &str = "/var/run/keyward/helper.sock";

/// The mechanism this plugin provides (`keyward:capture,privileged` in the right).
pub const CAPTURE_MECHANISM: &str = "capture";

/// The syslog ident of the plugin's lines.
pub const LOG_IDENT: &str = "keyward-authplugin";
