//! Enrollment tokens: `keyward-server token create|list|revoke`, and the rules the writer
//! applies when a device spends one (`writer/batch.rs`). A token is 192 random bits, shown once and
//! stored as its SHA-256 only; it enrolls one device, before it expires (24 hours by default)
//! and unless an admin revoked it. Its id is the first 16 hex digits of that digest: enough
//! to name it in `list` and `revoke`, useless for enrolling. Creating and revoking are audited.

use std::collections::HashMap;
use std::time::Duration;

use sqlx::{AnyConnection, Row};

use crate::store::{AuditRecord, Store};

/// How long a token is valid unless `--expires-in` says otherwise.
pub const DEFAULT_LIFETIME: &str = "24h";
/// The longest lifetime a token may be given.
const MAX_LIFETIME: Duration = Duration::from_secs(90 * 24 * 3600);
/// Hex digits of a token's digest that name it.
const ID_LEN: usize = 16;

/// Why a token did not enroll a device (the message goes to the device's agent).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenRefused {
    /// No such token.
    #[error("enrollment token unknown")]
    Unknown,
    /// It enrolled a device already.
    #[error("enrollment token already used")]
    Used,
    /// Its lifetime is over.
    #[error("enrollment token expired: ask the server's admin for a new one")]
    Expired,
    /// An admin revoked it.
    #[error("enrollment token revoked")]
    Revoked,
}

/// Token commands.
#[derive(clap::Subcommand, Debug)]
pub enum TokenAction {
    /// Create single-use enrollment tokens, printed one a line (ids and expiry on stderr).
    Create {
        #[command(flatten)]
        at: crate::Where,
        /// How many tokens (for enrolling a fleet, or a load test, in one go).
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100_000))]
        count: u32,
        /// How long they stay valid (e.g. 30m, 24h, 7d; at most 90d).
        #[arg(long, value_name = "DURATION", default_value = DEFAULT_LIFETIME, value_parser = humantime::parse_duration)]
        expires_in: Duration,
    },
    /// Every token: id, state (valid, used, expired, revoked), when made, when it expires.
    List {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        at: crate::Where,
    },
    /// Make tokens unusable at once (audited).
    Revoke {
        /// Token ids, as `token list` and `token create` show them.
        #[arg(required = true)]
        ids: Vec<String>,
        #[command(flatten)]
        at: crate::Where,
    },
}

/// Unix seconds as RFC 3339 (seconds), or "-" for 0 (unknown).
fn shown(t: i64) -> String {
    match u64::try_from(t) {
        Ok(s) if s > 0 => {
            humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_secs(s))
                .to_string()
        }
        _ => "-".into(),
    }
}

/// The id of a token with this digest.
pub fn id_of(hash: &str) -> &str {
    hash.get(..ID_LEN).unwrap_or(hash)
}

/// A token's state at `now`, from its row.
fn state(used: i64, revoked: i64, expires: i64, now: i64) -> &'static str {
    if used != 0 {
        "used"
    } else if revoked != 0 {
        "revoked"
    } else if expires <= now {
        "expired"
    } else {
        "valid"
    }
}

/// Run a token command.
pub async fn run(action: TokenAction) -> Result<(), String> {
    match action {
        TokenAction::Create {
            at,
            count,
            expires_in,
        } => {
            let store = Store::open(&crate::db_url(&at)?).await?;
            create(&store, count, expires_in, &crate::operator()).await
        }
        TokenAction::List { json, at } => {
            list(&Store::open(&crate::db_url(&at)?).await?, json).await
        }
        TokenAction::Revoke { ids, at } => {
            let store = Store::open(&crate::db_url(&at)?).await?;
            let who = crate::operator();
            let mut unknown = Vec::new();
            for id in &ids {
                match revoke(&store, id, &who).await? {
                    Some(was) => eprintln!("keyward-server: token {id}: {was}"),
                    None => unknown.push(keyward_core::quote(id)),
                }
            }
            if unknown.is_empty() {
                Ok(())
            } else {
                Err(format!("no token has the id {}", unknown.join(", ")))
            }
        }
    }
}

async fn create(store: &Store, count: u32, lifetime: Duration, who: &str) -> Result<(), String> {
    if lifetime < Duration::from_secs(1) || lifetime > MAX_LIFETIME {
        return Err("--expires-in must be between 1s and 90d".into());
    }
    let now = crate::clock::unix_now();
    let expires = now.saturating_add(i64::try_from(lifetime.as_secs()).unwrap_or(i64::MAX));
    let mut tokens = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let mut raw = [0u8; 24];
        getrandom::fill(&mut raw).map_err(|e| e.to_string())?;
        tokens.push(keyward_core::hex::encode(&raw));
    }
    let hashes: Vec<String> = tokens.iter().map(|t| token_hash(t)).collect();
    let record = AuditRecord {
        at: crate::clock::now(),
        who: who.to_owned(),
        action: "token-create".into(),
        device: None,
        volume: None,
        reason: Some(format!("{count} token(s), valid until {}", shown(expires))),
    };
    // One transaction: no token is printed unless all are stored.
    store
        .add_tokens(&hashes, now, expires, Some(&record))
        .await?;
    for token in tokens {
        println!("{token}");
    }
    match hashes.as_slice() {
        [one] => eprintln!(
            "keyward-server: token id {}, valid until {} (single use)",
            id_of(one),
            shown(expires)
        ),
        _ => eprintln!(
            "keyward-server: {count} tokens, valid until {} (single use; `token list` shows their ids)",
            shown(expires)
        ),
    }
    Ok(())
}

