//! Which user slot a passphrase typed at boot tries first. cryptsetup and systemd-cryptsetup
//! try slots in turn, each user slot a full argon2id run, so the tenth user granted would wait
//! ten times as long at the boot prompt (`scripts/bench-boot` measures it). keyward gives one
//! user slot LUKS2 priority `prefer`: `[policy] primary_user`'s, or else that of whoever logged
//! in last — on a laptop, its owner. Unmanaged slots are never touched (I2).
//!
//! The service slot is `ignore` (`service.rs`): a typed passphrase never tries it. The admin's
//! way out names it — stock cryptsetup 2.6.1, N the service slot (`keyward status`), M a free
//! slot: `cryptsetup luksAddKey --key-slot N --new-key-slot M --key-file
//! /var/lib/keyward/service/VOLUME DEVICE` (without `--new-key-slot`, cryptsetup takes
//! `--key-slot` for the *new* slot and refuses: "Key slot N is full"); checking the secret:
//! `cryptsetup open --test-passphrase --key-slot N --key-file ... DEVICE`. Recovery slots stay
//! `normal` (a person types the key at the boot prompt); they are PBKDF2-SHA512 × 1000
//! (`keyward_core::kdf::RANDOM_KEY_PBKDF2_ITERATIONS`), so one made before the users' slots
//! costs a typed passphrase about a millisecond, not a user slot's argon2id run.

use keyward_core::config::{Config, Volume};
use keyward_core::{HolderRole, SlotPriority, UnlockStore, UserName};

/// After `user`'s login or password change on `v`: make the primary user's slot the one tried
/// first. Returns a note for the audit record ("" when nothing changed).
pub fn after_login(c: &Config, v: &Volume, user: &UserName) -> Result<String, String> {
    let primary = c.policy.primary_user.as_ref().unwrap_or(user);
    let mut store = super::open(c, v).map_err(|e| e.to_string())?;
    let state = store.state().map_err(|e| e.to_string())?;
    let slot = state.holders().into_iter().find_map(|h| match h.role {
        HolderRole::User { name, .. } if &name == primary => Some(h.slot),
        _ => None,
    });
    let Some(slot) = slot else {
        return Ok(String::new());
    };
    let others_preferred = state.holders().into_iter().any(|h| {
        matches!(h.role, HolderRole::User { .. })
            && h.slot != slot
            && state
                .slot(h.slot)
                .is_some_and(|s| s.priority == SlotPriority::Prefer)
    });
    let already = state
        .slot(slot)
        .is_some_and(|s| s.priority == SlotPriority::Prefer);
    if already && !others_preferred {
        return Ok(String::new());
    }
    store.prefer(slot).map_err(|e| e.to_string())?;
    Ok(format!("; slot {slot} is tried first at boot"))
}
