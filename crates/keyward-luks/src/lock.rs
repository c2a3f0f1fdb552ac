//! The per-volume advisory lock. libcryptsetup locks image files by `flock` on the file itself,
//! so keyward must not lock that file too (a second open file description in the same process
//! would deadlock against it); it locks a separate file the caller names, created 0600 with
//! `O_NOFOLLOW` so a planted symlink cannot redirect it.

use std::fs::File;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use keyward_core::StoreError;

/// Held while one composite operation runs; released on drop (the kernel releases it if the
/// process dies, so a crash never leaves a volume locked).
#[derive(Debug)]
pub struct VolumeLock {
    _file: File,
}

impl VolumeLock {
    /// Block until the lock at `path` is ours.
    pub fn acquire(path: &Path) -> Result<Self, StoreError> {
        let err = |e: std::io::Error| {
            StoreError::Backend(format!("lock {}: {e}", crate::probe::shown(path)))
        };
        let file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(path)
            .map_err(err)?;
        let meta = file.metadata().map_err(err)?;
        if !meta.file_type().is_file() || meta.nlink() != 1 || meta.uid() != current_euid() {
            return Err(StoreError::Backend(format!(
                "lock {} is not a regular file owned by this user",
                crate::probe::shown(path)
            )));
        }
        file.lock().map_err(err)?;
        Ok(VolumeLock { _file: file })
    }
}

fn current_euid() -> u32 {
    // SAFETY: geteuid(2) takes no arguments, cannot fail and touches no memory of ours.
    unsafe { libc::geteuid() }
}
