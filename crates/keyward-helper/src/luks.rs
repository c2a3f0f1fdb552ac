//! LUKS2 volumes, the helper's default kind, through keyward-luks (libcryptsetup on Linux;
//! elsewhere keyward-luks's store is uninhabited and opening one is a clear error), and the
//! one thing about them that is the helper's own: which KDF floor this build judges them by.

use keyward_core::ipc::FindingReport;
use keyward_core::kdf::{KdfBuild, KdfPolicy};
use keyward_core::VolumeState;
pub use keyward_luks::{open, repair_interrupted_write, LuksStore};

/// Whether this build honours `[kdf] danger_fast_kdf`: only with the `test-kdf` feature (which
/// `failpoints` turns on). A shipped helper refuses the setting at start, and never lowers the
/// KDF floor whatever a config says.
pub const KDF_BUILD: KdfBuild = if cfg!(feature = "test-kdf") {
    KdfBuild::Test
} else {
    KdfBuild::Shipped
};

/// The `weak-kdf` and boot-budget findings of a LUKS2 volume in this build.
pub fn weak_kdfs(kdf: &KdfPolicy, state: &VolumeState) -> Vec<FindingReport> {
    keyward_luks::kdf_findings(kdf, KDF_BUILD, state)
}
