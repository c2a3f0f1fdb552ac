//! `keyward-server backup` and `restore`: the identity file and every durable table in one
//! JSON document, encrypted with age to a passphrase (scrypt) read from stdin — a backup holds
//! the key that decrypts every escrow, so it never exists in the clear. The dump is logical,
//! so a backup restores into either database (also a way from SQLite to PostgreSQL). Restore
//! goes only into an empty state directory and an empty database, in one transaction.
//! Accounts (with their password hashes and roles), API tokens (hashes only), reveal requests
//! signed commands and webhook events not yet delivered are kept: a restored server is the
//! same team's, and still tells what it had not told yet. Request nonces,
//! sessions, single sign-ons under way and login failures are not: they expire anyway. A
//! backup made before a table existed restores with that table empty.

use std::path::Path;

use base64::Engine;
use serde_json::{Map, Value};
use sqlx::{AnyPool, Row};
use zeroize::Zeroizing;

use crate::identity::Identity;
use crate::store::Store;

const FORMAT: &str = "keyward-server backup v1";

#[derive(Clone, Copy)]
enum Kind {
    Text,
    OptText,
    Int,
    OptInt,
    /// An integer a backup of an older version may lack: restored as 0.
    IntOrZero,
    Blob,
}

/// A table: its name, its dump order, its columns.
type Table = (&'static str, &'static str, &'static [(&'static str, Kind)]);

/// Tables and their columns, in restore order.
const TABLES: &[Table] = &[
    (
        "devices",
        "id",
        &[
            ("id", Kind::Text),
            ("key", Kind::Text),
            ("created", Kind::Text),
            // Absent from backups made before revocation existed: restored as not revoked.
            ("revoked", Kind::OptText),
            ("revoked_by", Kind::OptText),
        ],
    ),
    (
        "tokens",
        "hash",
        // A token from a backup made before tokens expired restores with expiry 0: expired.
        &[
            ("hash", Kind::Text),
            ("used", Kind::Int),
            ("created", Kind::IntOrZero),
            ("expires", Kind::IntOrZero),
            ("revoked", Kind::IntOrZero),
        ],
    ),
    (
        "escrows",
        "created, id",
        &[
            ("id", Kind::Text),
            ("device", Kind::Text),
            ("volume", Kind::Text),
            ("rotation_id", Kind::Text),
            ("sha256", Kind::Text),
            ("ciphertext", Kind::Blob),
            ("created", Kind::Text),
            ("rotate_after_use", Kind::Int),
        ],
    ),
    (
        "audit",
        "seq",
        &[
            ("at", Kind::Text),
            ("who", Kind::Text),
            ("action", Kind::Text),
            ("device", Kind::OptText),
            ("volume", Kind::OptText),
            ("reason", Kind::OptText),
        ],
    ),
    (
        "checkins",
        "device",
        &[
            ("device", Kind::Text),
            ("at", Kind::Text),
            ("report", Kind::Text),
        ],
    ),
    (
        "commands",
        "issued, id",
        &[
            ("id", Kind::Text),
            ("device", Kind::Text),
            ("issued", Kind::Int),
            ("expires", Kind::Int),
            ("kind", Kind::Text),
            ("signed", Kind::Text),
            ("who", Kind::Text),
            ("status", Kind::Text),
            ("detail", Kind::OptText),
            ("reported", Kind::OptText),
        ],
    ),
    (
        "admins",
        "name",
        &[
            ("name", Kind::Text),
            ("hash", Kind::Text),
            ("created", Kind::Text),
            ("role", Kind::Text),
            // The TOTP secret, sealed to the identity this backup also holds: a restored
            // account keeps its second factor (and its last used step, so no code is reused).
            ("totp", Kind::OptText),
            ("totp_step", Kind::IntOrZero),
        ],
    ),
    (
        "api_tokens",
        "name",
        &[
            ("name", Kind::Text),
            ("hash", Kind::Text),
            ("role", Kind::Text),
            ("created", Kind::Int),
        ],
    ),
    (
        "reveal_requests",
        "created, id",
        &[
            ("id", Kind::Text),
            ("device", Kind::Text),
            ("volume", Kind::Text),
            ("reason", Kind::Text),
            ("requester", Kind::Text),
            ("created", Kind::Int),
            ("state", Kind::Text),
            ("decided_by", Kind::OptText),
            ("decided", Kind::OptInt),
            ("expires", Kind::Int),
            ("revealed", Kind::OptInt),
        ],
    ),
    (
        // Webhook events not yet delivered, in the order they were made (a restore numbers
        // them anew in that order); a lease held by the old server is not kept.
        "notify_outbox",
        "seq",
        &[
            ("id", Kind::Text),
            ("event", Kind::Text),
            ("device", Kind::Text),
            ("volume", Kind::Text),
            ("body", Kind::Text),
            ("created", Kind::Int),
            ("attempts", Kind::Int),
            ("next_attempt", Kind::Int),
            ("last_error", Kind::OptText),
        ],
    ),
];

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

