//! A recovery key as an admin might type it.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = keyward_core::recovery_key::parse(data);
});
