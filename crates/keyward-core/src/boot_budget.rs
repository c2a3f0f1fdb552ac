//! The boot budget for passphrase slots (`[kdf] boot_budget_ms`, issue 18): at boot a wrong
//! password is tried against every passphrase slot in turn, so the volume's passphrase slots
//! together should cost no more than the budget. Pure arithmetic: how many passphrase slots a
//! volume will hold after a slot is added, the time target that leaves each new slot, and the
//! least argon2 cost at or above a benchmarked one that still meets the KDF floor. The backend
//! (keyward-luks) benchmarks and writes the slot; nothing here measures time.

use crate::ids::SlotId;
use crate::kdf::{KdfClass, LIBCRYPTSETUP_ARGON2_MIN_PASSES};
use crate::kdf_floor::{Argon2Cost, KdfFloor};
use crate::model::{SlotPriority, VolumeState};
use crate::token::TokenState;
use crate::weak_kdf::slot_class;

/// The time target for one new passphrase slot when `slots` passphrase slots share
/// `budget_ms`: an even share, at least 1 ms (libcryptsetup refuses 0, which would also mean
/// "no target"). `slots` of 0 counts as 1: the new slot itself.
pub fn per_slot_ms(budget_ms: u32, slots: u32) -> u32 {
    (budget_ms / slots.max(1)).max(1)
}

/// How many passphrase slots a typed password will try on this volume once `new` is added:
/// the ones it tries now (not `ignore`, not holding a random key), plus `new`, less the slot a
/// rekey onto `new` retires (the token says `rekeying` with `next = new` before the slot is
/// added). A slot already counted is not counted twice.
pub fn passphrase_slots_after_add(state: &VolumeState, new: SlotId) -> u32 {
    let retired: Vec<SlotId> = state
        .keyward_tokens()
        .filter(|(_, t)| t.state == TokenState::Rekeying { next: new })
        .filter_map(|(_, t)| t.keyslot)
        .collect();
    let kept = state
        .slots
        .iter()
        .filter(|s| s.id != new && !retired.contains(&s.id))
        .filter(|s| s.priority != SlotPriority::Ignore)
        .filter(|s| slot_class(state, s.id) == KdfClass::Passphrase)
        .count();
    u32::try_from(kept).unwrap_or(u32::MAX).saturating_add(1)
}

