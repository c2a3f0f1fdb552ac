//! A helper frame payload from an untrusted peer (see `keyward_core::fuzz_entry`).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| keyward_core::fuzz_entry::ipc_frame(data));
