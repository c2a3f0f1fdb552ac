//! Recovery-key rotation. The key is made and sealed root-only in `state_dir/pending/<volume>`
//! *before* its slot exists, added as a `pending` recovery slot (never counted as a way in),
//! and committed only on proof that someone holds it:
//!
//! * **escrowed** — the agent gets only the key's age ciphertext to the escrow server's
//!   recipient, and the commit needs the server's receipt, signed with its pinned Ed25519 key,
//!   for this device, volume, rotation and ciphertext;
//! * **standalone** (no server) — the key is shown once on the admin's terminal and committed
//!   when the admin types its last group back.
//!
//! Then the previous recovery slots go and the pending files are deleted. Until then the old
//! key stays valid; abort drops only the pending slot.

use crate::luks::LuksStore;
use keyward_core::config::{Config, Escrow, Volume, VolumeKind};
use keyward_core::escrow::Receipt;
use keyward_core::ipc::{Reply, WireSecret};
use keyward_core::store::GrantRequest;
use keyward_core::token::{EscrowRef, Role, TokenState};
use keyward_core::{recovery_key, Authority, Secret, SlotId, UnlockStore, VolumeName};
use keyward_sys::safe_fs;
use sha2::Digest;

use crate::error::OpError;
use crate::filevault;
use crate::ops::{configured, open};
use crate::service;

fn io(e: std::io::Error) -> OpError {
    OpError::Io {
        what: "pending recovery key",
        source: e,
    }
}

fn dir(c: &Config) -> std::path::PathBuf {
    c.state_dir.join("pending")
}

pub(crate) fn load_pending(c: &Config, v: &VolumeName) -> Result<Option<Secret>, OpError> {
    safe_fs::read_secret(&dir(c).join(v.as_str()), 0).map_err(io)
}

pub(crate) fn drop_pending(c: &Config, v: &VolumeName) -> Result<(), OpError> {
    for name in [v.to_string(), format!("{v}.escrow")] {
        match std::fs::remove_file(dir(c).join(name)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(e)),
            _ => {}
        }
    }
    Ok(())
}

