//! One frame of keyward's socket protocol (keyward-core's `ipc`: a u32 big-endian length, then
//! the payload) read from or written to a Unix stream, whole, before a deadline. Every keyward
//! process that speaks frames reads and writes them here — the helper client (CLI, agent, PAM
//! module, authorization plugin), the agent's control socket, the helper's server — so these
//! rules hold in one place:
//!
//! * A frame is read whole before a deadline the caller fixes when it starts waiting: each
//!   read may wait only for the time left, so a peer trickling a byte at a time cannot stretch
//!   a frame past it. Writes are bounded the same way.
//! * The length prefix is checked ([`ipc::frame_len`]) before the payload's buffer exists.
//! * Frames carry passwords: the payload is read into a [`Zeroizing`] buffer of exactly its
//!   length (never grown, so no reallocation leaves a copy in freed memory) and wiped when the
//!   caller has decoded it; the frame written is `ipc::encode_frame`'s zeroizing buffer.
//! * A write to a peer that has gone fails with an error instead of raising `SIGPIPE`: the PAM
//!   module and the authorization plugin run inside a login program that may not ignore it.
//!
//! No policy: the caller chooses the deadline and what each [`FrameFault`] means to it.

use std::io::Read;
use std::os::unix::net::UnixStream;
use std::time::Instant;

use keyward_core::ipc::{self, FrameError};
use serde::Serialize;
use zeroize::Zeroizing;

/// Why a frame was not read or written whole.
#[derive(Debug, thiserror::Error)]
pub enum FrameFault {
    /// The peer closed the connection before the first byte of a frame: a goodbye between
    /// frames, not an error for a server.
    #[error("the connection was closed")]
    Closed,
    /// The connection closed partway through a frame.
    #[error("the connection was closed in the middle of a frame")]
    Cut,
    /// The whole frame did not arrive (or could not be written) before the deadline.
    #[error("no whole frame within the time allowed")]
    TooSlow,
    /// A length prefix out of range (refused before anything is allocated for the payload), a
    /// payload that does not decode, or a message too large to send.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// Any other socket error.
    #[error("{0}")]
    Io(std::io::Error),
}

/// The time left before `deadline`, or [`FrameFault::TooSlow`] once it has passed.
fn left(deadline: Instant) -> Result<std::time::Duration, FrameFault> {
    let d = deadline.saturating_duration_since(Instant::now());
    if d.is_zero() {
        Err(FrameFault::TooSlow)
    } else {
        Ok(d)
    }
}

fn io_fault(e: std::io::Error) -> FrameFault {
    match e.kind() {
        // What a socket timeout reports (EAGAIN on Linux and macOS).
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => FrameFault::TooSlow,
        _ => FrameFault::Io(e),
    }
}

/// Fill `buf` before `deadline`. `at_frame_start`: a close before the first byte is
/// [`FrameFault::Closed`] rather than [`FrameFault::Cut`].
fn read_by(
    mut stream: &UnixStream,
    buf: &mut [u8],
    deadline: Instant,
    at_frame_start: bool,
) -> Result<(), FrameFault> {
    let mut got = 0;
    while got < buf.len() {
        stream
            .set_read_timeout(Some(left(deadline)?))
            .map_err(FrameFault::Io)?;
        match stream.read(&mut buf[got..]) {
            Ok(0) if at_frame_start && got == 0 => return Err(FrameFault::Closed),
            Ok(0) => return Err(FrameFault::Cut),
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io_fault(e)),
        }
    }
    Ok(())
}

/// Read one whole frame and return its payload, zeroized when dropped. The deadline covers the
/// whole frame, the wait for its first byte included.
pub fn read_frame(
    stream: &UnixStream,
    deadline: Instant,
) -> Result<Zeroizing<Vec<u8>>, FrameFault> {
    let mut prefix = [0u8; 4];
    read_by(stream, &mut prefix, deadline, true)?;
    let len = ipc::frame_len(prefix)?;
    let mut payload = Zeroizing::new(vec![0u8; len]);
    read_by(stream, &mut payload, deadline, false)?;
    Ok(payload)
}

/// Read one whole frame and decode it with `decode` (one of `ipc::decode_*`); the payload is
/// wiped before this returns.
pub fn read_message<T>(
    stream: &UnixStream,
    deadline: Instant,
    decode: fn(&[u8]) -> Result<T, FrameError>,
) -> Result<T, FrameFault> {
    let payload = read_frame(stream, deadline)?;
    Ok(decode(&payload)?)
}

/// Encode `msg` as one frame and write all of it before `deadline`. The encoded frame is
/// zeroized when dropped.
pub fn write_message<T: Serialize>(
    stream: &UnixStream,
    msg: &T,
    deadline: Instant,
) -> Result<(), FrameFault> {
    let frame = ipc::encode_frame(msg)?;
    write_all_by(stream, &frame, deadline)
}

/// Write all of `bytes` before `deadline`, never raising `SIGPIPE`.
fn write_all_by(stream: &UnixStream, bytes: &[u8], deadline: Instant) -> Result<(), FrameFault> {
    #[cfg(target_os = "linux")]
    let flags = rustix::net::SendFlags::NOSIGNAL;
    // No MSG_NOSIGNAL on macOS: the socket option does the same for every send on it.
    #[cfg(not(target_os = "linux"))]
    let flags = {
        rustix::net::sockopt::set_socket_nosigpipe(stream, true)
            .map_err(|e| FrameFault::Io(e.into()))?;
        rustix::net::SendFlags::empty()
    };
    let mut sent = 0;
    while sent < bytes.len() {
        stream
            .set_write_timeout(Some(left(deadline)?))
            .map_err(FrameFault::Io)?;
        match rustix::net::send(stream, &bytes[sent..], flags) {
            Ok(0) => return Err(FrameFault::Cut),
            Ok(n) => sent += n,
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(io_fault(e.into())),
        }
    }
    Ok(())
}

#[cfg(test)]
#[path = "frame_io_tests.rs"]
mod tests;