/// How many passphrase slots a typed password tries on this volume now (not `ignore`, not
/// holding a random key): what a boot budget is shared among.
pub fn passphrase_slots(state: &VolumeState) -> u32 {
    let n = state
        .slots
        .iter()
        .filter(|s| s.priority != SlotPriority::Ignore)
        .filter(|s| slot_class(state, s.id) == KdfClass::Passphrase)
        .count();
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// The passphrase slot a typed password reaches last ([`crate::unlock_cost::try_order`]): where
/// a budget that cannot be met is reported.
pub fn last_passphrase_slot(state: &VolumeState) -> Option<SlotId> {
    crate::unlock_cost::try_order(state)
        .into_iter()
        .rev()
        .find(|s| slot_class(state, *s) == KdfClass::Passphrase)
}

/// libcryptsetup's argon2id benchmark cannot resolve short targets (it never goes below
/// 64 MiB × 4 passes unless the memory ceiling is lower), so a budgeted slot is calibrated at
/// this target and its share computed from that.
pub const CALIBRATION_MS: u32 = 1000;

/// The argon2 cost that takes about `share_ms` here, from `calibrated`, the cost libcryptsetup's
/// benchmark fitted into `calibrated_ms`: work (memory × passes) scales with time. Memory comes
/// first (it is what makes guessing costly on a GPU): as much as the share allows at
/// libcryptsetup's fewest passes, up to `calibrated`'s memory (the ceiling the benchmark
/// respected); the rest of the work becomes more passes, rounded down. A share at or above the
/// calibration time keeps `calibrated`. May be below the floor: see [`lift_to_floor`].
pub fn scale_to_share(calibrated: Argon2Cost, calibrated_ms: u32, share_ms: u32) -> Argon2Cost {
    if share_ms >= calibrated_ms || calibrated_ms == 0 {
        return calibrated;
    }
    let work = u128::from(calibrated.memory_kib) * u128::from(calibrated.time);
    let share = work * u128::from(share_ms) / u128::from(calibrated_ms);
    let min_passes = u128::from(LIBCRYPTSETUP_ARGON2_MIN_PASSES);
    let memory = (share / min_passes).min(u128::from(calibrated.memory_kib));
    let passes = share
        .checked_div(memory)
        .unwrap_or(min_passes)
        .max(min_passes);
    Argon2Cost {
        memory_kib: u64::try_from(memory).unwrap_or(u64::MAX),
        time: u64::try_from(passes).unwrap_or(u64::MAX),
    }
}

/// Does `cost` meet `floor`?
pub fn meets_floor(cost: Argon2Cost, floor: &KdfFloor) -> bool {
    floor
        .argon2
        .iter()
        .any(|c| cost.memory_kib >= c.memory_kib && cost.time >= c.time)
}

/// The cost to write for a slot whose benchmark at its time target gave `benchmarked`: that
/// cost if it meets `floor`, else the least work (memory × passes) that does, raising memory,
/// passes or both and never lowering either, with at least libcryptsetup's fewest passes and no
/// more memory than `ceiling_kib` (the configured `argon2_memory_kib`) when one is set. `None`
/// if no floor configuration fits under the ceiling (config load refuses such a ceiling).
pub fn lift_to_floor(
    benchmarked: Argon2Cost,
    floor: &KdfFloor,
    ceiling_kib: Option<u64>,
) -> Option<Argon2Cost> {
    if meets_floor(benchmarked, floor) {
        return Some(benchmarked);
    }
    floor
        .argon2
        .iter()
        .map(|c| Argon2Cost {
            memory_kib: c.memory_kib.max(benchmarked.memory_kib),
            time: c
                .time
                .max(benchmarked.time)
                .max(LIBCRYPTSETUP_ARGON2_MIN_PASSES),
        })
        .filter(|c| ceiling_kib.is_none_or(|max| c.memory_kib <= max))
        .min_by_key(|c| (c.memory_kib.saturating_mul(c.time), c.memory_kib))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kdf_floor::{FAST_TEST_FLOOR, OWASP_FLOOR};
    use serde_json::json;

    fn cost(memory_kib: u64, time: u64) -> Argon2Cost {
        Argon2Cost { memory_kib, time }
    }

    #[test]
    fn the_budget_is_shared_evenly_and_never_reaches_zero() {
        assert_eq!(per_slot_ms(2000, 1), 2000);
        assert_eq!(per_slot_ms(2000, 0), 2000);
        assert_eq!(per_slot_ms(2000, 8), 250);
        assert_eq!(per_slot_ms(2000, 3), 666);
        // 28 users on a 1 s budget, and more slots than milliseconds.
        assert_eq!(per_slot_ms(1000, 28), 35);
        assert_eq!(per_slot_ms(10, 32), 1);
        assert_eq!(per_slot_ms(1, u32::MAX), 1);
    }

    #[test]
    fn the_calibrated_work_is_scaled_to_the_share_at_four_passes() {
        // 256 MiB × 4 passes in 1000 ms: 250 ms is a quarter of the work.
        let cal = cost(262_144, 4);
        assert_eq!(scale_to_share(cal, 1000, 250), cost(65_536, 4));
        // More passes calibrated: the work is still memory × passes; memory stays at the
        // calibrated ceiling and the passes shrink, then memory does.
        assert_eq!(scale_to_share(cost(65_536, 8), 1000, 800), cost(65_536, 6));
        assert_eq!(scale_to_share(cost(65_536, 8), 1000, 500), cost(65_536, 4));
        assert_eq!(scale_to_share(cost(65_536, 8), 1000, 400), cost(52_428, 4));
        assert_eq!(scale_to_share(cost(65_536, 8), 1000, 100), cost(13_107, 4));
        // Nothing at all fits: zero memory, which the floor lift raises.
        assert_eq!(scale_to_share(cost(65_536, 4), 1000, 0), cost(0, 4));
        // A share at or above the calibration keeps the benchmark's answer (N = 1).
        assert_eq!(scale_to_share(cal, 1000, 1000), cal);
        assert_eq!(scale_to_share(cal, 1000, 5000), cal);
        // A tiny share comes out below the floor, which lift_to_floor then raises.
        let tiny = scale_to_share(cal, 1000, 1);
        assert_eq!(tiny, cost(262, 4));
        assert!(!meets_floor(tiny, &OWASP_FLOOR));
        assert_eq!(
            lift_to_floor(tiny, &OWASP_FLOOR, None),
            Some(cost(7_168, 5))
        );
    }

    #[test]
    fn a_benchmarked_cost_at_or_above_the_floor_is_kept() {
        let f = &OWASP_FLOOR;
        for c in [
            cost(9_216, 4),
            cost(1_048_576, 4),
            cost(19_456, 7),
            cost(7_168, 5),
        ] {
            assert_eq!(lift_to_floor(c, f, None), Some(c));
        }
    }

    #[test]
    fn a_cost_below_the_floor_is_lifted_to_the_least_work_that_meets_it() {
        let f = &OWASP_FLOOR;
        // A tiny time target: libcryptsetup kept its four passes and cut memory to the bone.
        // 7168 KiB × 5 passes (35840) is less work than 9216 × 4 (36864) or 47104 × 1.
        let lifted = lift_to_floor(cost(32, 4), f, None);
        assert_eq!(lifted, Some(cost(7_168, 5)));
        // Memory just short at four passes: 216 KiB more (36864) is less work than a fifth
        // pass (45000).
        assert_eq!(lift_to_floor(cost(9_000, 4), f, None), Some(cost(9_216, 4)));
        // Never fewer passes or less memory than benchmarked.
        assert_eq!(lift_to_floor(cost(8_000, 6), f, None), Some(cost(8_000, 6)));
        assert_eq!(lift_to_floor(cost(100, 9), f, None), Some(cost(7_168, 9)));
        // Whatever comes out meets the floor.
        for m in [0, 1, 32, 4_096, 7_167, 9_215] {
            for t in [0, 1, 4, 5] {
                let out = lift_to_floor(cost(m, t), f, None).expect("a floor cost fits");
                assert!(meets_floor(out, f), "{m} KiB × {t}: {out:?}");
                assert!(out.memory_kib >= m && out.time >= t.max(4), "{out:?}");
            }
        }
    }

    #[test]
    fn the_memory_ceiling_limits_the_lift() {
        let f = &OWASP_FLOOR;
        assert_eq!(
            lift_to_floor(cost(32, 4), f, Some(9_216)),
            Some(cost(7_168, 5))
        );
        // Below every floor configuration's memory: nothing fits (config load refuses it).
        assert_eq!(lift_to_floor(cost(32, 4), f, Some(7_000)), None);
        // The test floor (danger_fast_kdf) is libcryptsetup's own minimum.
        assert_eq!(
            lift_to_floor(cost(32, 4), &FAST_TEST_FLOOR, None),
            Some(cost(32, 4))
        );
    }

    fn header(slots: serde_json::Value, tokens: serde_json::Value) -> VolumeState {
        let meta = json!({"keyslots": slots, "tokens": tokens, "segments": {}, "digests": {},
                          "config": {}});
        VolumeState::from_luks2_json(&meta).expect("header")
    }

    fn argon2(priority: u64) -> serde_json::Value {
        json!({"type": "luks2", "priority": priority,
               "kdf": {"type": "argon2id", "time": 4, "memory": 9216, "cpus": 1}})
    }

    fn pbkdf2() -> serde_json::Value {
        json!({"type": "luks2", "priority": 0,
               "kdf": {"type": "pbkdf2", "hash": "sha512", "iterations": 1000}})
    }

    fn user_token(slot: u32, state: &str, next: Option<u32>) -> serde_json::Value {
        let mut t = json!({"type": "keyward", "keyslots": [slot.to_string()], "role": "user",
            "user": format!("u{slot}"), "uid": 1000 + slot, "created": "2026-11-22T10:00:00Z",
            "granted_by": "service", "state": state});
        if let Some(n) = next {
            t["next_keyslot"] = json!(n.to_string());
        }
        t
    }

    #[test]
    fn counts_the_passphrase_slots_a_typed_password_will_try() {
        let service = json!({"type": "keyward", "keyslots": ["0"], "role": "service",
            "created": "2026-11-22T10:00:00Z", "granted_by": "bootstrap", "state": "active"});
        let slot = |n| SlotId::new(n).expect("slot");
        // Only the service slot (random key, ignore): the new slot is the first (N = 1).
        let only_service = header(json!({"0": pbkdf2()}), json!({"0": service}));
        assert_eq!(passphrase_slots_after_add(&only_service, slot(1)), 1);
        // Installer's slot 1 (unmanaged passphrase) + two users: a grant makes four.
        let three = header(
            json!({"0": pbkdf2(), "1": argon2(1), "2": argon2(1), "3": argon2(2)}),
            json!({"0": service, "1": user_token(2, "active", None),
                   "2": user_token(3, "active", None)}),
        );
        assert_eq!(passphrase_slots_after_add(&three, slot(4)), 4);
        // Now: three, and the last a typed password reaches is slot 2 (3 is preferred; the
        // ignore service slot is never tried).
        assert_eq!(passphrase_slots(&three), 3);
        assert_eq!(last_passphrase_slot(&three), Some(slot(2)));
        assert_eq!(last_passphrase_slot(&only_service), None);
        // A rekey of slot 3 onto slot 4 keeps the count: slot 3 goes once 4 works.
        let rekey = header(
            json!({"0": pbkdf2(), "1": argon2(1), "2": argon2(1), "3": argon2(2)}),
            json!({"0": service, "1": user_token(2, "active", None),
                   "2": user_token(3, "rekeying", Some(4))}),
        );
        assert_eq!(passphrase_slots_after_add(&rekey, slot(4)), 3);
        // 30 passphrase slots: the new one is the 31st (N large).
        let mut many = serde_json::Map::new();
        many.insert("0".into(), pbkdf2());
        for n in 1..=30 {
            many.insert(n.to_string(), argon2(1));
        }
        let full = header(json!(many), json!({"0": service}));
        assert_eq!(passphrase_slots_after_add(&full, slot(31)), 31);
    }
}
