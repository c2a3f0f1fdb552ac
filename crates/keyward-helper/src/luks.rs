//! LUKS2 volumes, the helper's default kind: keyward-luks (libcryptsetup) on Linux. Elsewhere
//! (a Mac) there is no LUKS2 and no libcryptsetup, so the store type is uninhabited and opening
//! one is a clear error; the rest of the helper compiles unchanged.

use std::path::Path;

use keyward_core::ipc::FindingReport;
use keyward_core::kdf::{KdfBuild, KdfPolicy};
use keyward_core::{StoreError, VolumeState};

/// Whether this build honours `[kdf] danger_fast_kdf`: only with the `test-kdf` feature (which
/// `failpoints` turns on). A shipped helper refuses the setting at start, and never lowers the
/// KDF floor whatever a config says.
pub const KDF_BUILD: KdfBuild = if cfg!(feature = "test-kdf") {
    KdfBuild::Test
} else {
    KdfBuild::Shipped
};

/// The `weak-kdf` findings of a LUKS2 volume: passphrase slots below the floor of `kdf` in this
/// build; and a `[kdf] boot_budget_ms` the floor cannot meet (`boot-budget-impossible`).
pub fn weak_kdfs(kdf: &KdfPolicy, state: &VolumeState) -> Vec<FindingReport> {
    let found = FindingReport::weak_kdfs(state, kdf.passphrase_floor(KDF_BUILD));
    #[cfg(target_os = "linux")]
    let found = [found, keyward_luks::budget_findings(kdf, state)].concat();
    found
}

#[cfg(target_os = "linux")]
pub use keyward_luks::LuksStore;

/// Open a LUKS2 volume, holding its per-volume lock.
#[cfg(target_os = "linux")]
pub fn open(device: &Path, lock_path: &Path, kdf: KdfPolicy) -> Result<LuksStore, StoreError> {
    keyward_luks::open(device, lock_path, kdf)
}

/// Restore a header a crash left with its two copies apart (see keyward-luks).
#[cfg(target_os = "linux")]
pub fn repair_interrupted_write(
    device: &Path,
    lock_path: &Path,
) -> Result<Option<String>, StoreError> {
    keyward_luks::repair_interrupted_write(device, lock_path)
}

/// No LUKS2 header to repair on this platform.
#[cfg(not(target_os = "linux"))]
pub fn repair_interrupted_write(_: &Path, _: &Path) -> Result<Option<String>, StoreError> {
    Ok(None)
}

/// No LUKS2 store can exist on this platform.
#[cfg(not(target_os = "linux"))]
#[derive(Debug)]
pub enum LuksStore {}

/// LUKS2 volumes need Linux.
#[cfg(not(target_os = "linux"))]
pub fn open(_device: &Path, _lock_path: &Path, _kdf: KdfPolicy) -> Result<LuksStore, StoreError> {
    Err(StoreError::Backend(
        "a kind = \"luks2\" volume needs Linux (libcryptsetup)".into(),
    ))
}

#[cfg(not(target_os = "linux"))]
impl keyward_core::UnlockStore for LuksStore {
    fn state(&mut self) -> Result<VolumeState, StoreError> {
        match *self {}
    }
    fn grant(
        &mut self,
        _: &keyward_core::store::GrantRequest,
        _: keyward_core::Authority<'_>,
        _: &keyward_core::Secret,
    ) -> Result<keyward_core::SlotId, StoreError> {
        match *self {}
    }
    fn rekey(
        &mut self,
        _: keyward_core::SlotId,
        _: keyward_core::Authority<'_>,
        _: &keyward_core::Secret,
    ) -> Result<keyward_core::SlotId, StoreError> {
        match *self {}
    }
    fn revoke(&mut self, _: keyward_core::SlotId) -> Result<(), StoreError> {
        match *self {}
    }
    fn commit(
        &mut self,
        _: keyward_core::SlotId,
        _: Option<keyward_core::token::EscrowRef>,
    ) -> Result<(), StoreError> {
        match *self {}
    }
    fn verify(
        &mut self,
        _: keyward_core::SlotId,
        _: &keyward_core::Secret,
    ) -> Result<bool, StoreError> {
        match *self {}
    }
    fn reconcile(&mut self) -> Result<Vec<keyward_core::store::ReconcileAction>, StoreError> {
        match *self {}
    }
}
