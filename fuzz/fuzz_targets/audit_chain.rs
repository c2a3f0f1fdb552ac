//! An audit log file, split into lines as `keyward audit --verify` does.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = keyward_core::audit::verify(text.lines(), None);
    }
});
