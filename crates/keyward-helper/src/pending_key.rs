//! The pending recovery key of each volume, sealed root-only (0600, written atomically) in
//! `state_dir/pending/<volume>` from before its slot exists until its commit, and beside it
//! `<volume>.escrow`, what the escrow server is sent for it (ciphertext only). State only: the
//! rotation's protocol is `ops::recovery`'s, its LUKS2 slots' keyward-core's.

use keyward_core::config::Config;
use keyward_core::{Secret, VolumeName};
use keyward_sys::safe_fs;

use crate::ctx::state_owner;
use crate::error::OpError;

/// An I/O error on the pending key's state.
pub(crate) fn io(source: std::io::Error) -> OpError {
    OpError::io("pending recovery key")(source)
}

fn dir(c: &Config) -> std::path::PathBuf {
    c.state_dir.join("pending")
}

/// The sealed key, if any.
pub fn load(c: &Config, v: &VolumeName) -> Result<Option<Secret>, OpError> {
    safe_fs::read_secret(&dir(c).join(v.as_str()), state_owner(c).0).map_err(io)
}

/// Forget the key and its escrow record.
pub fn drop(c: &Config, v: &VolumeName) -> Result<(), OpError> {
    for name in [v.to_string(), format!("{v}.escrow")] {
        safe_fs::remove_if_present(&dir(c).join(name)).map_err(io)?;
    }
    Ok(())
}

/// Keep a pending key root-only until its commit. The caller names the step that follows
/// (`recovery-begin.sealed`: `keyward_core::secret_orderings::recovery`, the FileVault vault).
pub fn seal(c: &Config, v: &VolumeName, key: &Secret) -> Result<(), OpError> {
    let (uid, gid) = state_owner(c);
    safe_fs::ensure_dir(&dir(c), uid, gid, 0o700).map_err(io)?;
    safe_fs::write_atomic(&dir(c), v.as_str(), key.expose(), 0o600).map_err(io)
}

/// What the escrow server is sent for a pending key (ciphertext only), kept beside the key so
/// a repeated begin returns the same rotation.
#[derive(serde::Serialize, serde::Deserialize)]
pub(crate) struct EscrowRecord {
    pub(crate) rotation_id: String,
    pub(crate) ciphertext: Vec<u8>,
    pub(crate) sha256: String,
}

/// The stored escrow record, if any. One that does not parse counts as none: it is made again
/// (a fresh seal of the same key, under a new rotation id).
pub fn load_escrow(c: &Config, v: &VolumeName) -> Result<Option<EscrowRecord>, OpError> {
    let path = dir(c).join(format!("{v}.escrow"));
    match safe_fs::read_json(&path, safe_fs::Expect::private(state_owner(c).0), 1 << 20) {
        Err(e) if e.kind() == std::io::ErrorKind::InvalidData => Ok(None),
        read => read.map_err(io),
    }
}

/// Store the escrow record.
pub fn store_escrow(c: &Config, v: &VolumeName, record: &EscrowRecord) -> Result<(), OpError> {
    safe_fs::write_json(&dir(c), &format!("{v}.escrow"), record, 0o600).map_err(io)
}
