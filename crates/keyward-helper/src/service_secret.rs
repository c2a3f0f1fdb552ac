//! The service secret of each volume: the helper's only long-lived secret, stored root-only
//! (0600, written atomically) in `state_dir/service/<volume>`, with `<volume>.next` holding a
//! new secret until the slot it opens is committed.

use keyward_core::config::Config;
use keyward_core::{Secret, VolumeName};
use keyward_sys::safe_fs;

/// Who owns the helper's state files (uid, gid): root; a unit test's temporary state is
/// whoever runs the test.
pub fn state_owner(config: &Config) -> (u32, u32) {
    #[cfg(test)]
    if let Ok(meta) = std::fs::metadata(&config.state_dir) {
        use std::os::unix::fs::MetadataExt;
        return (meta.uid(), meta.gid());
    }
    let _ = config;
    (0, 0)
}

fn dir(config: &Config) -> std::path::PathBuf {
    config.state_dir.join("service")
}

/// The current secret, if one is stored.
pub fn load(config: &Config, v: &VolumeName) -> std::io::Result<Option<Secret>> {
    safe_fs::read_secret(&config.service_secret_path(v), state_owner(config).0)
}

/// A secret written by an interrupted bootstrap or rotation, if any.
pub fn load_next(config: &Config, v: &VolumeName) -> std::io::Result<Option<Secret>> {
    safe_fs::read_secret(
        &dir(config).join(format!("{v}.next")),
        state_owner(config).0,
    )
}

/// Store a new secret as `<volume>.next` (before its slot exists).
pub fn store_next(config: &Config, v: &VolumeName, s: &Secret) -> std::io::Result<()> {
    safe_fs::write_atomic(&dir(config), &format!("{v}.next"), s.expose(), 0o600)
}

/// Make `<volume>.next` the current secret (after its slot is committed).
pub fn promote_next(config: &Config, v: &VolumeName) -> std::io::Result<()> {
    safe_fs::rename_durable(&dir(config), &format!("{v}.next"), v.as_str())
}

/// Forget the current secret (its slot is gone).
pub fn forget(config: &Config, v: &VolumeName) -> std::io::Result<()> {
    match std::fs::remove_file(config.service_secret_path(v)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Drop `<volume>.next` (its slot was never made).
pub fn discard_next(config: &Config, v: &VolumeName) -> std::io::Result<()> {
    match std::fs::remove_file(dir(config).join(format!("{v}.next"))) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}
