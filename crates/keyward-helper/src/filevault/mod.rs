//! FileVault volumes (`kind = "filevault"` in `keyward.toml`): the catalog's operations for a
//! Mac, over keyward-macos's [`FileVaultStore`]. The orderings live in keyward-macos; this
//! module owns what the helper adds around them — one Mac at a time, the root-only registry
//! file, the service account's standing, the sealed pending recovery key, and the mapping of
//! the backend's errors onto the protocol's codes.
//!
//! The store's seams ([`seams`]) are Apple's tools and the System keychain on macOS; in a test
//! build with `simulated-mac`, keyward-macos's simulated Mac; anywhere else a FileVault volume
//! is refused with a clear error.

mod login;
mod ops;
mod recovery;
mod seams;

pub(crate) use login::login;
pub use ops::{
    bootstrap, grant, release, revoke, service_repair, service_rotate, settle, status, verify,
};
pub use recovery::{abort, begin, commit, escrow_begin, escrow_commit};

use keyward_core::config::{Config, Volume};
use keyward_core::{SlotId, StoreError};
use keyward_macos::keychain::{Keychain, KeychainItem};
use keyward_macos::names::{ShortName, VolumeOperand};
use keyward_macos::registry::FileJournal;
use keyward_macos::{FileVaultStore, MacConfig, MacError};

use crate::error::OpError;

/// The store the helper works on: the seams borrowed from the one Mac, the registry file.
pub(crate) type Store<'a> = FileVaultStore<&'a mut seams::Runner, FileJournal, &'a mut seams::Keys>;

/// keyward's record of the rights it manages on this Mac (root-only state, 0600).
fn registry_path(c: &Config) -> std::path::PathBuf {
    c.state_dir.join("macos-registry.json")
}

/// Run `f` on the Mac's store; one operation at a time (the helper is the registry's only
/// writer, and Apple's tools are not safe to interleave).
pub(crate) fn with_store<T>(
    c: &Config,
    v: &Volume,
    f: impl FnOnce(&mut Store<'_>) -> Result<T, OpError>,
) -> Result<T, OpError> {
    let account = v.service_account.as_ref().unwrap_or(&c.service_user);
    let service_user = ShortName::parse(account.as_str()).map_err(mac_failure)?;
    let operand = v
        .device
        .to_str()
        .ok_or_else(|| MacError::BadName(v.device.display().to_string()))
        .and_then(VolumeOperand::parse)
        .map_err(mac_failure)?;
    let config = MacConfig {
        service_user,
        volume: operand,
    };
    let journal = FileJournal::new(&registry_path(c));
    seams::with(|runner, keys| {
        let mut store = FileVaultStore::new(runner, journal, keys, config);
        f(&mut store)
    })
    .map_err(mac_failure)?
}

/// A backend error as the protocol says it: a refused password is `AuthenticationFailed`
/// (exit 3), what macOS or keyward's safety rules will not do is `Refused` (exit 4).
pub(crate) fn mac_failure(e: MacError) -> OpError {
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

/// Where the service account stands.
#[derive(Debug)]
pub(crate) enum Standing {
    /// It holds a token and the keychain's password unlocks the volume for it.
    Working(SlotId),
    /// It holds no token (bootstrap needed).
    Missing,
    /// It holds a token that the keychain's password does not unlock.
    Drift(SlotId),
}

/// Finish whatever a crash interrupted (reconcile, a half-done password rotation), then say
/// where the service account stands.
pub(crate) fn standing(s: &mut Store<'_>) -> Result<Standing, OpError> {
    s.reconcile_now().map_err(mac_failure)?;
    match s.settle_service_password() {
        // No token yet and no password stored: nothing to settle.
        Ok(_) | Err(MacError::NoServicePassword) => {}
        Err(e) => return Err(mac_failure(e)),
    }
    let service = s.config().service_user.clone();
    let (_, view) = s.view().map_err(mac_failure)?;
    let Some(slot) = view.slot_of(&service) else {
        return Ok(Standing::Missing);
    };
    let Some(password) = s
        .keychain_mut()
        .read(KeychainItem::ServiceCurrent)
        .map_err(mac_failure)?
    else {
        return Ok(Standing::Drift(slot));
    };
    if s.verify_in(&view, slot, &password).map_err(mac_failure)? {
        Ok(Standing::Working(slot))
    } else {
        Ok(Standing::Drift(slot))
    }
}

/// The working service slot and password, or an error that says what to do.
pub(crate) fn working(
    s: &mut Store<'_>,
    v: &Volume,
) -> Result<(SlotId, keyward_core::Secret), OpError> {
    match standing(s)? {
        Standing::Working(slot) => {
            let password = s
                .keychain_mut()
                .read(KeychainItem::ServiceCurrent)
                .map_err(mac_failure)?
                .ok_or_else(|| mac_failure(MacError::NoServicePassword))?;
            Ok((slot, password))
        }
        Standing::Missing => Err(OpError::Failed(format!(
            "{} holds no Secure Token on {}: run `keyward bootstrap {} --holder ADMIN`",
            s.config().service_user,
            v.name,
            v.name
        ))),
        Standing::Drift(slot) => Err(OpError::Failed(format!(
            "the keychain's service password does not unlock {} (slot {slot})",
            s.config().service_user
        ))),
    }
}
