//! Recovery-key rotation, written once for every kind of volume. The key is made and sealed
//! root-only (`pending_key`) no later than its pending right exists (never counted as a way
//! in), and committed only on proof that someone holds it:
//!
//! * **escrowed** — the agent gets only the key's age ciphertext to the escrow server's
//!   recipient, and the commit needs the server's receipt, signed with its pinned Ed25519 key,
//!   for this device, volume, rotation and ciphertext;
//! * **standalone** (no server) — the key is shown once on the admin's terminal and committed
//!   when the admin types its last group back.
//!
//! Then the vault retires what the new key replaces and the sealed key is deleted. Until then
//! the old key stays valid (LUKS2); abort drops only the pending right. What differs by kind
//! (FileVault retires the old key when it makes the new one) is the vault's.

use keyward_core::config::{Config, Escrow, Volume};
use keyward_core::escrow::Receipt;
use keyward_core::ipc::{Reply, WireSecret};
use keyward_core::token::EscrowRef;
use keyward_core::{recovery_key, Secret, SlotId, VolumeName};
use keyward_sys::failpoint::failpoint;
use keyward_sys::safe_fs;

use crate::ctx::state_owner;
use crate::error::OpError;
use crate::pending_key::{self, io, EscrowRecord};
use crate::vault::{with_vault, Vault};

/// The pending key's escrow record: the stored one, or a fresh seal of `key` to the escrow
/// server's recipient, stored before it is returned.
fn escrow_meta(c: &Config, v: &VolumeName, key: &Secret) -> Result<EscrowRecord, OpError> {
    if let Some(stored) = pending_key::load_escrow(c, v)? {
        return Ok(stored);
    }
    let escrow = escrow_of(c)?;
    let recipient: keyward_core::seal::Recipient = escrow
        .recipient
        .parse()
        .map_err(|e| OpError::Failed(format!("[escrow] recipient: {e}")))?;
    let random = keyward_core::seal::SealRandomness::fill_with(getrandom::fill)
        .map_err(|e| OpError::Failed(format!("getrandom: {e}")))?;
    let ciphertext = keyward_core::seal::seal(&recipient, key.expose(), random)
        .map_err(|e| OpError::Failed(format!("encrypting to the escrow recipient: {e}")))?;
    let id = keyward_sys::random::service_secret()?;
    let meta = EscrowRecord {
        rotation_id: String::from_utf8_lossy(&id.expose()[..32]).into_owned(),
        sha256: keyward_core::hex::sha256(&ciphertext),
        ciphertext,
    };
    pending_key::store_escrow(c, v, &meta)?;
    failpoint("recovery-escrow.sealed");
    Ok(meta)
}

/// The configured escrow server.
fn escrow_of(c: &Config) -> Result<&Escrow, OpError> {
    (c.escrow.as_ref()).ok_or_else(|| OpError::Failed("no [escrow] server is configured".into()))
}

/// The standalone commit's proof that the admin stored the key: its last group, typed back.
pub(crate) fn check_confirm(key: &Secret, confirm: &Secret) -> Result<(), OpError> {
    if recovery_key::confirms(key, confirm) {
        Ok(())
    } else {
        Err(OpError::Refused(
            "the typed group does not match the key's last group; nothing committed, the current recovery key stays valid".into(),
        ))
    }
}

