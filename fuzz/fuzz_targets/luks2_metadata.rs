//! LUKS2 header JSON or a token object (see `keyward_core::fuzz_entry`).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| keyward_core::fuzz_entry::luks2_metadata(data));
