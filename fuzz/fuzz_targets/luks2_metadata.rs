//! LUKS2 header JSON (`cryptsetup luksDump --dump-json-metadata`) or a single token object:
//! token parsing, the volume model, holders and invariants I1/I3 must never panic.
#![no_main]
use keyward_core::{invariants, KeywardToken, VolumeState};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(json) = serde_json::from_slice::<serde_json::Value>(data) else { return };
    let _ = KeywardToken::from_json(&json);
    if let Ok(state) = VolumeState::from_luks2_json(&json) {
        let _ = state.holders();
        let _ = invariants::check_state(&state);
    }
});
