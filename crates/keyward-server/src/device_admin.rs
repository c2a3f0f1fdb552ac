//! `keyward-server device list|revoke`: the admin's view of enrolled devices and the way to
//! cut one off. A revoked device stays in the database (its escrows stay retrievable and its
//! audit trail stays), but every request it signs is refused with 401 from the revocation's
//! commit on, at every instance (the writer reads the revocation in each batch, `writer/batch.rs`).

use crate::store::{AuditRecord, Revoked, Store};

/// Device commands.
#[derive(clap::Subcommand, Debug)]
pub enum DeviceAction {
    /// Every device with its state, last check-in and the escrow state of each volume.
    List {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        at: crate::Where,
    },
    /// Revoke a device: every API request it makes from now on gets 401 (audited; its
    /// escrowed keys stay retrievable with `key show`).
    Revoke {
        /// Device id (as `device list` shows it).
        device: String,
        /// Why (recorded in the audit log).
        #[arg(long, default_value = "revoked by an admin")]
        reason: String,
        #[command(flatten)]
        at: crate::Where,
    },
}

/// Longest reason kept.
const MAX_REASON: usize = 500;

/// Run a device command.
pub async fn run(action: DeviceAction) -> Result<(), String> {
    match action {
        DeviceAction::List { json, at } => {
            crate::checkin::list(&Store::open(&crate::db_url(&at)?).await?, json).await
        }
        DeviceAction::Revoke { device, reason, at } => {
            let store = Store::open(&crate::db_url(&at)?).await?;
            revoke(&store, &device, &reason, &crate::operator()).await
        }
    }
}

/// Revoke `device` on behalf of `who`; an unknown device is an error.
pub async fn revoke(store: &Store, device: &str, reason: &str, who: &str) -> Result<(), String> {
    let reason = reason.trim();
    if reason.is_empty() || reason.chars().count() > MAX_REASON {
        return Err(format!(
            "--reason must say why, in at most {MAX_REASON} characters"
        ));
    }
    let shown = keyward_core::quote(device);
    let record = AuditRecord {
        at: crate::clock::now(),
        who: who.to_owned(),
        action: "device-revoke".into(),
        device: Some(device.to_owned()),
        volume: None,
        reason: Some(reason.to_owned()),
    };
    match store.revoke_device(&record).await? {
        Revoked::Now => {
            eprintln!(
                "keyward-server: revoked {shown}; its requests are refused from now on (audited)"
            );
            Ok(())
        }
        Revoked::Already(r) => {
            eprintln!(
                "keyward-server: {shown} was already revoked at {} by {}",
                r.at.get(..19).unwrap_or(&r.at),
                keyward_core::quote(&r.by)
            );
            Ok(())
        }
        Revoked::Unknown => Err(format!("no enrolled device {shown}")),
    }
}