/// The escrowed commit's proof: a receipt the pinned server key signed for this device,
/// volume, rotation and ciphertext. Returns where the key is escrowed.
fn check_receipt(
    c: &Config,
    name: &VolumeName,
    key: &Secret,
    receipt: &Receipt,
) -> Result<EscrowRef, OpError> {
    let escrow = escrow_of(c)?;
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

/// The pending key (made now if there is none), sealed no later than its right exists.
pub(crate) fn pending_or_new(vault: &mut dyn Vault) -> Result<(SlotId, Secret), OpError> {
    let (_, service) = vault.working()?;
    if let Some(found) = vault.settle_pending_recovery()? {
        return Ok(found);
    }
    vault.new_pending_recovery(&service)
}

/// Commit the pending key once `prove` accepts it; `slot`, if given, must be the one pending.
pub(crate) fn commit_pending(
    c: &Config,
    vault: &mut dyn Vault,
    slot: Option<u32>,
    prove: impl FnOnce(&Secret) -> Result<Option<EscrowRef>, OpError>,
) -> Result<Reply, OpError> {
    let name = vault.name().clone();
    let Some((pending, key)) = vault.settle_pending_recovery()? else {
        return Err(OpError::Failed(format!(
            "{name} has no pending recovery key"
        )));
    };
    if let Some(n) = slot.filter(|n| *n != pending.get()) {
        return Err(OpError::Failed(format!(
            "the pending recovery key is in keyslot {pending}, not {n}"
        )));
    }
    let escrow = prove(&key)?;
    let retired = vault.commit_recovery(pending, escrow)?;
    pending_key::drop(c, &name)?;
    Ok(Reply::RecoveryCommitted {
        slot: pending.get(),
        retired: retired.iter().map(|s| s.get()).collect(),
    })
}

/// Standalone step 1 (idempotent): the pending key itself, for the admin's terminal.
pub fn begin(c: &Config, v: &Volume) -> Result<Reply, OpError> {
    let (slot, key) = with_vault(c, v, pending_or_new)?;
    Ok(Reply::RecoveryPending {
        slot: slot.get(),
        key: WireSecret::from_secret(&key),
    })
}

/// Standalone step 2: commit when the admin has typed the last group back.
pub fn commit(c: &Config, v: &Volume, slot: u32, confirm: &Secret) -> Result<Reply, OpError> {
    with_vault(c, v, |vault| {
        commit_pending(c, vault, Some(slot), |key| {
            check_confirm(key, confirm).map(|()| None)
        })
    })
}

/// Escrowed step 1 (idempotent): only the ciphertext to the escrow server's recipient.
pub fn escrow_begin(c: &Config, v: &Volume) -> Result<Reply, OpError> {
    let (slot, key) = with_vault(c, v, pending_or_new)?;
    let meta = escrow_meta(c, &v.name, &key)?;
    Ok(Reply::RecoveryEscrow {
        slot: slot.get(),
        rotation_id: meta.rotation_id,
        ciphertext: meta.ciphertext,
        sha256: meta.sha256,
    })
}

/// Escrowed step 2: commit on a receipt the pinned server key signed for this device, volume,
/// rotation and ciphertext; otherwise nothing changes and the current key stays valid.
pub fn escrow_commit(c: &Config, v: &Volume, receipt: &Receipt) -> Result<Reply, OpError> {
    with_vault(c, v, |vault| {
        commit_pending(c, vault, None, |key| {
            check_receipt(c, &v.name, key, receipt).map(Some)
        })
    })
}

/// Drop the pending key and its right.
pub fn abort(c: &Config, v: &Volume) -> Result<Reply, OpError> {
    let slot = with_vault(c, v, |vault| {
        let slot = vault.abort_recovery()?;
        pending_key::drop(c, &v.name)?;
        Ok(slot)
    })?;
    Ok(Reply::RecoveryAborted {
        slot: slot.map(SlotId::get),
    })
}

const DEVICE_FILE: &str = "device_id";

/// This device's id at the escrow server: what enrollment recorded, else `[escrow] device_id`.
/// Receipts and signed commands must name it.
pub(crate) fn this_device(c: &Config, escrow: &Escrow) -> Result<String, OpError> {
    let path = c.state_dir.join(DEVICE_FILE);
    let raw = safe_fs::read_checked(&path, safe_fs::Expect::private(state_owner(c).0), 256)
        .map_err(io)?;
    raw.map(|b| String::from_utf8_lossy(&b).trim().to_owned())
        .or_else(|| escrow.device_id.clone())
        .ok_or_else(|| OpError::Failed("this device is not enrolled (run `keyward enroll`)".into()))
}

/// Record the device id the escrow server assigned (`keyward enroll`).
pub fn set_device(c: &Config, id: &str) -> Result<Reply, OpError> {
    if !keyward_core::enrollment::device_id_ok(id) {
        return Err(OpError::Usage(
            "device id must be 1-64 of A-Z, a-z, 0-9, '-' and '_'".into(),
        ));
    }
    safe_fs::write_atomic(&c.state_dir, DEVICE_FILE, id.as_bytes(), 0o600).map_err(io)?;
    Ok(Reply::DeviceSet)
}
