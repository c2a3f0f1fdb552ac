//! `frame_io::read_frame` checks a frame's length prefix before it allocates the payload's
//! buffer: a peer cannot make a keyward process allocate more than `MAX_FRAME` bytes by
//! announcing a frame it never sends. Seen through a global allocator that records the largest
//! allocation, in a binary of its own so no other test allocates meanwhile.
#![allow(clippy::unwrap_used)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use keyward_core::ipc::{FrameError, MAX_FRAME};
use keyward_sys::frame_io::{read_frame, FrameFault};

static LARGEST: AtomicUsize = AtomicUsize::new(0);

struct RecordsLargest;

// SAFETY: every call is passed to the system allocator unchanged; recording a size in an
// atomic neither allocates nor touches the memory.
unsafe impl GlobalAlloc for RecordsLargest {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::SeqCst);
        // SAFETY: the caller upholds `alloc`'s contract, which is the system allocator's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::SeqCst);
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LARGEST.fetch_max(new_size, Ordering::SeqCst);
        // SAFETY: `ptr` came from this allocator, which is the system's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from this allocator, which is the system's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: RecordsLargest = RecordsLargest;

/// The largest allocation made while reading one frame announced by `prefix` (and never sent).
fn largest_allocation_reading(prefix: [u8; 4]) -> (usize, Result<usize, FrameFault>) {
    let (ours, mut theirs) = UnixStream::pair().unwrap();
    theirs.write_all(&prefix).unwrap();
    let deadline = Instant::now() + Duration::from_millis(100);
    LARGEST.store(0, Ordering::SeqCst);
    let got = read_frame(&ours, deadline).map(|p| p.len());
    (LARGEST.load(Ordering::SeqCst), got)
}

#[test]
fn a_length_over_the_limit_is_refused_before_the_payload_is_allocated() {
    let over = u32::try_from(MAX_FRAME + 1).unwrap();
    let (largest, got) = largest_allocation_reading(over.to_be_bytes());
    assert!(
        matches!(got, Err(FrameFault::Frame(FrameError::BadLength(n))) if n == over),
        "{got:?}"
    );
    assert!(largest <= MAX_FRAME, "{largest} bytes allocated");
    // The control: a frame at the limit, announced and never sent, is allocated (then the read
    // times out), so the recorder does see a payload buffer.
    let at = u32::try_from(MAX_FRAME).unwrap();
    let (largest, got) = largest_allocation_reading(at.to_be_bytes());
    assert!(matches!(got, Err(FrameFault::TooSlow)), "{got:?}");
    assert!(largest >= MAX_FRAME, "{largest} bytes allocated");
}
