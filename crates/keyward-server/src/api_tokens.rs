//! API tokens for automation: `keyward-server api-token add|list|revoke` and the lookup the
//! admin API's bearer check makes (`admin_api.rs`). A token is `kwa_` and 256 random bits,
//! printed once by `add` and stored as its SHA-256 only (the `api_tokens` table, migration 8),
//! so a database dump authenticates nothing. Each token has a name (how the audit names its
//! caller: `api:NAME`) and a role (`roles.rs`). Adding and revoking are audited; revoking
//! deletes the row, so the token fails at once at every instance.

use sqlx::{AnyPool, Row};

use crate::roles::Role;
use crate::store::{Store, StoreError};
use crate::ui::admin::{name_ok, parse_role};

/// What every token starts with (so a leaked one is recognisable in a scan).
const PREFIX: &str = "kwa_";

/// API token commands.
#[derive(clap::Subcommand, Debug)]
pub enum ApiTokenAction {
    /// Make a token; it is printed once, on standard output, and stored only as a hash.
    Add {
        /// Name (letters, digits, `.`, `_`, `-`, `@`; at most 64): the audit names its caller
        /// `api:NAME`.
        name: String,
        /// viewer, helpdesk, approver or admin.
        #[arg(long, value_parser = parse_role)]
        role: Role,
        #[command(flatten)]
        at: crate::Where,
    },
    /// Every token's name, role and creation time (never the token).
    List {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        at: crate::Where,
    },
    /// Revoke a token at once, at every instance (audited).
    Revoke {
        /// Its name.
        name: String,
        #[command(flatten)]
        at: crate::Where,
    },
}

/// A token's listing.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Listed {
    /// Its name.
    pub name: String,
    /// Its role.
    pub role: String,
    /// When it was made (RFC 3339).
    pub created: String,
}

/// Who a presented token belongs to: its name and role.
#[derive(Debug, Clone)]
pub struct Holder {
    /// The token's name.
    pub name: String,
    /// Its role.
    pub role: Role,
}

fn new_token() -> Result<String, String> {
    use base64::Engine;
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).map_err(|e| e.to_string())?;
    Ok(format!(
        "{PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
    ))
}

/// Whether `token` has a token's shape (checked before any lookup).
fn shaped(token: &str) -> bool {
    token.strip_prefix(PREFIX).is_some_and(|rest| {
        rest.len() == 43
            && rest
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    })
}

/// The holder of `token`, if it is a live token. The lookup is by SHA-256: the database never
/// compares the secret itself.
pub async fn holder(pool: &AnyPool, token: &str) -> Result<Option<Holder>, StoreError> {
    if !shaped(token) {
        return Ok(None);
    }
    let row = sqlx::query("SELECT name, role FROM api_tokens WHERE hash = $1")
        .bind(crate::ui::hash_token(token))
        .fetch_optional(pool)
        .await?;
    let Some(row) = row else { return Ok(None) };
    let role: String = row.try_get("role")?;
    Ok(Some(Holder {
        name: row.try_get("name")?,
        role: role
            .parse()
            .map_err(|e: crate::roles::UnknownRole| StoreError::other(e.to_string()))?,
    }))
}

async fn audit(store: &Store, action: &str, what: String) -> Result<(), String> {
    crate::operator::audit_cli(store, action, what).await
}

/// Run an api-token command.
pub async fn run(action: ApiTokenAction) -> Result<(), String> {
    match action {
        ApiTokenAction::Add { name, role, at } => {
            if !name_ok(&name) {
                return Err("a token name is 1 to 64 letters, digits, '.', '_', '-' or '@'".into());
            }
            let store = Store::open(&crate::db_url(&at)?).await?;
            let token = zeroize::Zeroizing::new(new_token()?);
            let done = sqlx::query(
                "INSERT INTO api_tokens (name, hash, role, created) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT DO NOTHING",
            )
            .bind(&name)
            .bind(crate::ui::hash_token(&token))
            .bind(role.as_str())
            .bind(crate::clock::unix_now())
            .execute(store.pool())
            .await
            .map_err(|e| e.to_string())?;
            if done.rows_affected() != 1 {
                return Err(format!("an API token named {name} exists; revoke it first"));
            }
            audit(
                &store,
                "api-token-add",
                format!("API token {name} ({role})"),
            )
            .await?;
            println!("{}", token.as_str());
            eprintln!(
                "keyward-server: API token {name} ({role}) made; it is shown only now: \
                 send it as 'Authorization: Bearer TOKEN' to /v1/admin/"
            );
            Ok(())
        }
        ApiTokenAction::List { json, at } => {
            let store = Store::open(&crate::db_url(&at)?).await?;
            let rows = sqlx::query("SELECT name, role, created FROM api_tokens ORDER BY name")
                .fetch_all(store.pool())
                .await
                .map_err(|e| e.to_string())?;
            let mut listed = Vec::with_capacity(rows.len());
            for r in &rows {
                let created: i64 = r.try_get("created").map_err(|e| e.to_string())?;
                let when = std::time::UNIX_EPOCH
                    + std::time::Duration::from_secs(u64::try_from(created).unwrap_or(0));
                listed.push(Listed {
                    name: r.try_get("name").map_err(|e| e.to_string())?,
                    role: r.try_get("role").map_err(|e| e.to_string())?,
                    created: humantime::format_rfc3339_seconds(when).to_string(),
                });
            }
            if json {
                let text = serde_json::to_string_pretty(&listed).map_err(|e| e.to_string())?;
                println!("{text}");
            } else {
                for t in listed {
                    println!("{} {} {}", t.name, t.role, t.created);
                }
            }
            Ok(())
        }
        ApiTokenAction::Revoke { name, at } => {
            let store = Store::open(&crate::db_url(&at)?).await?;
            let done = sqlx::query("DELETE FROM api_tokens WHERE name = $1")
                .bind(&name)
                .execute(store.pool())
                .await
                .map_err(|e| e.to_string())?;
            if done.rows_affected() != 1 {
                return Err(format!("no API token named {}", keyward_core::quote(&name)));
            }
            audit(&store, "api-token-revoke", format!("API token {name}")).await?;
            eprintln!("keyward-server: API token {name} revoked");
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_have_one_shape() {
        let t = new_token().unwrap_or_default();
        assert!(shaped(&t), "{t}");
        assert_ne!(new_token().ok(), Some(t.clone()));
        assert!(!shaped(&t[1..]));
        assert!(!shaped(&format!("{t}x")));
        assert!(!shaped("kwa_' OR '1'='1"));
        assert!(!shaped(""));
    }
}
