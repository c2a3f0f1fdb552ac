//! The FileVault vault (`kind = "filevault"` in `keyward.toml`): the [`Vault`] of a Mac, over
//! keyward-macos's [`FileVaultStore`]. The orderings and the Mac's rules live in keyward-macos
//! (the service account's standing, a login's decision, the pending recovery key's fate, the
//! out-of-step record); this module owns what the helper adds around them — one Mac at a
//! time, where its root-only files are, the sealed pending recovery key, the crash points, the
//! user's standing by the helper's policy, and the mapping of the backend's errors onto the
//! helper's.
//!
//! Compiled only on macOS, or on Linux with the `simulated-mac` test feature, where the store's
//! seams ([`seams`]) are keyward-macos's simulated Mac.

mod login;
mod recovery;
mod seams;
#[cfg(all(not(target_os = "macos"), feature = "simulated-mac"))]
mod simulated;
mod steps;
#[cfg(all(test, feature = "simulated-mac", not(target_os = "macos")))]
mod tests;
mod vault;

use keyward_core::config::{Config, Volume};
use keyward_core::ipc::VolumeReport;
use keyward_core::StoreError;
use keyward_macos::out_of_step::OutOfStep;
use keyward_macos::{FileVaultStore, MacConfig, MacError};

use super::Vault;
use crate::error::OpError;
use steps::StepJournal;

/// The store the helper works on: the seams borrowed from the one Mac, the registry file.
pub(crate) type Store<'a> = FileVaultStore<&'a mut seams::Runner, StepJournal, &'a mut seams::Keys>;

/// A FileVault volume and its store.
pub struct MacVault<'c, 's, 'm> {
    c: &'c Config,
    v: &'c Volume,
    s: &'s mut Store<'m>,
}

/// The users whose last login found FileVault on an old password (root-only state, 0600).
fn out_of_step(c: &Config) -> OutOfStep {
    OutOfStep::new(&c.state_dir, crate::ctx::state_owner(c).0)
}

/// Run `f` on the Mac's store; one operation at a time (the helper is the registry's only
/// writer, and Apple's tools are not safe to interleave).
pub(crate) fn with_store<T>(
    c: &Config,
    v: &Volume,
    f: impl FnOnce(&mut Store<'_>) -> Result<T, OpError>,
) -> Result<T, OpError> {
    let (config, journal) = parts(c, v)?;
    seams::with(c, |runner, keys| {
        f(&mut FileVaultStore::new(runner, journal, keys, config))
    })?
}

/// What `v` names on the Mac (the service account, the volume), and keyward's record of the
/// rights it manages there (root-only state, 0600).
fn parts(c: &Config, v: &Volume) -> Result<(MacConfig, StepJournal), MacError> {
    let account = v.service_account.as_ref().unwrap_or(&c.service_user);
    let registry = c.state_dir.join("macos-registry.json");
    let journal = StepJournal::new(&registry, crate::ctx::state_owner(c).0);
    Ok((MacConfig::parse(account.as_str(), &v.device)?, journal))
}

/// Run `f` on the Mac's vault.
pub fn with_vault<T>(
    c: &Config,
    v: &Volume,
    f: impl FnOnce(&mut dyn Vault) -> Result<T, OpError>,
) -> Result<T, OpError> {
    with_store(c, v, |s| f(&mut MacVault { c, v, s }))
}

/// `keyward status`: the same report as for a LUKS2 volume.
pub fn status(c: &Config, v: &Volume) -> VolumeReport {
    with_store(c, v, |s| Ok(s.report(v.name.as_str())))
        .unwrap_or_else(|e| VolumeReport::failed(v.name.as_str(), e.to_string()))
}

/// A backend error as the helper says it: a refused password is `AuthenticationFailed`
/// (exit 3), what macOS or keyward's safety rules will not do is `Refused` (exit 4).
impl From<MacError> for OpError {
    fn from(e: MacError) -> Self {
        let refused = matches!(
            e,
            MacError::WouldStrand
                | MacError::NeedsOwnPassword(_)
                | MacError::Unsupported(_)
                | MacError::AccountConflict(_)
        );
        if refused {
            return OpError::Refused(e.to_string());
        }
        let message = e.to_string();
        OpError::Store(StoreError::from(e)).reworded(|_| message)
    }
}