/// What the escrow server is sent for a pending key (ciphertext only), kept root-only beside
/// the key so a repeated begin returns the same rotation.
#[derive(serde::Serialize, serde::Deserialize)]
pub(crate) struct EscrowMeta {
    pub(crate) rotation_id: String,
    pub(crate) ciphertext: Vec<u8>,
    pub(crate) sha256: String,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub(crate) fn escrow_meta(c: &Config, v: &VolumeName, key: &Secret) -> Result<EscrowMeta, OpError> {
    let file = format!("{v}.escrow");
    let stored = safe_fs::read_checked(&dir(c).join(&file), safe_fs::Expect::private(0), 1 << 20)
        .map_err(io)?;
    if let Some(meta) = stored.and_then(|b| serde_json::from_slice::<EscrowMeta>(&b).ok()) {
        return Ok(meta);
    }
    let escrow = c
        .escrow
        .as_ref()
        .ok_or_else(|| OpError::Failed("no [escrow] server is configured".into()))?;
    let recipient: age::x25519::Recipient = escrow
        .recipient
        .parse()
        .map_err(|e| OpError::Failed(format!("[escrow] recipient: {e}")))?;
    let ciphertext = age::encrypt(&recipient, key.expose())
        .map_err(|e| OpError::Failed(format!("encrypting to the escrow recipient: {e}")))?;
    let sha256 = hex(&sha2::Sha256::digest(&ciphertext));
    let id = keyward_sys::random::service_secret().map_err(OpError::Store)?;
    let rotation_id = String::from_utf8_lossy(&id.expose()[..32]).into_owned();
    let meta = EscrowMeta {
        rotation_id,
        ciphertext,
        sha256,
    };
    let json = serde_json::to_vec(&meta).map_err(|e| OpError::Failed(e.to_string()))?;
    safe_fs::write_atomic(&dir(c), &file, &json, 0o600).map_err(io)?;
    service::failpoint("recovery-escrow.sealed");
    Ok(meta)
}

/// Recovery slots by state.
fn recovery_slots(store: &mut LuksStore, state: TokenState) -> Result<Vec<SlotId>, OpError> {
    let s = store.state().map_err(OpError::Store)?;
    Ok(s.keyward_tokens()
        .filter(|(_, t)| t.role == Role::Recovery && t.state == state)
        .filter_map(|(_, t)| t.keyslot)
        .collect())
}

/// Drop a pending rotation older than `[policy] pending_max_age_secs`: its slot is revoked and
/// its key forgotten (the previous key was valid all along; the agent begins afresh). Part of
/// the reconcile pass run at start-up and before every operation.
pub(crate) fn expire_pending(c: &Config, v: &Volume, store: &mut LuksStore) -> Result<(), OpError> {
    let now = std::time::SystemTime::now();
    let max = std::time::Duration::from_secs(c.policy.pending_max_age_secs);
    let s = store.state().map_err(OpError::Store)?;
    let stale: Vec<SlotId> = s
        .keyward_tokens()
        .filter(|(_, t)| t.role == Role::Recovery && t.state == TokenState::Pending)
        .filter(|(_, t)| now.duration_since(t.created).is_ok_and(|age| age > max))
        .filter_map(|(_, t)| t.keyslot)
        .collect();
    if stale.is_empty() {
        return Ok(());
    }
    for slot in &stale {
        store.revoke(*slot).map_err(OpError::Store)?;
        eprintln!(
            "keyward-helper: {}: pending recovery key in keyslot {slot} is older than {}s; revoked",
            v.name, c.policy.pending_max_age_secs
        );
    }
    service::failpoint("recovery-expire.revoked");
    drop_pending(c, &v.name)
}

/// Start-up: finish what a crash in the middle of a rotation's commit left behind. The
/// commit marks the new slot active, then retires the previous recovery slots, then deletes
/// the stored key; a crash between those steps leaves two committed recovery keys, or the
/// committed key still on disk (allowed there only while pending). The newest committed slot
/// stays — the one the stored key opens, else the most recently made — and the others go, as
/// the commit would have done; a stored key with no pending slot is deleted. Returns what was
/// done, for the audit log.
pub(crate) fn settle_at_start(
    c: &Config,
    v: &Volume,
    store: &mut LuksStore,
) -> Result<Vec<String>, OpError> {
    let mut done = Vec::new();
    let key = load_pending(c, &v.name)?;
    let state = store.state().map_err(OpError::Store)?;
    let mut active: Vec<(std::time::SystemTime, SlotId)> = state
        .keyward_tokens()
        .filter(|(_, t)| t.role == Role::Recovery && t.state == TokenState::Active)
        .filter_map(|(_, t)| t.keyslot.map(|s| (t.created, s)))
        .collect();
    active.sort();
    if active.len() > 1 {
        let mut newest = None;
        if let Some(k) = &key {
            for (_, s) in &active {
                if store.verify(*s, k).map_err(OpError::Store)? {
                    newest = Some(*s);
                }
            }
        }
        let by_age = match active.as_slice() {
            [.., (a, _), (b, last)] if a < b => Some(*last),
            _ => None,
        };
        if let Some(keep) = newest.or(by_age) {
            for (_, s) in active.iter().filter(|(_, s)| *s != keep) {
                store.revoke(*s).map_err(OpError::Store)?;
                done.push(format!(
                    "retired recovery keyslot {s}, which an interrupted commit of keyslot {keep} had left"
                ));
            }
        }
    }
    let pending_slots = recovery_slots(store, TokenState::Pending)?;
    if key.is_some() && pending_slots.is_empty() {
        drop_pending(c, &v.name)?;
        done.push("deleted a stored recovery key that is no longer pending".into());
    }
    Ok(done)
}

/// The pending slot the stored pending key opens, revoking pending slots nobody holds a key
/// for and forgetting a stored key whose slot never came to be.
fn settle_pending(
    c: &Config,
    v: &Volume,
    store: &mut LuksStore,
) -> Result<Option<(SlotId, Secret)>, OpError> {
    expire_pending(c, v, store)?;
    let key = load_pending(c, &v.name)?;
    let mut found = None;
    for slot in recovery_slots(store, TokenState::Pending)? {
        let opens = match &key {
            Some(k) if found.is_none() => store.verify(slot, k).map_err(OpError::Store)?,
            _ => false,
        };
        if opens {
            found = Some(slot);
        } else {
            store.revoke(slot).map_err(OpError::Store)?;
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

/// The pending key (made now if there is none): sealed before its slot exists.
fn pending_or_new(c: &Config, name: &VolumeName) -> Result<(SlotId, Secret), OpError> {
    let v = configured(c, name)?;
    let mut store = open(c, v)?;
    let (_, service) = service::working(c, v, &mut store)?;
    if let Some(found) = settle_pending(c, v, &mut store)? {
        return Ok(found);
    }
    let key = keyward_sys::random::recovery_key().map_err(OpError::Store)?;
    seal_pending(c, name, &key)?;
    let req = GrantRequest {
        role: Role::Recovery,
        pending: true,
    };
    match store.grant(&req, Authority::Service(&service), &key) {
        Ok(slot) => Ok((slot, key)),
        Err(e) => {
            drop_pending(c, name)?;
            Err(OpError::Store(e))
        }
    }
}

/// Keep a pending key root-only in `pending/<volume>` until its commit.
pub(crate) fn seal_pending(c: &Config, name: &VolumeName, key: &Secret) -> Result<(), OpError> {
    safe_fs::ensure_dir(&dir(c), 0, 0, 0o700).map_err(io)?;
    safe_fs::write_atomic(&dir(c), name.as_str(), key.expose(), 0o600).map_err(io)?;
    service::failpoint("recovery-begin.sealed");
    Ok(())
}

/// The standalone commit's proof that the admin stored the key: its last group, typed back.
pub(crate) fn check_confirm(key: &Secret, confirm: &Secret) -> Result<(), OpError> {
    let typed = Secret::from_vec(recovery_key::normalize_group(confirm.expose()));
    let expected = Secret::from_vec(recovery_key::normalize_group(recovery_key::last_group(key)));
    if expected.ct_eq(&typed) {
        Ok(())
    } else {
        Err(OpError::Refused("the typed group does not match the key's last group; nothing committed, the current recovery key stays valid".into()))
    }
}

/// The escrowed commit's proof: a receipt the pinned server key signed for this device,
/// volume, rotation and ciphertext. Returns where the key is escrowed.
pub(crate) fn check_receipt(
    c: &Config,
    name: &VolumeName,
    key: &Secret,
    receipt: &Receipt,
) -> Result<EscrowRef, OpError> {
    let escrow = c
        .escrow
        .as_ref()
        .ok_or_else(|| OpError::Failed("no [escrow] server is configured".into()))?;
    let device = this_device(c, escrow)?;
    let meta = escrow_meta(c, name, key)?;
    receipt
        .verify(
            &escrow.server_signing_key,
            &device,
            name,
            &meta.rotation_id,
            &meta.sha256,
        )
        .map_err(|e| OpError::Refused(format!("receipt refused: {e}; nothing committed")))?;
    Ok(EscrowRef {
        id: receipt.escrow_id.clone(),
        sha256: meta.sha256,
    })
}

/// Commit `pending`, then revoke the recovery slots it replaces.
fn commit_and_retire(
    c: &Config,
    name: &VolumeName,
    store: &mut LuksStore,
    pending: SlotId,
    escrow: Option<EscrowRef>,
) -> Result<Reply, OpError> {
    let old = recovery_slots(store, TokenState::Active)?;
    store.commit(pending, escrow).map_err(OpError::Store)?;
    service::failpoint("recovery-commit.committed");
    for s in &old {
        store.revoke(*s).map_err(OpError::Store)?;
    }
    service::failpoint("recovery-commit.retired");
    drop_pending(c, name)?;
    Ok(Reply::RecoveryCommitted {
        slot: pending.get(),
        retired: old.iter().map(|s| s.get()).collect(),
    })
}

/// Standalone step 1 (idempotent): the pending key itself, for the admin's terminal.
pub fn begin(c: &Config, name: &VolumeName) -> Result<Reply, OpError> {
    let v = configured(c, name)?;
    if v.kind == VolumeKind::FileVault {
        return filevault::begin(c, v);
    }
    let (slot, key) = pending_or_new(c, name)?;
    Ok(Reply::RecoveryPending {
        slot: slot.get(),
        key: WireSecret::from_secret(&key),
    })
}

/// Standalone step 2: commit when the admin has typed the last group back.
pub fn commit(
    c: &Config,
    name: &VolumeName,
    slot: u32,
    confirm: &Secret,
) -> Result<Reply, OpError> {
    let v = configured(c, name)?;
    if v.kind == VolumeKind::FileVault {
        return filevault::commit(c, v, slot, confirm);
    }
    let mut store = open(c, v)?;
    let Some((pending, key)) = settle_pending(c, v, &mut store)? else {
        return Err(OpError::Failed(format!(
            "{name} has no pending recovery key"
        )));
    };
    if pending.get() != slot {
        return Err(OpError::Failed(format!(
            "the pending recovery key is in keyslot {pending}, not {slot}"
        )));
    }
    check_confirm(&key, confirm)?;
    commit_and_retire(c, name, &mut store, pending, None)
}

/// Escrowed step 1 (idempotent): only the ciphertext to the escrow server's recipient.
pub fn escrow_begin(c: &Config, name: &VolumeName) -> Result<Reply, OpError> {
    let v = configured(c, name)?;
    if v.kind == VolumeKind::FileVault {
        return filevault::escrow_begin(c, v);
    }
    let (slot, key) = pending_or_new(c, name)?;
    let meta = escrow_meta(c, name, &key)?;
    Ok(Reply::RecoveryEscrow {
        slot: slot.get(),
        rotation_id: meta.rotation_id,
        ciphertext: meta.ciphertext,
        sha256: meta.sha256,
    })
}

/// Escrowed step 2: commit on a receipt the pinned server key signed for this device, volume,
/// rotation and ciphertext; otherwise nothing changes and the current key stays valid.
pub fn escrow_commit(c: &Config, name: &VolumeName, receipt: &Receipt) -> Result<Reply, OpError> {
    let v = configured(c, name)?;
    if v.kind == VolumeKind::FileVault {
        return filevault::escrow_commit(c, v, receipt);
    }
    let mut store = open(c, v)?;
    let Some((pending, key)) = settle_pending(c, v, &mut store)? else {
        return Err(OpError::Failed(format!(
            "{name} has no pending recovery key"
        )));
    };
    let escrowed = check_receipt(c, name, &key, receipt)?;
    commit_and_retire(c, name, &mut store, pending, Some(escrowed))
}

const DEVICE_FILE: &str = "device_id";

/// This device's id at the escrow server: what enrollment recorded, else `[escrow] device_id`.
/// Receipts and signed commands must name it.
pub(crate) fn this_device(c: &Config, escrow: &Escrow) -> Result<String, OpError> {
    device_id(c)?
        .or_else(|| escrow.device_id.clone())
        .ok_or_else(|| OpError::Failed("this device is not enrolled (run `keyward enroll`)".into()))
}

/// The device id enrollment recorded (root-only state), if any.
fn device_id(c: &Config) -> Result<Option<String>, OpError> {
    let path = c.state_dir.join(DEVICE_FILE);
    let raw = safe_fs::read_checked(&path, safe_fs::Expect::private(0), 256).map_err(io)?;
    Ok(raw.map(|b| String::from_utf8_lossy(&b).trim().to_owned()))
}

/// Record the device id the escrow server assigned (`keyward enroll`).
pub fn set_device(c: &Config, id: &str) -> Result<Reply, OpError> {
    let ok = (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !ok {
        return Err(OpError::Usage(
            "device id must be 1-64 of A-Z, a-z, 0-9, '-' and '_'".into(),
        ));
    }
    safe_fs::write_atomic(&c.state_dir, DEVICE_FILE, id.as_bytes(), 0o600).map_err(io)?;
    Ok(Reply::DeviceSet)
}

/// Drop the pending key and its slot.
pub fn abort(c: &Config, name: &VolumeName) -> Result<Reply, OpError> {
    let v = configured(c, name)?;
    if v.kind == VolumeKind::FileVault {
        return filevault::abort(c, v);
    }
    let mut store = open(c, v)?;
    let pending = recovery_slots(&mut store, TokenState::Pending)?;
    for s in &pending {
        store.revoke(*s).map_err(OpError::Store)?;
    }
    service::failpoint("recovery-abort.revoked");
    drop_pending(c, name)?;
    Ok(Reply::RecoveryAborted {
        slot: pending.first().map(|s| s.get()),
    })
}
