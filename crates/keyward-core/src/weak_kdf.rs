//! Which keyslots are held to the passphrase KDF floor ([`crate::kdf_floor`]), and the ones
//! below it: the `weak-kdf` findings of `keyward verify` and `keyward status`. Whoever made a
//! slot — keyward, the installer, `cryptsetup luksAddKey` — is judged the same way; only slots
//! known to hold random keys are exempt. Pure: works on a [`VolumeState`].

use crate::ids::SlotId;
use crate::ipc::FindingReport;
use crate::kdf::KdfClass;
use crate::kdf_floor::{KdfFloor, Shortfall, SlotKdf};
use crate::model::{HolderRole, SlotOwner, TokenEntry, VolumeState};
use crate::token::Role;

/// Another tool's token types whose slots hold a machine-made random key, never a passphrase:
/// systemd-cryptenroll's (TPM2, FIDO2, PKCS#11, recovery key) and clevis's. systemd-cryptenroll
/// gives all of them PBKDF2 × 1000, as keyward gives its own random keys.
const RANDOM_KEY_TOKENS: &[&str] = &[
    "systemd-tpm2",
    "systemd-fido2",
    "systemd-pkcs11",
    "systemd-recovery",
    "clevis",
];

/// What `slot` holds, as far as the header tells: keyward's service and recovery slots (by
/// their keyward token, committed or mid-operation) and slots another tool's random-key token
/// claims hold random keys; every other slot — keyward's user slots, the installer's, anything
/// `cryptsetup luksAddKey` made — is a passphrase slot.
pub fn slot_class(state: &VolumeState, slot: SlotId) -> KdfClass {
    let keyward_role = match state.owner_of(slot) {
        SlotOwner::Managed(t) | SlotOwner::Transitional(t) => {
            state.keyward_token(t).map(|t| &t.role)
        }
        SlotOwner::Unmanaged => None,
    };
    if matches!(keyward_role, Some(Role::Service | Role::Recovery)) {
        return KdfClass::RandomKey;
    }
    let random_token = state.tokens.iter().any(|t| match t {
        TokenEntry::Foreign { kind, keyslots, .. } => {
            keyslots.contains(&slot) && RANDOM_KEY_TOKENS.iter().any(|k| crate::quote(k) == *kind)
        }
        TokenEntry::Keyward { .. } | TokenEntry::Malformed { .. } => false,
    });
    if random_token {
        KdfClass::RandomKey
    } else {
        KdfClass::Passphrase
    }
}

/// A passphrase slot below the floor (`weak-kdf`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WeakKdf {
    /// The slot.
    pub slot: SlotId,
    /// Whose it is.
    pub role: HolderRole,
    /// Its key derivation.
    pub kdf: SlotKdf,
    /// What the floor asks for.
    pub shortfall: Shortfall,
}

/// Every passphrase slot of `state` whose key derivation is below `floor`, by slot number.
pub fn weak_slots(state: &VolumeState, floor: &KdfFloor) -> Vec<WeakKdf> {
    state
        .holders()
        .into_iter()
        .filter(|h| slot_class(state, h.slot) == KdfClass::Passphrase)
        .filter_map(|h| {
            let kdf = state.slot(h.slot)?.params.clone();
            let shortfall = floor.judge(&kdf).err()?;
            Some(WeakKdf {
                slot: h.slot,
                role: h.role,
                kdf,
                shortfall,
            })
        })
        .collect()
}

// As reported over the helper protocol.
impl FindingReport {
    /// A finding about one slot, its KDF parameters not yet filled in (all `None`).
    pub fn about(
        finding: &str,
        slot: u32,
        role: &str,
        user: Option<String>,
        kdf: &str,
        detail: String,
    ) -> Self {
        FindingReport {
            finding: finding.into(),
            slot,
            role: role.into(),
            user,
            kdf: kdf.into(),
            hash: None,
            iterations: None,
            time: None,
            memory_kib: None,
            cpus: None,
            detail,
        }
    }

    /// The `weak-kdf` finding for one slot.
    pub fn weak_kdf(w: &WeakKdf) -> Self {
        let user = match &w.role {
            HolderRole::User { name, .. } => Some(name.to_string()),
            _ => None,
        };
        let mut f = FindingReport::about(
            "weak-kdf",
            w.slot.get(),
            w.role.label(),
            user,
            "",
            format!("{}: below the floor: {}", w.kdf, w.shortfall),
        );
        match &w.kdf {
            SlotKdf::Pbkdf2 { hash, iterations } => {
                f.kdf = "pbkdf2".into();
                f.hash = Some(hash.clone());
                f.iterations = Some(*iterations);
            }
            SlotKdf::Argon2 {
                variant,
                time,
                memory_kib,
                cpus,
            } => {
                f.kdf = variant.label().into();
                f.time = Some(*time);
                f.memory_kib = Some(*memory_kib);
                f.cpus = Some(*cpus);
            }
            other => f.kdf = other.label(),
        }
        f
    }

