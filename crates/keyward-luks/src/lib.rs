//! keyward-luks: keyward's [`UnlockStore`](keyward_core::UnlockStore) on LUKS2 block devices
//! and image files. The only crate that links libcryptsetup. It owns the mapping from
//! keyward's slot primitives to libcryptsetup calls, the per-volume lock, and format detection;
//! the orderings themselves live in `keyward_core::orderings`.
//!
//! LUKS2 needs Linux (libcryptsetup). On any other system the crate still builds, so the helper
//! compiles unchanged on a Mac: its store is uninhabited and `open` says why (`elsewhere`).

#[cfg(target_os = "linux")]
mod backend;
#[cfg(not(target_os = "linux"))]
mod elsewhere;
pub mod header_cache;
#[cfg(target_os = "linux")]
mod kdf;
#[cfg(target_os = "linux")]
mod lock;
#[cfg(target_os = "linux")]
pub mod probe;
#[cfg(target_os = "linux")]
mod repair;

#[cfg(target_os = "linux")]
pub use backend::LuksBackend;
#[cfg(not(target_os = "linux"))]
pub use elsewhere::{budget_findings, open, repair_interrupted_write, LuksStore};
#[cfg(target_os = "linux")]
pub use kdf::budget_findings;
use keyward_core::ipc::FindingReport;
use keyward_core::kdf::{KdfBuild, KdfPolicy};
use keyward_core::VolumeState;
#[cfg(target_os = "linux")]
pub use repair::repair_interrupted_write;

/// A LUKS2 volume managed by keyward.
#[cfg(target_os = "linux")]
pub type LuksStore = keyward_core::orderings::SlotStore<LuksBackend>;

/// Open `device` (which must hold a loadable LUKS2 header), locking through `lock_path`.
#[cfg(target_os = "linux")]
pub fn open(
    device: &std::path::Path,
    lock_path: &std::path::Path,
    kdf: KdfPolicy,
) -> Result<LuksStore, keyward_core::StoreError> {
    Ok(keyward_core::orderings::SlotStore::new(LuksBackend::open(
        device, lock_path, kdf,
    )?))
}

/// The KDF findings of a LUKS2 volume (`status`, `verify`): passphrase slots below the floor
/// of `kdf` in a `build` of this kind, and a `[kdf] boot_budget_ms` the floor cannot meet
/// (`boot-budget-impossible`, from a libcryptsetup benchmark).
pub fn kdf_findings(kdf: &KdfPolicy, build: KdfBuild, state: &VolumeState) -> Vec<FindingReport> {
    let mut found = FindingReport::weak_kdfs(state, kdf.passphrase_floor(build));
    found.extend(budget_findings(kdf, state));
    found
}
