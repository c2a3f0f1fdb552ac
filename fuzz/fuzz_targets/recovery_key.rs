//! A recovery key as an admin might type it (see `keyward_core::fuzz_entry`).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| keyward_core::fuzz_entry::recovery_key(data));
