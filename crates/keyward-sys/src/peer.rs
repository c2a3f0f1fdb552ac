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

/// Read the peer credentials of a connected stream.
pub fn credentials(stream: &UnixStream) -> std::io::Result<Peer> {
    let cred = rustix::net::sockopt::socket_peercred(stream)?;
    let uid = Uid::new(cred.uid.as_raw())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()))?;
    Ok(Peer {
        uid,
        gid: cred.gid.as_raw(),
        pid: cred.pid.as_raw_nonzero().get(),
    })
}
