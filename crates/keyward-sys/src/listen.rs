//! The helper's listening socket: taken from systemd socket activation, or bound at a path in
//! a directory keyward owns, with its mode set before anyone can connect.

use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::net::UnixListener;
use std::path::Path;

/// `LISTEN_FDS` from systemd, if it is meant for this process: exactly one socket, fd 3.
pub fn from_systemd() -> std::io::Result<Option<UnixListener>> {
    let pid_ok = std::env::var("LISTEN_PID")
        .ok()
        .and_then(|p| p.parse::<u32>().ok())
        .is_some_and(|p| p == std::process::id());
    let fds = std::env::var("LISTEN_FDS")
        .ok()
        .and_then(|n| n.parse::<u32>().ok());
    // SAFETY: remove_var is sound while no other thread reads the environment; this runs at
    // start-up, before the helper spawns any thread.
    unsafe {
        std::env::remove_var("LISTEN_PID");
        std::env::remove_var("LISTEN_FDS");
        std::env::remove_var("LISTEN_FDNAMES");
    }
    match (pid_ok, fds) {
        (true, Some(1)) => {}
        (true, Some(n)) => {
            return Err(std::io::Error::other(format!(
                "expected one socket from systemd, got {n}"
            )))
        }
        _ => return Ok(None),
    }
    // SAFETY: systemd passed fd 3 to this process (LISTEN_PID matched) and nothing else in the
    // process has claimed it; OwnedFd takes sole ownership.
    let fd = unsafe { OwnedFd::from_raw_fd(3) };
    let stat = rustix::fs::fstat(&fd)?;
    if rustix::fs::FileType::from_raw_mode(stat.st_mode) != rustix::fs::FileType::Socket {
        return Err(std::io::Error::other("fd 3 from systemd is not a socket"));
    }
    rustix::io::fcntl_setfd(&fd, rustix::io::FdFlags::CLOEXEC)?;
    Ok(Some(UnixListener::from(fd)))
}

/// Bind `path` with mode `0o660` and group `gid`. A stale socket owned by root is replaced;
/// anything else at the path is refused.
pub fn bind(path: &Path, gid: u32) -> std::io::Result<UnixListener> {
    let listener = bind_owner_only(path, 0)?;
    std::os::unix::fs::chown(path, Some(0), Some(gid))?;
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o660))?;
    Ok(listener)
}

/// Bind a socket only this user may connect to (0600, owned by the caller); root still can.
/// A stale socket of ours is replaced; anything else at the path is refused.
pub fn bind_private(path: &Path) -> std::io::Result<UnixListener> {
    bind_owner_only(path, crate::hardening::effective_uid())
}

/// Replace a stale socket owned by `owner` (refusing anything else at the path), then bind with
/// mode 0600: nobody else can connect before the caller widens the mode, if it does.
fn bind_owner_only(path: &Path, owner: u32) -> std::io::Result<UnixListener> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() && m.uid() == owner => std::fs::remove_file(path)?,
        Ok(_) => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                format!(
                    "{} exists and is not keyward's socket",
                    keyward_core::quote(&path.to_string_lossy())
                ),
            ))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let old = rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o177));
    let listener = UnixListener::bind(path);
    rustix::process::umask(old);
    listener
}
