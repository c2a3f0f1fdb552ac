//! Who is on the other end of a Unix socket, as the kernel recorded it at `connect(2)`.

use std::os::unix::net::UnixStream;

use keyward_core::Uid;

/// The peer's credentials (`SO_PEERCRED`): effective ids and pid at connect time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    /// Effective uid.
    pub uid: Uid,
    /// Effective gid.
    pub gid: u32,
    /// Process id (for the audit trail only; never used to derive identity).
    pub pid: i32,
}

fn uid(raw: u32) -> std::io::Result<Uid> {
    Uid::new(raw).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()))
}

/// Read the peer credentials of a connected stream.
#[cfg(target_os = "linux")]
pub fn credentials(stream: &UnixStream) -> std::io::Result<Peer> {
    let cred = rustix::net::sockopt::socket_peercred(stream)?;
    Ok(Peer {
        uid: uid(cred.uid.as_raw())?,
        gid: cred.gid.as_raw(),
        pid: cred.pid.as_raw_nonzero().get(),
    })
}

/// Read the peer credentials of a connected stream: `getpeereid` (the effective ids the kernel
/// recorded at `connect(2)`) and `LOCAL_PEERPID` for the audit trail.
#[cfg(target_os = "macos")]
pub fn credentials(stream: &UnixStream) -> std::io::Result<Peer> {
    let (u, g) = nix::unistd::getpeereid(stream)?;
    let pid = nix::sys::socket::getsockopt(stream, nix::sys::socket::sockopt::LocalPeerPid)?;
    Ok(Peer {
        uid: uid(u.as_raw())?,
        gid: g.as_raw(),
        pid,
    })
}

/// The peer's effective uid only: what a client asks of the server it connected to (the
/// kernel recorded the server's credentials when it called `listen(2)`). On macOS this is
/// `getpeereid` alone, without the pid lookup [`credentials`] adds.
#[cfg(target_os = "linux")]
pub fn effective_uid(stream: &UnixStream) -> std::io::Result<Uid> {
    credentials(stream).map(|p| p.uid)
}

/// The peer's effective uid only (`getpeereid`).
#[cfg(target_os = "macos")]
pub fn effective_uid(stream: &UnixStream) -> std::io::Result<Uid> {
    let (u, _) = nix::unistd::getpeereid(stream)?;
    uid(u.as_raw())
}
