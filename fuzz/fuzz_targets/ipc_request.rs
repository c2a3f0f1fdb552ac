//! A helper frame payload from an untrusted peer: request and response decoding, and the
//! length-prefix check on the first four bytes.
#![no_main]
use keyward_core::ipc;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Some(prefix) = data.first_chunk::<4>() {
        let _ = ipc::frame_len(*prefix);
    }
    let _ = ipc::decode_request(data);
    let _ = ipc::decode_response(data);
});