async fn list(store: &Store, json: bool) -> Result<(), String> {
    let rows = sqlx::query(
        "SELECT hash, used, created, expires, revoked FROM tokens ORDER BY created, hash",
    )
    .fetch_all(store.pool())
    .await
    .map_err(|e| e.to_string())?;
    let now = crate::clock::unix_now();
    let mut all = Vec::with_capacity(rows.len());
    for r in &rows {
        let get = |c: &str| r.try_get::<i64, _>(c).map_err(|e| e.to_string());
        let hash: String = r.try_get("hash").map_err(|e| e.to_string())?;
        let (created, expires, revoked) = (get("created")?, get("expires")?, get("revoked")?);
        all.push(serde_json::json!({
            "id": id_of(&hash),
            "state": state(get("used")?, revoked, expires, now),
            "created": (created > 0).then(|| shown(created)),
            "expires": (expires > 0).then(|| shown(expires)),
            "revoked": (revoked > 0).then(|| shown(revoked)),
        }));
    }
    if json {
        let text = serde_json::to_string_pretty(&all).map_err(|e| e.to_string())?;
        println!("{text}");
        return Ok(());
    }
    println!("{:<16} {:<8} {:<20} EXPIRES", "ID", "STATE", "CREATED");
    for t in &all {
        let field = |k: &str| t[k].as_str().unwrap_or("-").to_owned();
        println!(
            "{:<16} {:<8} {:<20} {}",
            field("id"),
            field("state"),
            field("created"),
            field("expires")
        );
    }
    Ok(())
}

/// Revoke the token with this id; what became of it, or None if there is no such token.
async fn revoke(store: &Store, id: &str, who: &str) -> Result<Option<&'static str>, String> {
    let id = id.trim().to_ascii_lowercase();
    if id.len() != ID_LEN || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(None);
    }
    let err = |e: sqlx::Error| e.to_string();
    let mut tx = store.pool().begin().await.map_err(err)?;
    let done = sqlx::query(
        "UPDATE tokens SET revoked = $2 WHERE substr(hash, 1, 16) = $1 AND used = 0 AND revoked = 0",
    )
    .bind(&id)
    .bind(crate::clock::unix_now())
    .execute(&mut *tx)
    .await
    .map_err(err)?;
    if done.rows_affected() > 0 {
        sqlx::query(
            "INSERT INTO audit (at, who, action, device, volume, reason) VALUES ($1, $2, 'token-revoke', NULL, NULL, $3)",
        )
        .bind(crate::clock::now())
        .bind(who)
        .bind(format!("enrollment token {id}"))
        .execute(&mut *tx)
        .await
        .map_err(err)?;
        tx.commit().await.map_err(err)?;
        return Ok(Some("revoked; it can no longer enroll a device (audited)"));
    }
    let row = sqlx::query("SELECT used FROM tokens WHERE substr(hash, 1, 16) = $1")
        .bind(&id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(err)?;
    Ok(match row {
        None => None,
        Some(r) if r.try_get::<i64, _>("used").map_err(err)? != 0 => {
            Some("already used: it enrolled a device (revoke the device instead)")
        }
        Some(_) => Some("already revoked"),
    })
}

/// Spend the tokens with these digests that are valid at `now`: the digests spent.
pub async fn spend(
    conn: &mut AnyConnection,
    hashes: &[&str],
    now: i64,
) -> Result<std::collections::HashSet<String>, sqlx::Error> {
    let mut spent = std::collections::HashSet::new();
    for chunk in hashes.chunks(crate::sql::ROWS_PER_STATEMENT) {
        let sql = format!(
            "UPDATE tokens SET used = 1 WHERE used = 0 AND revoked = 0 AND expires > $1 \
             AND hash IN ({}) RETURNING hash",
            crate::sql::numbered(2, chunk.len())
        );
        let mut q = sqlx::query(&sql).bind(now);
        for hash in chunk {
            q = q.bind(*hash);
        }
        for row in q.fetch_all(&mut *conn).await? {
            spent.insert(row.try_get(0)?);
        }
    }
    Ok(spent)
}

/// Why these tokens could not be spent at `now` (a token valid now was spent by another
/// enrollment first: used).
pub async fn refusals(
    conn: &mut AnyConnection,
    hashes: &[&str],
    now: i64,
) -> Result<HashMap<String, TokenRefused>, sqlx::Error> {
    let mut out: HashMap<String, TokenRefused> = hashes
        .iter()
        .map(|h| ((*h).to_owned(), TokenRefused::Unknown))
        .collect();
    for chunk in hashes.chunks(crate::sql::ROWS_PER_STATEMENT) {
        let sql = format!(
            "SELECT hash, used, revoked, expires FROM tokens WHERE hash IN ({})",
            crate::sql::numbered(1, chunk.len())
        );
        let mut q = sqlx::query(&sql);
        for hash in chunk {
            q = q.bind(*hash);
        }
        for row in q.fetch_all(&mut *conn).await? {
            let why = match state(row.try_get(1)?, row.try_get(2)?, row.try_get(3)?, now) {
                "revoked" => TokenRefused::Revoked,
                "expired" => TokenRefused::Expired,
                _ => TokenRefused::Used,
            };
            out.insert(row.try_get(0)?, why);
        }
    }
    Ok(out)
}

/// Hex SHA-256 of an enrollment token (only the digest is stored).
pub fn token_hash(token: &str) -> String {
    keyward_core::hex::sha256(token.trim().as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_used_then_revoked_then_expired_in_that_order() {
        assert_eq!(state(1, 5, 0, 10), "used");
        assert_eq!(state(0, 5, 0, 10), "revoked");
        assert_eq!(state(0, 0, 10, 10), "expired", "expiry is exclusive");
        assert_eq!(state(0, 0, 11, 10), "valid");
        assert_eq!(id_of("0123456789abcdef0123"), "0123456789abcdef");
    }
}
