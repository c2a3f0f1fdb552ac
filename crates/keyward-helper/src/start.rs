//! Start-up, before anyone is served: finish or undo whatever a crash interrupted, on every
//! configured volume, and put each thing done on the record — a repaired header, every
//! reconcile action (naming whose right it touched), an interrupted recovery commit finished —
//! so a change a crash cut short between its header write and its audit record is still in
//! the chain. What reconcile is about to do is recorded before it acts, so a second crash in
//! the middle of it loses no record either.

use keyward_core::config::{Config, Volume};
use keyward_core::store::ReconcileAction;
use keyward_core::{Role, TokenId, TokenState, UnlockStore, VolumeState};
use keyward_sys::audit_file::AuditLog;

use crate::vault::luks::{open, LuksVault};
use crate::vault::luks::{recovery, service};
use crate::vault::{self, ServiceStanding};
use crate::{audit, luks};

/// Settle every volume; an audit record for each thing done. Fails only when the audit log
/// cannot be written (the helper then does not start).
pub fn settle_all(config: &Config, audit: &mut AuditLog) -> Result<(), String> {
    for v in &config.volumes {
        if let Some(settled) = vault::settle_by_itself(config, v) {
            if let Err(message) = settled {
                eprintln!("keyward-helper: {}: start-up reconcile: {message}", v.name);
            }
            continue;
        }
        let mut record = |op: &str, note: String| {
            eprintln!("keyward-helper: {}: {note}", v.name);
            audit
                .append(audit::event(op, &format!("ok: {}: {note}", v.name)))
                .map_err(|e| format!("audit log: {e}"))
        };
        // A header write the crash interrupted is restored first.
        match luks::repair_interrupted_write(&v.device, &config.lock_path(&v.name)) {
            Ok(None) => {}
            Ok(Some(note)) => record("header-repair", format!("repaired: {note}"))?,
            Err(e) => eprintln!("keyward-helper: {}: {e}", v.name),
        }
        // The work is on the record before it is done: a crash in the middle of it (the
        // record of what was done never written, and nothing left for the next start to do)
        // still leaves in the chain whose right an interrupted operation touched.
        match interrupted(config, v) {
            Ok(found) => {
                for note in found {
                    record("reconcile", note)?;
                }
            }
            Err(e) => eprintln!("keyward-helper: {}: start-up reconcile failed: {e}", v.name),
        }
        match reconcile(config, v) {
            Ok(done) => {
                for note in done {
                    record("reconcile", note)?;
                }
            }
            Err(e) => eprintln!("keyward-helper: {}: start-up reconcile failed: {e}", v.name),
        }
        let recovered = open(config, v)
            .and_then(|store| recovery::settle_at_start(&mut LuksVault::new(config, v, store)));
        match recovered {
            Ok(done) => {
                for note in done {
                    record("recovery-reconcile", note)?;
                }
            }
            Err(e) => eprintln!("keyward-helper: {}: start-up reconcile failed: {e}", v.name),
        }
        let settled = open(config, v)
            .and_then(|store| service::settle(&mut LuksVault::new(config, v, store)));
        match settled {
            Ok(ServiceStanding::Drift(slot)) => eprintln!(
                "keyward-helper: {}: the stored service secret opens no service slot ({slot})",
                v.name
            ),
            Ok(_) => {}
            Err(e) => eprintln!("keyward-helper: {}: start-up reconcile failed: {e}", v.name),
        }
    }
    Ok(())
}

/// Reconcile one LUKS2 volume; what was done, in words.
fn reconcile(config: &Config, v: &Volume) -> Result<Vec<String>, String> {
    let mut store = open(config, v).map_err(|e| e.to_string())?;
    let before = store.state().map_err(|e| e.to_string())?;
    let actions = store.reconcile().map_err(|e| e.to_string())?;
    Ok(actions.iter().map(|a| describe(&before, a)).collect())
}

/// What reconcile is about to finish or undo on one LUKS2 volume, in words.
fn interrupted(config: &Config, v: &Volume) -> Result<Vec<String>, String> {
    let mut store = open(config, v).map_err(|e| e.to_string())?;
    let state = store.state().map_err(|e| e.to_string())?;
    let slot = |s: Option<keyward_core::SlotId>| s.map_or_else(|| "none".into(), |s| s.to_string());
    Ok(state
        .keyward_tokens()
        .filter_map(|(tid, t)| {
            let who = whose(&state, tid);
            let what = match t.state {
                TokenState::Adding { next } => {
                    format!("an interrupted grant to {who} (keyslot {next}): undoing it")
                }
                TokenState::Rekeying { next } => format!(
                    "an interrupted rekey of {who} (keyslot {} to {next}, not verified): undoing it",
                    slot(t.keyslot)
                ),
                TokenState::Retiring { retire } if t.keyslot.is_none() => {
                    format!("an interrupted revoke of {who} (keyslot {retire}): finishing it")
                }
                TokenState::Retiring { retire } => format!(
                    "an interrupted rekey of {who} (keyslot {retire} to {}, verified): finishing it",
                    slot(t.keyslot)
                ),
                _ if t.keyslot.is_none_or(|s| state.slot(s).is_none()) => format!(
                    "the token of {who}, whose keyslot {} is gone: removing it",
                    slot(t.keyslot)
                ),
                _ => return None,
            };
            Some(format!("found {what}"))
        })
        .collect())
}

/// Whose right a token was, in words.
fn whose(state: &VolumeState, token: TokenId) -> String {
    match state.keyward_token(token).map(|t| &t.role) {
        Some(Role::User { name, uid }) => format!("user {name} (uid {uid})"),
        Some(Role::Service) => "the service account".into(),
        Some(Role::Recovery) => "the recovery key".into(),
        _ => format!("token {token}"),
    }
}

fn describe(before: &VolumeState, action: &ReconcileAction) -> String {
    let slot =
        |s: &Option<keyward_core::SlotId>| s.map_or_else(String::new, |s| format!(", keyslot {s}"));
    match action {
        ReconcileAction::UndidGrant { token, slot: s } => format!(
            "undid an interrupted grant to {}{}",
            whose(before, *token),
            slot(s)
        ),
        ReconcileAction::UndidRekey { token, slot: s } => format!(
            "undid an interrupted rekey of {}: the old keyslot stays{}",
            whose(before, *token),
            s.map_or_else(String::new, |s| format!(", new keyslot {s} destroyed"))
        ),
        ReconcileAction::FinishedRekey { token, slot: s } => {
            let revoke = before.keyward_token(*token).is_some_and(|t| {
                t.keyslot.is_none() && matches!(t.state, TokenState::Retiring { .. })
            });
            let what = if revoke { "revoke of" } else { "rekey of" };
            format!(
                "finished an interrupted {what} {}{}",
                whose(before, *token),
                slot(s)
            )
        }
        ReconcileAction::FinishedGrant { token, slot } => format!(
            "finished an interrupted grant to {}, keyslot {slot}",
            whose(before, *token)
        ),
        ReconcileAction::RemovedOrphan { token } => format!(
            "removed the token of {}, whose keyslot is gone",
            whose(before, *token)
        ),
        ReconcileAction::LeftForeignSlot { slot } => {
            format!("left keyslot {slot} alone: it does not look like keyward's work")
        }
        other => format!("{other:?}"),
    }
}
