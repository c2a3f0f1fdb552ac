//! An audit log file (see `keyward_core::fuzz_entry`).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| keyward_core::fuzz_entry::audit_chain(data));
