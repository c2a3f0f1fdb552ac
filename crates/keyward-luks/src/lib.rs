//! keyward-luks: keyward's [`UnlockStore`](keyward_core::UnlockStore) on LUKS2 block devices
//! and image files. The only crate that links libcryptsetup. It owns the mapping from
//! keyward's slot primitives to libcryptsetup calls, the per-volume lock, and format detection;
//! the orderings themselves live in `keyward_core::orderings`.

mod backend;
pub mod header_cache;
mod kdf;
mod lock;
pub mod probe;
mod repair;

use std::path::Path;

pub use backend::LuksBackend;
pub use kdf::budget_findings;
use keyward_core::kdf::KdfPolicy;
use keyward_core::orderings::SlotStore;
use keyward_core::StoreError;
pub use repair::repair_interrupted_write;

/// A LUKS2 volume managed by keyward.
pub type LuksStore = SlotStore<LuksBackend>;

/// Open `device` (which must hold a loadable LUKS2 header), locking through `lock_path`.
pub fn open(device: &Path, lock_path: &Path, kdf: KdfPolicy) -> Result<LuksStore, StoreError> {
    Ok(SlotStore::new(LuksBackend::open(device, lock_path, kdf)?))
}
