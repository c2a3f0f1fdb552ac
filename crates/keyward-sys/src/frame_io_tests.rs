//! Frame I/O over real socket pairs: frames trickled a byte at a time, cut, oversized, late.
#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::time::Duration;

use keyward_core::ipc::{Request, WireSecret};
use keyward_core::{Secret, UserName};

use super::*;

fn login_capture() -> Request {
    Request::LoginCapture {
        user: UserName::parse("alice").unwrap(),
        password: WireSecret::from_secret(&Secret::copy_from(b"correct horse battery")),
    }
}

/// Write `bytes` one at a time, `gap` apart, then keep the socket open for `linger`.
fn trickle(mut peer: UnixStream, bytes: Vec<u8>, gap: Duration, linger: Duration) {
    std::thread::spawn(move || {
        for b in bytes {
            if peer.write_all(&[b]).is_err() {
                return;
            }
            std::thread::sleep(gap);
        }
        std::thread::sleep(linger);
    });
}

#[test]
fn a_frame_trickled_a_byte_at_a_time_is_read_whole() {
    let (ours, theirs) = UnixStream::pair().unwrap();
    let frame = ipc::encode_frame(&login_capture()).unwrap();
    trickle(
        theirs,
        frame.to_vec(),
        Duration::from_millis(1),
        Duration::ZERO,
    );
    let got = read_message(
        &ours,
        Instant::now() + Duration::from_secs(10),
        ipc::decode_request,
    )
    .unwrap();
    assert_eq!(got, login_capture());
}

#[test]
fn a_trickling_peer_cannot_stretch_a_frame_past_the_deadline() {
    let (ours, theirs) = UnixStream::pair().unwrap();
    let frame = ipc::encode_frame(&login_capture()).unwrap();
    let (gap, allowed) = (Duration::from_millis(50), Duration::from_millis(300));
    // Each byte comes well within the deadline; the whole frame would take far longer.
    let whole = gap * u32::try_from(frame.len()).unwrap();
    assert!(whole > allowed * 4, "{whole:?}");
    trickle(theirs, frame.to_vec(), gap, Duration::from_secs(5));
    let started = Instant::now();
    let fault = read_frame(&ours, started + allowed).unwrap_err();
    let took = started.elapsed();
    assert!(matches!(fault, FrameFault::TooSlow), "{fault:?}");
    assert!(took >= allowed && took < whole, "{took:?}");
}

#[test]
fn a_silent_peer_costs_the_deadline_and_no_more() {
    let (ours, _theirs) = UnixStream::pair().unwrap();
    let started = Instant::now();
    let fault = read_frame(&ours, started + Duration::from_millis(200)).unwrap_err();
    assert!(matches!(fault, FrameFault::TooSlow), "{fault:?}");
    assert!(
        started.elapsed() < Duration::from_millis(700),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn a_close_between_frames_is_a_goodbye_and_a_close_inside_one_is_a_cut() {
    let deadline = || Instant::now() + Duration::from_secs(5);
    // Nothing sent.
    let (ours, theirs) = UnixStream::pair().unwrap();
    drop(theirs);
    assert!(matches!(
        read_frame(&ours, deadline()),
        Err(FrameFault::Closed)
    ));
    // Half a prefix.
    let (ours, mut theirs) = UnixStream::pair().unwrap();
    theirs.write_all(&[0, 0]).unwrap();
    drop(theirs);
    assert!(matches!(
        read_frame(&ours, deadline()),
        Err(FrameFault::Cut)
    ));
    // A whole prefix and half the payload.
    let (ours, mut theirs) = UnixStream::pair().unwrap();
    let frame = ipc::encode_frame(&login_capture()).unwrap();
    theirs.write_all(&frame[..frame.len() / 2]).unwrap();
    drop(theirs);
    assert!(matches!(
        read_frame(&ours, deadline()),
        Err(FrameFault::Cut)
    ));
}

#[test]
fn a_length_prefix_out_of_range_is_refused_without_waiting_for_a_payload() {
    for prefix in [[0u8, 1, 0, 1], [0xff; 4], [0; 4]] {
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        // The peer stays connected: a reader that went on to read a payload would wait out
        // the whole deadline.
        theirs.write_all(&prefix).unwrap();
        let started = Instant::now();
        let fault = read_frame(&ours, started + Duration::from_secs(5)).unwrap_err();
        assert!(
            matches!(fault, FrameFault::Frame(FrameError::BadLength(n)) if n == u32::from_be_bytes(prefix)),
            "{prefix:?}: {fault:?}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
        drop(theirs);
    }
}

#[test]
fn a_payload_that_does_not_decode_is_a_frame_fault() {
    let (ours, mut theirs) = UnixStream::pair().unwrap();
    theirs.write_all(&[0, 0, 0, 2, 0xff, 0xff]).unwrap();
    let fault = read_message(
        &ours,
        Instant::now() + Duration::from_secs(5),
        ipc::decode_request,
    )
    .unwrap_err();
    assert!(
        matches!(fault, FrameFault::Frame(FrameError::Malformed)),
        "{fault:?}"
    );
}

#[test]
fn a_written_frame_reads_back_as_the_same_message() {
    let (ours, theirs) = UnixStream::pair().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    write_message(&ours, &login_capture(), deadline).unwrap();
    write_message(&ours, &Request::Policy, deadline).unwrap();
    assert_eq!(
        read_message(&theirs, deadline, ipc::decode_request).unwrap(),
        login_capture()
    );
    assert_eq!(
        read_message(&theirs, deadline, ipc::decode_request).unwrap(),
        Request::Policy
    );
}

#[test]
fn writing_to_a_peer_that_has_gone_is_an_error() {
    let (ours, theirs) = UnixStream::pair().unwrap();
    drop(theirs);
    let fault = write_message(
        &ours,
        &login_capture(),
        Instant::now() + Duration::from_secs(5),
    )
    .unwrap_err();
    assert!(
        matches!(&fault, FrameFault::Io(e) if e.kind() == std::io::ErrorKind::BrokenPipe),
        "{fault:?}"
    );
}

/// Set in the child the next test starts: it is that child.
const SIGPIPE_CHILD: &str = "KEYWARD_FRAME_IO_SIGPIPE_CHILD";

/// A login program hosting the PAM module may leave `SIGPIPE` at its default, which kills the
/// process; Rust's runtime ignores it, so the write runs in a child of this test binary that
/// restores the default first. The child must exit normally, not by the signal.
#[test]
fn writing_to_a_peer_that_has_gone_raises_no_sigpipe() {
    if std::env::var_os(SIGPIPE_CHILD).is_some() {
        use nix::sys::signal::{signal, SigHandler, Signal};
        // SAFETY: SIG_DFL installs no handler, so no code runs in signal context; this child
        // process runs this one test only.
        unsafe { signal(Signal::SIGPIPE, SigHandler::SigDfl) }.unwrap();
        let (ours, theirs) = UnixStream::pair().unwrap();
        drop(theirs);
        let fault = write_message(
            &ours,
            &login_capture(),
            Instant::now() + Duration::from_secs(5),
        );
        assert!(fault.is_err(), "the write to a closed peer succeeded");
        return;
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "frame_io::tests::writing_to_a_peer_that_has_gone_raises_no_sigpipe",
            "--test-threads=1",
        ])
        .env(SIGPIPE_CHILD, "1")
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the child ended by {:?}: {said} {}",
        std::os::unix::process::ExitStatusExt::signal(&out.status),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains("1 passed"), "the child ran no test: {said}");
}
