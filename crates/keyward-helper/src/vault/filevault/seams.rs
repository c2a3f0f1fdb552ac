//! The Mac the helper talks to: Apple's tools and the System keychain on macOS, the simulated
//! Mac in a `simulated-mac` test build (kept in the state directory, and held as one Mac per
//! helper, by `simulated`). The module is not compiled anywhere else (`vault/mod.rs`). Every
//! operation holds one lock.

#[cfg(target_os = "macos")]
mod imp {
    use std::sync::{Mutex, PoisonError};

    use keyward_core::config::Config;
    use keyward_macos::MacError;

    pub type Runner = keyward_macos::process::ProcessRunner;
    pub type Keys = keyward_macos::keychain_macos::SystemKeychain;

    /// Longer than any of Apple's tools takes; a tool waiting at a prompt is killed.
    const DEADLINE: std::time::Duration = std::time::Duration::from_secs(120);

    static LOCK: Mutex<()> = Mutex::new(());

    pub fn with<T>(_: &Config, f: impl FnOnce(&mut Runner, &mut Keys) -> T) -> Result<T, MacError> {
        let _one_at_a_time = LOCK.lock().unwrap_or_else(PoisonError::into_inner);
        let mut keys = Keys::open()?;
        Ok(f(&mut Runner::new(DEADLINE), &mut keys))
    }
}

#[cfg(target_os = "macos")]
pub use imp::{with, Keys, Runner};

#[cfg(all(not(target_os = "macos"), feature = "simulated-mac"))]
pub use super::simulated::{with, SimKeychain as Keys, SimMac as Runner};
