//! Which user slot a passphrase typed at boot tries first, after a login: the decision is
//! keyward-core's (`keyward_core::boot_order`: `[policy] primary_user`'s slot, or else that of
//! whoever logged in last), made so here through the store's `prefer`. cryptsetup tries slots
//! in turn, each user slot a full argon2id run (`scripts/bench-boot` measures it). Unmanaged
//! slots are never touched (I2).
//!
//! The service slot is `ignore` (`keyward_core::secret_orderings::service`): a typed
//! passphrase never tries it. The admin's way out names it — stock cryptsetup 2.6.1, N the
//! service slot (`keyward status`), M a free slot: `cryptsetup luksAddKey --key-slot N
//! --new-key-slot M --key-file /var/lib/keyward/service/VOLUME DEVICE` (without
//! `--new-key-slot`, cryptsetup takes `--key-slot` for the *new* slot and refuses: "Key slot N
//! is full"); checking the secret: `cryptsetup open --test-passphrase --key-slot N --key-file
//! ... DEVICE`. Recovery slots stay `normal` (a person types the key at the boot prompt); they
//! are PBKDF2-SHA512 × 1000 (`keyward_core::kdf::RANDOM_KEY_PBKDF2_ITERATIONS`), so one made
//! before the users' slots costs a typed passphrase about a millisecond, not a user slot's
//! argon2id run.

use keyward_core::config::{Config, Volume};
use keyward_core::{UnlockStore, UserName};

/// After `user`'s login or password change on `v`: make the primary user's slot the one tried
/// first. Returns a note for the audit record ("" when nothing changed).
pub fn after_login(c: &Config, v: &Volume, user: &UserName) -> Result<String, String> {
    let mut store = super::open(c, v).map_err(|e| e.to_string())?;
    let state = store.state().map_err(|e| e.to_string())?;
    let primary = c.policy.primary_user.as_ref();
    let Some(slot) = keyward_core::boot_order::to_prefer(&state, primary, user) else {
        return Ok(String::new());
    };
    store.prefer(slot).map_err(|e| e.to_string())?;
    Ok(format!("; slot {slot} is tried first at boot"))
}
