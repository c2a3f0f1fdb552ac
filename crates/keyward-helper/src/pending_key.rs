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

/// The stored escrow record (JSON), if any.
pub fn load_escrow(c: &Config, v: &VolumeName) -> Result<Option<Vec<u8>>, OpError> {
    let path = dir(c).join(format!("{v}.escrow"));
    safe_fs::read_checked(&path, safe_fs::Expect::private(state_owner(c).0), 1 << 20).map_err(io)
}

/// Store the escrow record (JSON).
pub fn store_escrow(c: &Config, v: &VolumeName, json: &[u8]) -> Result<(), OpError> {
    safe_fs::write_atomic(&dir(c), &format!("{v}.escrow"), json, 0o600).map_err(io)
}
