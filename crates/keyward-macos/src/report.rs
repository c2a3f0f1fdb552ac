//! `keyward status` for a FileVault volume: the same [`VolumeReport`] the helper builds for a
//! LUKS2 volume (keyward-helper's `ops::status`), field for field, so `keyward status --json`
//! has one shape on both platforms. Slots are keyward's numbers for holders (see `inventory`);
//! `kdf` is `secure-token` or `recovery-key`.

use keyward_core::ipc::VolumeReport;
use keyward_core::VolumeState;

use crate::keychain::Keychain;
use crate::registry::Journal;
use crate::runner::Runner;
use crate::store::FileVaultStore;

/// The report for a volume whose state was read (one function for both backends).
pub fn volume_report(volume: &str, state: &VolumeState) -> VolumeReport {
    VolumeReport::from_state(volume, state)
}

impl<R: Runner, J: Journal, K: Keychain> FileVaultStore<R, J, K> {
    /// The status report for this Mac's volume; a failure to read becomes the report's
    /// `error`, as on Linux.
    pub fn report(&mut self, volume: &str) -> VolumeReport {
        match self.view() {
            Ok((_, view)) => volume_report(volume, &view.state),
            Err(e) => VolumeReport::failed(volume, e.to_string()),
        }
    }
}
