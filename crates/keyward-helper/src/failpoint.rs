//! Crash points for the crash tests: a test build (`failpoints`) dies here, as a power cut
//! would, when `KEYWARD_FAILPOINT` names the step. A shipped build does nothing.

/// Die like a power loss if `KEYWARD_FAILPOINT` is `name` (test builds only).
pub fn failpoint(name: &str) {
    #[cfg(feature = "failpoints")]
    if std::env::var_os("KEYWARD_FAILPOINT").is_some_and(|v| v == name) {
        keyward_sys::hardening::die_like_power_loss();
    }
    let _ = name;
}