    /// The `weak-kdf` findings of one volume's state against `floor`.
    pub fn weak_kdfs(state: &VolumeState, floor: &KdfFloor) -> Vec<Self> {
        weak_slots(state, floor)
            .iter()
            .map(Self::weak_kdf)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kdf_floor::{FAST_TEST_FLOOR, OWASP_FLOOR};
    use serde_json::{json, Value};

    const FAST: &str = r#"{"type": "pbkdf2", "hash": "sha512", "iterations": 1000}"#;

    fn keyward(slot: &str, role: &str) -> Value {
        let mut t = json!({ "type": "keyward", "keyslots": [slot], "role": role,
            "created": "2026-11-22T10:00:00Z", "granted_by": "service", "state": "active" });
        if role == "user" {
            t["user"] = json!("alice");
            t["uid"] = json!(1001);
        }
        t
    }

    /// Slots 0–5 all with PBKDF2-SHA512 × 1000, the random-key KDF: 0 the installer's, 1
    /// keyward's service slot, 2 keyward's recovery key, 3 alice's keyward slot, 4 a TPM2 slot
    /// (systemd-cryptenroll), 5 claimed by a token type keyward does not know.
    fn volume() -> VolumeState {
        let fast: Value = serde_json::from_str(FAST).expect("json");
        let slot = json!({"type": "luks2", "kdf": fast});
        let keyslots: serde_json::Map<String, Value> =
            (0..6).map(|n| (n.to_string(), slot.clone())).collect();
        let meta = json!({
            "keyslots": keyslots,
            "tokens": {
                "0": keyward("1", "service"),
                "1": keyward("2", "recovery"),
                "2": keyward("3", "user"),
                "3": {"type": "systemd-tpm2", "keyslots": ["4"]},
                "4": {"type": "my-passphrase-vault", "keyslots": ["5"]},
            }
        });
        VolumeState::from_luks2_json(&meta).expect("valid")
    }

    fn slot(n: u32) -> SlotId {
        SlotId::new(n).expect("slot")
    }

    #[test]
    fn random_key_slots_are_exempt_every_other_slot_is_a_passphrase_slot() {
        let v = volume();
        let classes: Vec<KdfClass> = (0..6).map(|n| slot_class(&v, slot(n))).collect();
        use KdfClass::{Passphrase as P, RandomKey as R};
        assert_eq!(classes, [P, R, R, P, R, P]);
    }

    #[test]
    fn weak_passphrase_slots_are_found_with_their_holder() {
        let found = weak_slots(&volume(), &OWASP_FLOOR);
        let slots: Vec<u32> = found.iter().map(|w| w.slot.get()).collect();
        assert_eq!(slots, [0, 3, 5]);
        assert_eq!(found[0].role, HolderRole::Unmanaged);
        assert!(
            matches!(&found[1].role, HolderRole::User { name, .. } if name.as_str() == "alice")
        );
        assert_eq!(found[1].kdf.to_string(), "pbkdf2-sha512, 1000 iterations");
        assert!(found[1].shortfall.0.contains("210000"));
    }

    #[test]
    fn the_finding_names_slot_holder_and_parameters() {
        let found = FindingReport::weak_kdfs(&volume(), &OWASP_FLOOR);
        let alice = &found[1];
        assert_eq!(
            (alice.finding.as_str(), alice.slot, alice.role.as_str()),
            ("weak-kdf", 3, "user")
        );
        assert_eq!(alice.user.as_deref(), Some("alice"));
        assert_eq!(
            (alice.kdf.as_str(), alice.hash.as_deref(), alice.iterations),
            ("pbkdf2", Some("sha512"), Some(1000))
        );
        assert_eq!(
            alice.detail,
            "pbkdf2-sha512, 1000 iterations: below the floor: pbkdf2-sha512 needs at least 210000 iterations (OWASP minimum)"
        );
        assert_eq!(
            (found[0].role.as_str(), found[0].user.as_deref()),
            ("unmanaged", None)
        );
    }

    #[test]
    fn a_mid_operation_service_slot_is_still_a_random_key() {
        // A service rotation between "add slot" and "move token": the new slot is claimed as
        // `next_keyslot` (transitional), and holds a random key like the old one.
        let mut meta = json!({"keyslots": {}, "tokens": {}});
        let fast: Value = serde_json::from_str(FAST).expect("json");
        for n in ["1", "4"] {
            meta["keyslots"][n] = json!({"type": "luks2", "kdf": fast});
        }
        let mut t = keyward("1", "service");
        t["state"] = json!("rekeying");
        t["next_keyslot"] = json!("4");
        meta["tokens"]["0"] = t;
        let v = VolumeState::from_luks2_json(&meta).expect("valid");
        assert_eq!(slot_class(&v, slot(4)), KdfClass::RandomKey);
        assert!(weak_slots(&v, &OWASP_FLOOR).is_empty());
    }

    #[test]
    fn the_fast_test_floor_finds_nothing_here() {
        assert!(weak_slots(&volume(), &FAST_TEST_FLOOR).is_empty());
    }
}
