//! What an unlock at the boot prompt costs on one volume (issue 18), from the KDF parameters
//! each keyslot's header records: a typed passphrase is tried against the `prefer` slots, then
//! the `normal` ones, each group in the order the header lists them (libcryptsetup's order:
//! json-c keeps insertion order; `ignore` slots are never tried), so the last user in that order and a wrong password pay for every slot before.
//!
//! The cost is work, not time: argon2 slots add memory × passes (KiB-passes: each is one 1 KiB
//! block compressed once, whatever the lanes), PBKDF2 slots add iterations. Wall time is that
//! work over the machine's speed, which this module does not know (docs/ARCHITECTURE.md,
//! "The unlock cost in status"). Pure: works on a [`VolumeState`].

use crate::ids::SlotId;
use crate::kdf_floor::SlotKdf;
use crate::model::{HolderRole, SlotPriority, VolumeState};

/// The summed key-derivation work of some slots.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Work {
    /// Slots tried.
    pub slots: u32,
    /// argon2 memory × passes, KiB-passes.
    pub argon2_kib_passes: u64,
    /// PBKDF2 iterations (any hash).
    pub pbkdf2_iterations: u64,
    /// Slots whose KDF keyward cannot read (their cost is unknown, not zero).
    pub unknown_slots: u32,
}

impl Work {
    fn add(mut self, kdf: &SlotKdf) -> Self {
        self.slots += 1;
        match kdf {
            SlotKdf::Argon2 {
                time, memory_kib, ..
            } => {
                self.argon2_kib_passes = self
                    .argon2_kib_passes
                    .saturating_add(time.saturating_mul(*memory_kib));
            }
            SlotKdf::Pbkdf2 { iterations, .. } => {
                self.pbkdf2_iterations = self.pbkdf2_iterations.saturating_add(*iterations);
            }
            SlotKdf::Unknown { .. } | SlotKdf::NotLuks2 => self.unknown_slots += 1,
        }
        self
    }
}

/// The slowest unlocks of one volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlowestUnlock {
    /// The slots a typed passphrase tries, in order.
    pub order: Vec<SlotId>,
    /// The keyward user whose slot is tried last, with the work up to and including it.
    pub last_user: Option<(SlotId, String, Work)>,
    /// A wrong passphrase: every slot in `order`.
    pub wrong_password: Work,
}

/// The order a typed passphrase tries `state`'s slots in: the `prefer` slots, then the
/// `normal` ones, each group in the header's order ([`VolumeState::slot_order`]; by number for
/// slots it does not list); `ignore` never.
pub fn try_order(state: &VolumeState) -> Vec<SlotId> {
    let position = |id: SlotId| {
        state
            .slot_order
            .iter()
            .position(|s| *s == id)
            .unwrap_or(usize::MAX)
    };
    let mut order: Vec<(u8, usize, SlotId)> = state
        .slots
        .iter()
        .filter_map(|s| match s.priority {
            SlotPriority::Prefer => Some((0, position(s.id), s.id)),
            SlotPriority::Normal => Some((1, position(s.id), s.id)),
            _ => None,
        })
        .collect();
    order.sort_by_key(|(group, at, id)| (*group, *at, id.get()));
    order.into_iter().map(|(_, _, id)| id).collect()
}

/// The keyslot numbers in the order a LUKS2 header's JSON text lists them (`keyslots` object
/// keys; serde_json's own map would sort them). `None` if the text is not a JSON object with a
/// `keyslots` object whose keys are slot numbers.
pub fn header_slot_order(json: &str) -> Option<Vec<SlotId>> {
    use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};

    struct Keys;
    impl<'de> Visitor<'de> for Keys {
        type Value = Vec<String>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a keyslots object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut keys = Vec::new();
            while let Some(k) = map.next_key::<String>()? {
                map.next_value::<IgnoredAny>()?;
                keys.push(k);
            }
            Ok(keys)
        }
    }
    struct SlotKeys(Vec<String>);
    impl<'de> serde::Deserialize<'de> for SlotKeys {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_map(Keys).map(SlotKeys)
        }
    }
    #[derive(serde::Deserialize)]
    struct Meta {
        keyslots: SlotKeys,
    }
    let meta: Meta = serde_json::from_str(json).ok()?;
    meta.keyslots
        .0
        .iter()
        .map(|k| SlotId::parse(k).ok())
        .collect()
}

