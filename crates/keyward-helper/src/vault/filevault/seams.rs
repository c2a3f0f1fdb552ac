//! The Mac the helper talks to: Apple's tools and the System keychain on macOS, the simulated
//! Mac in a `simulated-mac` test build (kept in the state directory: `simulated`). The module
//! is not compiled anywhere else (`vault/mod.rs`). Every operation holds one lock.

use std::sync::{Mutex, PoisonError};

use keyward_core::config::Config;
use keyward_macos::MacError;

#[cfg(target_os = "macos")]
mod imp {
    use super::*;

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

#[cfg(all(not(target_os = "macos"), feature = "simulated-mac"))]
mod imp {
    use super::super::simulated;
    use super::*;

    pub type Runner = simulated::SimMac;
    pub type Keys = simulated::SimKeychain;

    /// The simulated Mac and its keychain, read from the state directory the first time the
    /// helper touches them (the typical Mac if there is none yet: an admin holding a token, a
    /// user without one, FileVault on), and saved there after every change.
    static SIM: Mutex<Option<(Runner, Keys)>> = Mutex::new(None);

    pub fn with<T>(c: &Config, f: impl FnOnce(&mut Runner, &mut Keys) -> T) -> Result<T, MacError> {
        let mut sim = SIM.lock().unwrap_or_else(PoisonError::into_inner);
        let (mac, keys) = match &mut *sim {
            Some(loaded) => loaded,
            none => {
                let owner = crate::ctx::state_owner(c).0;
                none.insert(simulated::load(&c.state_dir, owner)?)
            }
        };
        let out = f(mac, keys);
        // The simulation records every call for its own tests; a long-lived helper drops them.
        mac.calls.clear();
        Ok(out)
    }
}

pub use imp::{with, Keys, Runner};
