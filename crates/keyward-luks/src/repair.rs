//! After a crash: a header write that libcryptsetup had begun — it writes the two header
//! copies one after the other — can leave them apart. keyward refuses such a header at every
//! load (`probe`), because libcryptsetup would otherwise rewrite it silently. The helper calls
//! [`repair_interrupted_write`] at start-up instead, which restores it out loud, and only in
//! the one case a torn write explains: one copy whole (and the newer), the other damaged or a
//! write behind. Anything worse stays refused, for an admin and `cryptsetup repair`.

use std::path::Path;

use keyward_core::StoreError;
use libcryptsetup_rs::consts::vals::EncryptionFormat;
use libcryptsetup_rs::CryptInit;

use crate::lock::VolumeLock;
use crate::probe::{self, shown, Damage};

/// Restore a header a write left apart, under the volume lock, from its intact newer copy (as
/// `cryptsetup repair` would), and say what was done; `Ok(None)` when both copies are whole.
pub fn repair_interrupted_write(
    device: &Path,
    lock_path: &Path,
) -> Result<Option<String>, StoreError> {
    let _lock = VolumeLock::acquire(lock_path)?;
    let (why, from, seqid) = match probe::damage(device)? {
        Damage::None => return Ok(None),
        Damage::Interrupted { why, from, seqid } => (why, from, seqid),
        Damage::Unrecoverable(why) => {
            return Err(StoreError::CorruptHeader(format!(
                "{} ({why})",
                shown(device)
            )))
        }
    };
    let failed = |what: &str, e: &dyn std::fmt::Display| {
        StoreError::CorruptHeader(format!("{} ({why}; {what} failed: {e})", shown(device)))
    };
    let mut dev = CryptInit::init(device).map_err(|e| failed("opening it", &e))?;
    dev.context_handle()
        .repair::<()>(EncryptionFormat::Luks2, None)
        .map_err(|e| failed("the repair", &e))?;
    match probe::damage(device)? {
        Damage::None => Ok(Some(format!(
            "{}: {why}, as a write interrupted by a crash leaves it; restored from the {from} copy (sequence {seqid})",
            shown(device)
        ))),
        _ => Err(failed("the repair", &"the copies still differ")),
    }
}