async fn dump(pool: &AnyPool) -> Result<Map<String, Value>, String> {
    let mut tables = Map::new();
    for (table, order, columns) in TABLES {
        let names: Vec<&str> = columns.iter().map(|(c, _)| *c).collect();
        let sql = format!("SELECT {} FROM {table} ORDER BY {order}", names.join(", "));
        let rows = sqlx::query(&sql)
            .fetch_all(pool)
            .await
            .map_err(|e| e.to_string())?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let mut obj = Map::new();
            for (c, kind) in *columns {
                let v: Value = match kind {
                    Kind::Text => r.try_get::<String, _>(*c).map(Value::from),
                    Kind::OptText => r.try_get::<Option<String>, _>(*c).map(Value::from),
                    Kind::Int | Kind::IntOrZero => r.try_get::<i64, _>(*c).map(Value::from),
                    Kind::OptInt => r.try_get::<Option<i64>, _>(*c).map(Value::from),
                    Kind::Blob => r
                        .try_get::<Vec<u8>, _>(*c)
                        .map(|b| Value::from(b64().encode(b))),
                }
                .map_err(|e| format!("{table}.{c}: {e}"))?;
                obj.insert((*c).into(), v);
            }
            out.push(Value::Object(obj));
        }
        tables.insert((*table).into(), Value::Array(out));
    }
    Ok(tables)
}

/// Write an encrypted backup of `state`'s identity and `store` to `out` (0600, new file).
pub async fn backup(
    state: &Path,
    store: &Store,
    out: &Path,
    passphrase: age::secrecy::SecretString,
) -> Result<usize, String> {
    let identity = Identity::raw(state)?;
    let identity = std::str::from_utf8(&identity).map_err(|e| e.to_string())?;
    let doc = Zeroizing::new(
        serde_json::to_vec(&serde_json::json!({
            "format": FORMAT,
            "created": crate::clock::now(),
            "identity": identity,
            "tables": dump(store.pool()).await?,
        }))
        .map_err(|e| e.to_string())?,
    );
    let sealed =
        age::encrypt(&age::scrypt::Recipient::new(passphrase), &doc).map_err(|e| e.to_string())?;
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(out)
        .map_err(|e| format!("{}: {e}", out.display()))?;
    f.write_all(&sealed)
        .and_then(|()| f.sync_all())
        .map_err(|e| format!("{}: {e}", out.display()))?;
    Ok(sealed.len())
}

use std::os::unix::fs::OpenOptionsExt;

/// Restore a backup into an empty `state` directory and an empty `store`. Returns the rows
/// restored per table, in words.
pub async fn restore(
    state: &Path,
    store: &Store,
    input: &Path,
    passphrase: age::secrecy::SecretString,
) -> Result<String, String> {
    let sealed = std::fs::read(input).map_err(|e| format!("{}: {e}", input.display()))?;
    let doc = Zeroizing::new(
        age::decrypt(&age::scrypt::Identity::new(passphrase), &sealed)
            .map_err(|e| format!("cannot decrypt the backup (wrong passphrase?): {e}"))?,
    );
    let doc: Value = serde_json::from_slice(&doc).map_err(|e| e.to_string())?;
    if doc["format"] != FORMAT {
        return Err("not a keyward-server backup (or a newer format)".into());
    }
    let (devices, _, _) = store.counts().await?;
    if devices != 0 {
        return Err("the database is not empty; restore into a new one".into());
    }
    let identity = doc["identity"].as_str().ok_or("backup has no identity")?;
    let mut tx = store.pool().begin().await.map_err(|e| e.to_string())?;
    let mut counts = Vec::new();
    for (table, _, columns) in TABLES {
        let names: Vec<&str> = columns.iter().map(|(c, _)| *c).collect();
        let params: Vec<String> = (1..=columns.len()).map(|i| format!("${i}")).collect();
        let sql = format!(
            "INSERT INTO {table} ({}) VALUES ({})",
            names.join(", "),
            params.join(", ")
        );
        let rows = doc["tables"][table].as_array().cloned().unwrap_or_default();
        for row in &rows {
            let mut q = sqlx::query(&sql);
            for (c, kind) in *columns {
                let v = &row[*c];
                let bad = || format!("backup: {table}.{c} is malformed");
                q = match kind {
                    Kind::Text => q.bind(v.as_str().ok_or_else(bad)?.to_owned()),
                    Kind::OptText => q.bind(v.as_str().map(str::to_owned)),
                    Kind::Int => q.bind(v.as_i64().ok_or_else(bad)?),
                    Kind::OptInt if v.is_null() => q.bind(None::<i64>),
                    Kind::OptInt => q.bind(Some(v.as_i64().ok_or_else(bad)?)),
                    Kind::IntOrZero if v.is_null() => q.bind(0i64),
                    Kind::IntOrZero => q.bind(v.as_i64().ok_or_else(bad)?),
                    Kind::Blob => q.bind(
                        b64()
                            .decode(v.as_str().ok_or_else(bad)?)
                            .map_err(|_| bad())?,
                    ),
                };
            }
            q.execute(&mut *tx).await.map_err(|e| e.to_string())?;
        }
        counts.push(format!("{table} {}", rows.len()));
    }
    // The identity goes in last, just before the commit: a failed restore leaves neither.
    Identity::install(state, identity.as_bytes())?;
    if let Err(e) = tx.commit().await {
        let _ = std::fs::remove_file(state.join(crate::identity::FILE));
        return Err(e.to_string());
    }
    Ok(counts.join(", "))
}
