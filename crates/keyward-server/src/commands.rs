//! Signed device commands, server side: an admin issues one (`keyward-server command create`),
//! the server signs it with its Ed25519 key (`keyward_core::command`: device id, issue and
//! expiry times, a 128-bit random id) and keeps it; every check-in of that device carries it
//! until the device reports its fate or it expires. The device's helper verifies it against
//! the pinned key, the device id, expiry and its own journal of used ids, so neither the
//! network nor the agent can forge, replay or redirect one. Issuing is audited.

use keyward_core::command::{Action, Command, SignedCommand};
use keyward_core::schedule::{CommandReport, CommandStatus};
use sqlx::Row;

use crate::identity::Identity;
use crate::store::Store;

/// Default lifetime of a command.
pub const DEFAULT_TTL_SECS: u64 = 24 * 3600;

fn int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Sign and store a command for `device`; returns its id.
pub async fn issue(
    store: &Store,
    identity: &Identity,
    device: &str,
    action: Action,
    ttl_secs: u64,
    who: &str,
) -> Result<String, String> {
    match store.device(device).await? {
        None => {
            return Err(format!(
                "no enrolled device {}",
                keyward_core::quote(device)
            ))
        }
        Some(d) if d.revoked.is_some() => {
            return Err(format!(
                "device {} is revoked: it would never fetch the command",
                keyward_core::quote(device)
            ))
        }
        Some(_) => {}
    }
    if ttl_secs == 0 || ttl_secs > keyward_core::command::MAX_LIFETIME_SECS {
        return Err("the lifetime must be between 1 s and 7 days".into());
    }
    let mut raw = [0u8; 16];
    getrandom::fill(&mut raw).map_err(|e| e.to_string())?;
    let id = format!("cmd-{}", keyward_core::hex::encode(&raw));
    let issued = crate::clock::unix_secs();
    let command = Command {
        id: id.clone(),
        device: device.to_owned(),
        issued,
        expires: issued + ttl_secs,
        action,
    };
    let kind = command.action.kind().to_owned();
    let summary = serde_json::to_string(&command.action).map_err(|e| e.to_string())?;
    let signed = SignedCommand::sign(command, &identity.signing);
    let json = serde_json::to_string(&signed).map_err(|e| e.to_string())?;
    let mut tx = store.pool().begin().await.map_err(|e| e.to_string())?;
    sqlx::query(
        "INSERT INTO commands (id, device, issued, expires, kind, signed, who, status) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, 'pending')",
    )
    .bind(&id)
    .bind(device)
    .bind(int(issued))
    .bind(int(issued + ttl_secs))
    .bind(&kind)
    .bind(&json)
    .bind(who)
    .execute(&mut *tx)
    .await
    .map_err(|e| e.to_string())?;
    sqlx::query(
        "INSERT INTO audit (at, who, action, device, volume, reason) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(crate::clock::now())
    .bind(who)
    .bind(format!("command-{kind}"))
    .bind(device)
    .bind(None::<String>)
    .bind(format!("{id}: {summary}"))
    .execute(&mut *tx)
    .await
    .map_err(|e| e.to_string())?;
    tx.commit().await.map_err(|e| e.to_string())?;
    Ok(id)
}

/// At most this many commands go out with one check-in.
pub const MAX_DELIVERED: usize = 16;

/// Record what a device reported about its commands (only its own, only pending ones), in the
/// writer's transaction.
pub async fn record(
    conn: &mut sqlx::AnyConnection,
    device: &str,
    reports: &[CommandReport],
) -> Result<(), sqlx::Error> {
    for r in reports {
        let status = match r.status {
            CommandStatus::Done => "done",
            CommandStatus::Refused => "refused",
            CommandStatus::Failed => "failed",
            _ => "unknown",
        };
        let detail: String = r.detail.chars().take(500).collect();
        sqlx::query(
            "UPDATE commands SET status = $1, detail = $2, reported = $3 \
             WHERE id = $4 AND device = $5 AND status = 'pending'",
        )
        .bind(status)
        .bind(detail)
        .bind(crate::clock::now())
        .bind(&r.id)
        .bind(device)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// The commands to deliver at these devices' check-ins, pending and unexpired, oldest first
/// (at most [`MAX_DELIVERED`] each): the signed JSON by device.
pub async fn pending(
    conn: &mut sqlx::AnyConnection,
    devices: &[&str],
) -> Result<std::collections::HashMap<String, Vec<String>>, sqlx::Error> {
    let mut by_device: std::collections::HashMap<String, Vec<String>> = Default::default();
    for chunk in devices.chunks(crate::sql::ROWS_PER_STATEMENT) {
        let sql = format!(
            "SELECT device, signed FROM commands WHERE status = 'pending' AND expires > $1 \
             AND device IN ({}) ORDER BY device, issued, id",
            crate::sql::numbered(2, chunk.len())
        );
        let mut q = sqlx::query(&sql).bind(int(crate::clock::unix_secs()));
        for d in chunk {
            q = q.bind(*d);
        }
        for row in q.fetch_all(&mut *conn).await? {
            let list = by_device.entry(row.try_get("device")?).or_default();
            if list.len() < MAX_DELIVERED {
                list.push(row.try_get("signed")?);
            }
        }
    }
    Ok(by_device)
}

/// One command as listed.
#[derive(Debug, serde::Serialize)]
pub struct Listed {
    /// Its id.
    pub id: String,
    /// The device.
    pub device: String,
    /// What it asks for.
    pub kind: String,
    /// `pending`, `done`, `refused`, `failed`, or `expired` (pending past its expiry).
    pub status: String,
    /// The device's words.
    pub detail: Option<String>,
    /// Who issued it.
    pub who: String,
}

/// Commands, newest first (of one device, or all).
pub async fn list(store: &Store, device: Option<&str>) -> Result<Vec<Listed>, String> {
    let rows = sqlx::query(
        "SELECT id, device, kind, status, detail, who, expires FROM commands \
         WHERE ($1 = '' OR device = $1) ORDER BY issued DESC, id",
    )
    .bind(device.unwrap_or(""))
    .fetch_all(store.pool())
    .await
    .map_err(|e| e.to_string())?;
    let now = int(crate::clock::unix_secs());
    rows.iter()
        .map(|r| {
            let get = |c: &str| r.try_get::<String, _>(c).map_err(|e| e.to_string());
            let mut status = get("status")?;
            let expires: i64 = r.try_get("expires").map_err(|e| e.to_string())?;
            if status == "pending" && expires <= now {
                status = "expired".into();
            }
            Ok(Listed {
                id: get("id")?,
                device: get("device")?,
                kind: get("kind")?,
                status,
                detail: r.try_get("detail").map_err(|e| e.to_string())?,
                who: get("who")?,
            })
        })
        .collect()
}