/// What the last-tried user and a wrong passphrase cost on `state`.
pub fn slowest_unlock(state: &VolumeState) -> SlowestUnlock {
    let order = try_order(state);
    let holders = state.holders();
    let mut work = Work::default();
    let mut last_user = None;
    for id in &order {
        let Some(slot) = state.slot(*id) else {
            continue;
        };
        work = work.add(&slot.params);
        let user = holders.iter().find_map(|h| match &h.role {
            HolderRole::User { name, .. } if h.slot == *id => Some(name.to_string()),
            _ => None,
        });
        if let Some(name) = user {
            last_user = Some((*id, name, work));
        }
    }
    SlowestUnlock {
        order,
        last_user,
        wrong_password: work,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn argon2(priority: u64, time: u64, memory: u64) -> serde_json::Value {
        json!({"type": "luks2", "priority": priority,
               "kdf": {"type": "argon2id", "time": time, "memory": memory, "cpus": 2}})
    }

    fn pbkdf2(priority: Option<u64>) -> serde_json::Value {
        let mut s = json!({"type": "luks2",
               "kdf": {"type": "pbkdf2", "hash": "sha512", "iterations": 1000}});
        if let Some(p) = priority {
            s["priority"] = json!(p);
        }
        s
    }

    fn user(slot: u32, name: &str) -> serde_json::Value {
        json!({"type": "keyward", "keyslots": [slot.to_string()], "role": "user", "user": name,
            "uid": 1000 + slot, "created": "2026-11-22T10:00:00Z", "granted_by": "service",
            "state": "active"})
    }

    fn state(slots: serde_json::Value, tokens: serde_json::Value) -> VolumeState {
        let meta = json!({"keyslots": slots, "tokens": tokens, "segments": {}, "digests": {},
                          "config": {}});
        VolumeState::from_luks2_json(&meta).expect("header")
    }

    fn ids(order: &[SlotId]) -> Vec<u32> {
        order.iter().map(|s| s.get()).collect()
    }

    #[test]
    fn prefer_first_then_normal_by_number_and_ignore_never() {
        let s = state(
            json!({"0": pbkdf2(Some(0)), "1": argon2(1, 4, 9216), "2": pbkdf2(None),
                   "3": argon2(2, 4, 9216), "4": argon2(1, 5, 7168), "10": argon2(1, 4, 9216)}),
            json!({"0": user(3, "alice"), "1": user(4, "bob"), "2": user(10, "carol")}),
        );
        assert_eq!(ids(&try_order(&s)), vec![3, 1, 2, 4, 10]);
        let u = slowest_unlock(&s);
        assert_eq!(ids(&u.order), vec![3, 1, 2, 4, 10]);
        let (slot, name, upto) = u.last_user.expect("a user");
        assert_eq!((slot.get(), name.as_str()), (10, "carol"));
        // Everything is tried before carol's slot 10, the last: her cost is the wrong one's.
        let all = Work {
            slots: 5,
            argon2_kib_passes: 9216 * 4 * 3 + 7168 * 5,
            pbkdf2_iterations: 1000,
            unknown_slots: 0,
        };
        assert_eq!(upto, all);
        assert_eq!(u.wrong_password, all);
    }

    #[test]
    fn the_last_user_stops_before_the_slots_after_them() {
        // Alice is preferred; an unmanaged normal slot comes after her.
        let s = state(
            json!({"1": argon2(1, 4, 1_048_576), "3": argon2(2, 4, 9216)}),
            json!({"0": user(3, "alice")}),
        );
        let u = slowest_unlock(&s);
        let (slot, _, upto) = u.last_user.expect("alice");
        assert_eq!(slot.get(), 3);
        assert_eq!((upto.slots, upto.argon2_kib_passes), (1, 36_864));
        assert_eq!(
            (u.wrong_password.slots, u.wrong_password.argon2_kib_passes),
            (2, 36_864 + 4_194_304)
        );
    }

    #[test]
    fn the_header_order_decides_within_a_priority_group() {
        // keyward bootstrapped (service at 31), then granted 30 and 29; json-c keeps that
        // order, and so does cryptsetup when it tries them.
        let text = r#"{"keyslots":{"0":{"type":"luks2"},"31":{"a":[1,{"b":2}]},"30":{},"29":{}},
                       "tokens":{}}"#;
        let order = header_slot_order(text).expect("an order");
        assert_eq!(ids(&order), vec![0, 31, 30, 29]);
        let mut s = state(
            json!({"0": argon2(1, 4, 9216), "29": argon2(2, 4, 9216), "30": argon2(1, 4, 9216),
                   "31": pbkdf2(None)}),
            json!({"0": user(30, "alice"), "1": user(29, "bob")}),
        );
        s.slot_order = order;
        assert_eq!(ids(&try_order(&s)), vec![29, 0, 31, 30]);
        let u = slowest_unlock(&s);
        assert_eq!(
            u.last_user.map(|(slot, n, _)| (slot.get(), n)),
            Some((30, "alice".into()))
        );
        // Not a header, or a key that is no slot number: no order (then by number).
        assert_eq!(header_slot_order("[]"), None);
        assert_eq!(header_slot_order(r#"{"keyslots":{"x":{}}}"#), None);
        assert_eq!(header_slot_order(r#"{"tokens":{}}"#), None);
    }

    #[test]
    fn no_users_and_unreadable_slots() {
        let s = state(
            json!({"0": pbkdf2(Some(0)), "1": {"type": "luks2", "kdf": {"type": "scrypt"}}}),
            json!({}),
        );
        let u = slowest_unlock(&s);
        assert_eq!(u.last_user, None);
        assert_eq!(ids(&u.order), vec![1]);
        assert_eq!(
            u.wrong_password,
            Work {
                slots: 1,
                argon2_kib_passes: 0,
                pbkdf2_iterations: 0,
                unknown_slots: 1
            }
        );
    }
}
