//! The store: SQLite through sqlx (one migration, below). Devices, single-use enrollment
//! tokens (kept as SHA-256 only), used request nonces, escrowed ciphertexts, each device's latest
//! check-in report, and the audit of every key retrieval. Nonces live in the database, so several instances can share it.

use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions};
use std::str::FromStr;

const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS devices (id TEXT PRIMARY KEY, key TEXT NOT NULL, created TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS tokens (hash TEXT PRIMARY KEY, used INTEGER NOT NULL DEFAULT 0)",
    "CREATE TABLE IF NOT EXISTS nonces (device TEXT NOT NULL, nonce TEXT NOT NULL, PRIMARY KEY (device, nonce))",
    "CREATE TABLE IF NOT EXISTS escrows (id TEXT PRIMARY KEY, device TEXT NOT NULL, volume TEXT NOT NULL, \
     rotation_id TEXT NOT NULL, sha256 TEXT NOT NULL, ciphertext BLOB NOT NULL, created TEXT NOT NULL, \
     rotate_after_use INTEGER NOT NULL DEFAULT 0, UNIQUE (device, volume, rotation_id))",
    "CREATE TABLE IF NOT EXISTS audit (id INTEGER PRIMARY KEY AUTOINCREMENT, at TEXT NOT NULL, who TEXT NOT NULL, \
     action TEXT NOT NULL, device TEXT, volume TEXT, reason TEXT)",
    "CREATE TABLE IF NOT EXISTS checkins (device TEXT PRIMARY KEY, at TEXT NOT NULL, report TEXT NOT NULL)",
];

/// Open (creating if needed) and migrate.
pub async fn open(url: &str) -> Result<SqlitePool, String> {
    let opts = SqliteConnectOptions::from_str(url)
        .map_err(|e| e.to_string())?
        .create_if_missing(true)
        .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
        .synchronous(sqlx::sqlite::SqliteSynchronous::Full);
    let pool = SqlitePoolOptions::new()
        .max_connections(4)
        .connect_with(opts)
        .await
        .map_err(|e| e.to_string())?;
    for stmt in SCHEMA {
        sqlx::query(stmt)
            .execute(&pool)
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(pool)
}

/// Now, RFC 3339.
pub fn now() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}
