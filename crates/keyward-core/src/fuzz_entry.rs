//! The entry points the fuzz targets (`fuzz/fuzz_targets/`) drive, one per untrusted input.
//! Each must return, never panic, whatever the bytes. The targets are one-line wrappers over
//! these, and `tests/fuzz_entries.rs` runs the same functions under proptest and over the
//! fuzz corpus in the normal test suite, so they are exercised even where libFuzzer is not.

use crate::{invariants, ipc, recovery_key, KeywardToken, VolumeState};

/// A helper frame from an untrusted peer: the length prefix, request and response decoding.
pub fn ipc_frame(data: &[u8]) {
    if let Some(prefix) = data.first_chunk::<4>() {
        let _ = ipc::frame_len(*prefix);
    }
    let _ = ipc::decode_request(data);
    let _ = ipc::decode_response(data);
}

/// LUKS2 header JSON or a single token object: token parsing, the volume model, holders and
/// invariants I1/I3.
pub fn luks2_metadata(data: &[u8]) {
    let Ok(json) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let _ = KeywardToken::from_json(&json);
    if let Ok(mut state) = VolumeState::from_luks2_json(&json) {
        let _ = state.holders();
        let _ = invariants::check_state(&state);
        // The keyslot order is read from the header's text, as keyward-luks reads it.
        if let Ok(text) = std::str::from_utf8(data) {
            state.slot_order = crate::unlock_cost::header_slot_order(text).unwrap_or_default();
        }
        let _ = ipc::UnlockCostReport::from_state(&state);
    }
}

/// A recovery key as an admin might type it.
pub fn recovery_key(data: &[u8]) {
    let _ = recovery_key::parse(data);
}

/// An audit log, split into lines as `keyward audit --verify` does.
pub fn audit_chain(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = crate::audit::verify(text.lines(), None);
    }
}
