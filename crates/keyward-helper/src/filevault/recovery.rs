//! FileVault's personal recovery key, rotated with the same protocol as a LUKS2 recovery slot
//! (standalone: shown once and confirmed; escrowed: ciphertext out, signed receipt in), with
//! the one difference macOS imposes: `fdesetup changerecovery` retires the old key the moment
//! it makes the new one. So the new key is validated before keyward forgets the old one's
//! record (keyward-macos), sealed root-only in `pending/<volume>` straight after, and stays
//! `pending` — never counted as a way in — until the receipt or the confirmation. The account
//! holders (at least the service account) are the ways in throughout.
//!
//! A pending key whose sealed copy is lost (a crash between `changerecovery` and the seal), or
//! that is older than `[policy] pending_max_age_secs`, or that is aborted, is recorded as in
//! force and *not escrowed* (FileVault cannot go back); status says so and the agent's schedule
//! rotates again.

use keyward_core::config::{Config, Volume};
use keyward_core::escrow::Receipt;
use keyward_core::ipc::{Reply, WireSecret};
use keyward_core::token::{EscrowRef, Role, TokenState};
use keyward_core::{Secret, SlotId};
use keyward_macos::registry::Journal;

use super::{mac_failure, with_store, working, Store};
use crate::error::OpError;
use crate::recovery::{
    check_confirm, check_receipt, drop_pending, escrow_meta, load_pending, seal_pending,
};

/// The pending recovery key's slot and creation time, from keyward's registry.
fn pending_entry(s: &mut Store<'_>) -> Result<Option<(SlotId, std::time::SystemTime)>, OpError> {
    let reg = s.journal_mut().load().map_err(mac_failure)?;
    Ok(reg
        .entries
        .iter()
        .filter(|e| e.token.role == Role::Recovery && e.token.state == TokenState::Pending)
        .find_map(|e| e.token.keyslot.map(|slot| (slot, e.token.created))))
}

/// The pending key and its slot, if the sealed copy is there and still the key in force;
/// a pending record without it (or past its age) is given up (in force, not escrowed).
fn settle_pending(
    c: &Config,
    v: &Volume,
    s: &mut Store<'_>,
) -> Result<Option<(SlotId, Secret)>, OpError> {
    // No reconcile here: `working` (begin) and `commit_recovery` (commit) each run one, and an
    // interrupted intent is never `pending`.
    let key = load_pending(c, &v.name)?;
    let Some((slot, created)) = pending_entry(s)? else {
        drop_pending(c, &v.name)?;
        return Ok(None);
    };
    let max = std::time::Duration::from_secs(c.policy.pending_max_age_secs);
    let expired = std::time::SystemTime::now()
        .duration_since(created)
        .is_ok_and(|age| age > max);
    let found = match key {
        Some(k) if !expired && s.verify_slot(slot, &k).map_err(mac_failure)? => Some((slot, k)),
        _ => None,
    };
    if found.is_none() {
        s.abandon_pending_recovery(slot).map_err(mac_failure)?;
        drop_pending(c, &v.name)?;
        eprintln!(
            "keyward-helper: {}: pending FileVault recovery key (slot {slot}) given up; it stays in force, not escrowed, until the next rotation",
            v.name
        );
    }
    Ok(found)
}

/// The pending key (a new one made now if there is none), sealed before it is returned.
fn pending_or_new(c: &Config, v: &Volume) -> Result<(SlotId, Secret), OpError> {
    with_store(c, v, |s| {
        working(s, v)?;
        if let Some(found) = settle_pending(c, v, s)? {
            return Ok(found);
        }
        let p = s.rotate_recovery().map_err(mac_failure)?;
        if let Err(e) = seal_pending(c, &v.name, &p.key) {
            // The key is in force and known to nobody: record it so, and say what failed.
            s.abandon_pending_recovery(p.slot).map_err(mac_failure)?;
            return Err(e);
        }
        Ok((p.slot, p.key))
    })
}

/// Commit the pending key (after its proof), recording where it is escrowed. FileVault
/// already retired the previous key when it made this one, so nothing else is retired.
fn commit_pending(
    c: &Config,
    v: &Volume,
    slot: Option<u32>,
    prove: impl FnOnce(&Secret) -> Result<Option<EscrowRef>, OpError>,
) -> Result<Reply, OpError> {
    with_store(c, v, |s| {
        let Some((pending, key)) = settle_pending(c, v, s)? else {
            return Err(OpError::Failed(format!(
                "{} has no pending recovery key",
                v.name
            )));
        };
        if slot.is_some_and(|n| n != pending.get()) {
            return Err(OpError::Failed(format!(
                "the pending recovery key is slot {pending}, not {slot:?}"
            )));
        }
        let escrow = prove(&key)?;
        s.commit_recovery(pending, escrow).map_err(mac_failure)?;
        drop_pending(c, &v.name)?;
        Ok(Reply::RecoveryCommitted {
            slot: pending.get(),
            retired: Vec::new(),
        })
    })
}

/// Standalone step 1: the pending key itself, for the admin's terminal.
pub fn begin(c: &Config, v: &Volume) -> Result<Reply, OpError> {
    let (slot, key) = pending_or_new(c, v)?;
    Ok(Reply::RecoveryPending {
        slot: slot.get(),
        key: WireSecret::from_secret(&key),
    })
}

/// Standalone step 2: commit when the admin has typed the last group back.
pub fn commit(c: &Config, v: &Volume, slot: u32, confirm: &Secret) -> Result<Reply, OpError> {
    commit_pending(c, v, Some(slot), |key| {
        check_confirm(key, confirm).map(|()| None)
    })
}

/// Escrowed step 1: only the ciphertext to the escrow server's recipient.
pub fn escrow_begin(c: &Config, v: &Volume) -> Result<Reply, OpError> {
    let (slot, key) = pending_or_new(c, v)?;
    let meta = escrow_meta(c, &v.name, &key)?;
    Ok(Reply::RecoveryEscrow {
        slot: slot.get(),
        rotation_id: meta.rotation_id,
        ciphertext: meta.ciphertext,
        sha256: meta.sha256,
    })
}

/// Escrowed step 2: commit on the server's signed receipt.
pub fn escrow_commit(c: &Config, v: &Volume, receipt: &Receipt) -> Result<Reply, OpError> {
    commit_pending(c, v, None, |key| {
        check_receipt(c, &v.name, key, receipt).map(Some)
    })
}

/// Give up on the pending key: FileVault cannot go back, so it stays in force, not escrowed.
pub fn abort(c: &Config, v: &Volume) -> Result<Reply, OpError> {
    with_store(c, v, |s| {
        let pending = pending_entry(s)?;
        if let Some((slot, _)) = pending {
            s.abandon_pending_recovery(slot).map_err(mac_failure)?;
        }
        drop_pending(c, &v.name)?;
        Ok(Reply::RecoveryAborted {
            slot: pending.map(|(slot, _)| slot.get()),
        })
    })
}
