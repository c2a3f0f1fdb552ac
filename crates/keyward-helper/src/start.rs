//! Start-up, before anyone is served: finish or undo whatever a crash interrupted, on every
//! configured volume, and put each thing done on the record — a repaired header, every
//! reconcile action (naming whose right it touched), an interrupted recovery commit finished —
//! so a change a crash cut short between its header write and its audit record is still in
//! the chain. What reconcile is about to do is recorded before it acts, so a second crash in
//! the middle of it loses no record either.

use keyward_core::config::{Config, Volume};
use keyward_core::{interrupted, StoreError, UnlockStore};
use keyward_sys::audit_file::AuditLog;

use crate::audit;
use crate::vault::luks::{self, open, LuksVault};
use crate::vault::{self, ServiceStanding};

/// Settle every volume; an audit record for each thing done. Fails only when the audit log
/// cannot be written (the helper then does not start).
pub fn settle_all(config: &Config, audit: &mut AuditLog) -> Result<(), String> {
    for v in &config.volumes {
        // A Mac's store finishes what a crash interrupted by itself, when the service standing
        // is read below; a LUKS2 volume is settled step by step first, each step on the record.
        if vault::settles_step_by_step(v) {
            settle_steps(config, v, audit)?;
        }
        let unusable = vault::with_vault(config, v, |vault| {
            let standing = vault.service()?;
            Ok(matches!(standing, ServiceStanding::Drift(_)).then(|| vault.unusable(&standing)))
        });
        match unusable {
            Ok(None) => {}
            Ok(Some(why)) => eprintln!("keyward-helper: {}: {why}", v.name),
            Err(e) => eprintln!("keyward-helper: {}: start-up reconcile failed: {e}", v.name),
        }
    }
    Ok(())
}

/// A LUKS2 volume's start-up: an interrupted header write, reconcile, an interrupted recovery
/// commit.
fn settle_steps(config: &Config, v: &Volume, audit: &mut AuditLog) -> Result<(), String> {
    // Each note of a step on the record (`op`); a step that failed is said on stderr.
    let mut record = |op: &str, notes: Result<Vec<String>, String>| {
        let notes = notes.unwrap_or_else(|e| {
            eprintln!("keyward-helper: {}: start-up reconcile failed: {e}", v.name);
            Vec::new()
        });
        for note in notes {
            eprintln!("keyward-helper: {}: {note}", v.name);
            audit
                .append(audit::event(op, &format!("ok: {}: {note}", v.name)))
                .map_err(|e| format!("audit log: {e}"))?;
        }
        Ok::<(), String>(())
    };
    // A header write the crash interrupted is restored first.
    match luks::repair_interrupted_write(&v.device, &config.lock_path(&v.name)) {
        Ok(note) => record(
            "header-repair",
            Ok(note.map(|n| format!("repaired: {n}")).into_iter().collect()),
        )?,
        Err(e) => eprintln!("keyward-helper: {}: {e}", v.name),
    }
    // The work is on the record before it is done: a crash in the middle of it (the
    // record of what was done never written, and nothing left for the next start to do)
    // still leaves in the chain whose right an interrupted operation touched.
    let found = on_store(config, v, |s| Ok(interrupted::found(&s.state()?)));
    record("reconcile", found)?;
    let done = on_store(config, v, |s| {
        let before = s.state()?;
        let actions = s.reconcile()?;
        Ok(actions
            .iter()
            .map(|a| interrupted::describe(&before, a))
            .collect())
    });
    record("reconcile", done)?;
    let recovered = open(config, v)
        .and_then(|store| LuksVault::new(config, v, store).settle_recovery_at_start());
    record("recovery-reconcile", recovered.map_err(|e| e.to_string()))?;
    Ok(())
}

/// `f` on `v`'s LUKS2 store; its error in words.
fn on_store(
    c: &Config,
    v: &Volume,
    f: impl FnOnce(&mut luks::LuksStore) -> Result<Vec<String>, StoreError>,
) -> Result<Vec<String>, String> {
    open(c, v)
        .and_then(|mut s| Ok(f(&mut s)?))
        .map_err(|e| e.to_string())
}
