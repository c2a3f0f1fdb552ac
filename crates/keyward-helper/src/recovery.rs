//! Standalone recovery-key rotation (no escrow server): the key is made and sealed root-only in
//! `state_dir/pending/<volume>` *before* its slot exists, added as a `pending` recovery slot
//! (never counted as a way in), shown once to the admin, and committed only when the admin
//! types its last group back — then the previous recovery slot goes and the pending file is
//! deleted. Until then the old key stays valid; abort drops only the pending slot.

use keyward_core::config::{Config, Volume};
use keyward_core::ipc::{ErrorCode, Reply, Response, WireSecret};
use keyward_core::store::GrantRequest;
use keyward_core::token::{Role, TokenState};
use keyward_core::{recovery_key, Authority, Secret, SlotId, UnlockStore, VolumeName};
use keyward_luks::LuksStore;
use keyward_sys::safe_fs;

use crate::ops::{configured, failure, open, store_failure};
use crate::service;

fn io(e: std::io::Error) -> Response {
    failure(ErrorCode::Failed, format!("pending recovery key: {e}"))
}

fn dir(c: &Config) -> std::path::PathBuf {
    c.state_dir.join("pending")
}

fn load_pending(c: &Config, v: &VolumeName) -> Result<Option<Secret>, Response> {
    safe_fs::read_secret(&dir(c).join(v.as_str()), 0).map_err(io)
}

fn drop_pending(c: &Config, v: &VolumeName) -> Result<(), Response> {
    match std::fs::remove_file(dir(c).join(v.as_str())) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(e)),
        _ => Ok(()),
    }
}

/// Recovery slots by state.
fn recovery_slots(store: &mut LuksStore, state: TokenState) -> Result<Vec<SlotId>, Response> {
    let s = store.state().map_err(store_failure)?;
    Ok(s.keyward_tokens()
        .filter(|(_, t)| t.role == Role::Recovery && t.state == state)
        .filter_map(|(_, t)| t.keyslot)
        .collect())
}

/// The pending slot the stored pending key opens, revoking pending slots nobody holds a key
/// for and forgetting a stored key whose slot never came to be.
fn settle_pending(
    c: &Config,
    v: &Volume,
    store: &mut LuksStore,
) -> Result<Option<(SlotId, Secret)>, Response> {
    let key = load_pending(c, &v.name)?;
    let mut found = None;
    for slot in recovery_slots(store, TokenState::Pending)? {
        let opens = match &key {
            Some(k) if found.is_none() => store.verify(slot, k).map_err(store_failure)?,
            _ => false,
        };
        if opens {
            found = Some(slot);
        } else {
            store.revoke(slot).map_err(store_failure)?;
        }
    }
    match (found, key) {
        (Some(slot), Some(k)) => Ok(Some((slot, k))),
        _ => {
            drop_pending(c, &v.name)?;
            Ok(None)
        }
    }
}

/// Step 1 (idempotent): the pending key and its slot.
pub fn begin(c: &Config, name: &VolumeName) -> Result<Reply, Response> {
    let v = configured(c, name)?;
    let mut store = open(c, v)?;
    let (_, service) = service::working(c, v, &mut store)?;
    if let Some((slot, key)) = settle_pending(c, v, &mut store)? {
        return Ok(Reply::RecoveryPending {
            slot: slot.get(),
            key: WireSecret::from_secret(&key),
        });
    }
    let key = keyward_luks::random::recovery_key().map_err(store_failure)?;
    // Sealed root-only before the slot that needs it exists.
    safe_fs::ensure_dir(&dir(c), 0, 0, 0o700).map_err(io)?;
    safe_fs::write_atomic(&dir(c), name.as_str(), key.expose(), 0o600).map_err(io)?;
    service::failpoint("recovery-begin.sealed");
    let req = GrantRequest {
        role: Role::Recovery,
        pending: true,
    };
    let slot = match store.grant(&req, Authority::Service(&service), &key) {
        Ok(s) => s,
        Err(e) => {
            drop_pending(c, name)?;
            return Err(store_failure(e));
        }
    };
    Ok(Reply::RecoveryPending {
        slot: slot.get(),
        key: WireSecret::from_secret(&key),
    })
}

/// Step 2: commit when the admin has typed the last group back.
pub fn commit(
    c: &Config,
    name: &VolumeName,
    slot: u32,
    confirm: &Secret,
) -> Result<Reply, Response> {
    let v = configured(c, name)?;
    let mut store = open(c, v)?;
    let Some((pending, key)) = settle_pending(c, v, &mut store)? else {
        return Err(failure(
            ErrorCode::Failed,
            format!("{name} has no pending recovery key"),
        ));
    };
    if pending.get() != slot {
        return Err(failure(
            ErrorCode::Failed,
            format!("the pending recovery key is in keyslot {pending}, not {slot}"),
        ));
    }
    let typed = recovery_key::normalize_group(confirm.expose());
    if !Secret::copy_from(recovery_key::last_group(&key)).ct_eq(&Secret::from_vec(typed)) {
        return Err(failure(
            ErrorCode::Refused,
            "the typed group does not match the key's last group; nothing committed, the current recovery key stays valid",
        ));
    }
    let old = recovery_slots(&mut store, TokenState::Active)?;
    store.commit(pending).map_err(store_failure)?;
    service::failpoint("recovery-commit.committed");
    for s in &old {
        store.revoke(*s).map_err(store_failure)?;
    }
    drop_pending(c, name)?;
    Ok(Reply::RecoveryCommitted {
        slot: pending.get(),
        retired: old.iter().map(|s| s.get()).collect(),
    })
}

/// Drop the pending key and its slot.
pub fn abort(c: &Config, name: &VolumeName) -> Result<Reply, Response> {
    let v = configured(c, name)?;
    let mut store = open(c, v)?;
    let pending = recovery_slots(&mut store, TokenState::Pending)?;
    for s in &pending {
        store.revoke(*s).map_err(store_failure)?;
    }
    drop_pending(c, name)?;
    Ok(Reply::RecoveryAborted {
        slot: pending.first().map(|s| s.get()),
    })
}
