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

// The plug-in's names, spelled once: the bundle's name (`keyward.bundle`, the part before
// `:` in the right), its executable, its identifier, the mechanism id the engine hands
// `MechanismCreate`, and the entry the authorizationdb edit (keyward-macos's `login_right`)
// writes are all built from these two literals. `concat!` takes only literals, hence macros.
macro_rules! plugin_name {
    () => {
        "keyward"
    };
}
macro_rules! capture_mechanism {
    () => {
        "capture"
    };
}

/// The plug-in's name: the bundle is `PLUGIN_NAME.bundle` in
/// `/Library/Security/SecurityAgentPlugins`, and the engine finds it by the part of a
/// mechanism entry before the `:`.
pub const PLUGIN_NAME: &str = plugin_name!();

/// The bundle's directory name.
pub const BUNDLE_DIR_NAME: &str = concat!(plugin_name!(), ".bundle");

/// The bundle's executable (`Contents/MacOS/…`, `CFBundleExecutable`): this crate's cdylib,
/// renamed.
pub const BUNDLE_EXECUTABLE: &str = plugin_name!();

/// `CFBundleIdentifier`.
pub const BUNDLE_IDENTIFIER: &str = concat!("org.", plugin_name!(), ".authplugin");

/// The mechanism this plugin provides (the id between `:` and `,` in the right).
pub const CAPTURE_MECHANISM: &str = capture_mechanism!();

/// The entry in `system.login.console`: this plug-in, its capture mechanism, run in the root
/// plug-in host (`privileged`).
pub const CAPTURE_RIGHT_ENTRY: &str =
    concat!(plugin_name!(), ":", capture_mechanism!(), ",privileged");

/// The syslog ident of the plugin's lines.
pub const LOG_IDENT: &str = "keyward-authplugin";
