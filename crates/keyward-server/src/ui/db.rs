//! The admin UI's own tables (migration 2): accounts (with their role since migration 8 and
//! their sealed TOTP secret since migration 11), sessions and failed logins. Every
//! query is written once with `$N` parameters and runs on SQLite and PostgreSQL alike through
//! `Store::pool()`. Times are Unix seconds. Session ids and CSRF tokens arrive here already
//! hashed or drawn by the caller; nothing in this file decides policy (limits live in
//! `session.rs` and `login.rs`).

use std::collections::HashMap;

use sqlx::{AnyPool, Row};

use crate::store::StoreError;

type Result<T> = std::result::Result<T, StoreError>;

/// A live session's row.
#[derive(Debug, Clone)]
pub struct SessionRow {
    /// Whose.
    pub admin: String,
    /// Their role now (read with the session, so a change applies at the next request).
    pub role: String,
    /// The form token of this session.
    pub csrf: String,
    /// When it began.
    pub created: i64,
    /// When it was last used.
    pub seen: i64,
}

/// Add an account with a role and, if given, its sealed TOTP secret (`totp.rs`), in one
/// statement, so no account is ever without the second factor it was made with; false if the
/// name is taken.
pub async fn add_admin(
    pool: &AnyPool,
    name: &str,
    phc: &str,
    role: &str,
    totp: Option<&str>,
) -> Result<bool> {
    let done = sqlx::query(
        "INSERT INTO admins (name, hash, created, role, totp, totp_step) \
         VALUES ($1, $2, $3, $4, $5, 0) ON CONFLICT DO NOTHING",
    )
    .bind(name)
    .bind(phc)
    .bind(crate::clock::now())
    .bind(role)
    .bind(totp)
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Remove an admin and end their sessions, together; false if there was no such admin.
pub async fn remove_admin(pool: &AnyPool, name: &str) -> Result<bool> {
    let mut tx = pool.begin().await?;
    sqlx::query("DELETE FROM sessions WHERE admin = $1")
        .bind(name)
        .execute(&mut *tx)
        .await?;
    let gone = sqlx::query("DELETE FROM admins WHERE name = $1")
        .bind(name)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(gone.rows_affected() == 1)
}

/// An account as `admin list` and the accounts page show it.
#[derive(Debug, Clone)]
pub struct AccountRow {
    /// Its name.
    pub name: String,
    /// Its role.
    pub role: String,
    /// Whether its UI login needs a TOTP code.
    pub totp: bool,
}

/// Every account, sorted by name.
pub async fn admins(pool: &AnyPool) -> Result<Vec<AccountRow>> {
    let rows = sqlx::query(
        "SELECT name, role, CAST(CASE WHEN totp IS NULL THEN 0 ELSE 1 END AS BIGINT) \
         AS has_totp FROM admins ORDER BY name",
    )
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(AccountRow {
                name: r.try_get("name")?,
                role: r.try_get("role")?,
                totp: r.try_get::<i64, _>("has_totp")? != 0,
            })
        })
        .collect()
}

/// Give an account another role; false if there is no such account.
pub async fn set_role(pool: &AnyPool, name: &str, role: &str) -> Result<bool> {
    let done = sqlx::query("UPDATE admins SET role = $2 WHERE name = $1")
        .bind(name)
        .bind(role)
        .execute(pool)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// An admin's password hash (PHC string).
pub async fn admin_hash(pool: &AnyPool, name: &str) -> Result<Option<String>> {
    let row = sqlx::query("SELECT hash FROM admins WHERE name = $1")
        .bind(name)
        .fetch_optional(pool)
        .await?;
    Ok(row.map(|r| r.try_get("hash")).transpose()?)
}

/// An account's second factor: its sealed TOTP secret and the last step it accepted.
#[derive(Debug, Clone)]
pub struct TotpRow {
    /// The secret sealed to the server's identity (`totp.rs`).
    pub sealed: String,
    /// The last step whose code this account accepted (0: none yet).
    pub last_step: i64,
}

/// `name`'s second factor; None if there is no such account or it has none.
pub async fn totp_of(pool: &AnyPool, name: &str) -> Result<Option<TotpRow>> {
    let row =
        sqlx::query("SELECT totp, totp_step FROM admins WHERE name = $1 AND totp IS NOT NULL")
            .bind(name)
            .fetch_optional(pool)
            .await?;
    row.map(|r| {
        Ok(TotpRow {
            sealed: r.try_get("totp")?,
            last_step: r.try_get("totp_step")?,
        })
    })
    .transpose()
}

/// Spend `step` of `name`'s secret `sealed`: true for exactly one caller, on every instance,
/// if no step as late was spent before and the secret was not replaced meanwhile.
pub async fn spend_totp_step(pool: &AnyPool, name: &str, sealed: &str, step: i64) -> Result<bool> {
    let done = sqlx::query(
        "UPDATE admins SET totp_step = $3 WHERE name = $1 AND totp = $2 AND totp_step < $3",
    )
    .bind(name)
    .bind(sealed)
    .bind(step)
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Give `name` a new sealed TOTP secret (None: no second factor), forget the steps spent and
/// end their sessions, together; false if there is no such account.
pub async fn set_totp(pool: &AnyPool, name: &str, sealed: Option<&str>) -> Result<bool> {
    let mut tx = pool.begin().await?;
    let done = sqlx::query("UPDATE admins SET totp = $2, totp_step = 0 WHERE name = $1")
        .bind(name)
        .bind(sealed)
        .execute(&mut *tx)
        .await?;
    sqlx::query("DELETE FROM sessions WHERE admin = $1")
        .bind(name)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(done.rows_affected() == 1)
}

/// Whose failed logins to count.
#[derive(Debug, Clone, Copy)]
pub enum FailuresOf<'a> {
    /// A name's, from anywhere.
    Name(&'a str),
    /// An address's, for any name.
    Source(&'a str),
    /// A name's from one address.
    NameFrom(&'a str, &'a str),
}

/// When the latest failed logins of `whose` were, newest first, at most `limit` of them.
pub async fn latest_failures(
    pool: &AnyPool,
    whose: FailuresOf<'_>,
    limit: i64,
) -> Result<Vec<i64>> {
    let (filter, first, second) = match whose {
        FailuresOf::Name(n) => ("name = $1", n, None),
        FailuresOf::Source(a) => ("source = $1", a, None),
        FailuresOf::NameFrom(n, a) => ("name = $1 AND source = $3", n, Some(a)),
    };
    let sql =
        format!("SELECT at FROM login_failures WHERE {filter} ORDER BY at DESC, seq DESC LIMIT $2");
    let mut q = sqlx::query(&sql).bind(first).bind(limit);
    if let Some(second) = second {
        q = q.bind(second);
    }
    let rows = q.fetch_all(pool).await?;
    rows.iter()
        .map(|r| r.try_get("at").map_err(Into::into))
        .collect()
}

/// Record a failed login for `name` from `source`, and forget failures from before
/// `forget_before` (of any name): they no longer count towards a lock-out.
pub async fn add_failure(
    pool: &AnyPool,
    name: &str,
    source: &str,
    at: i64,
    forget_before: i64,
) -> Result<()> {
    sqlx::query("INSERT INTO login_failures (name, source, at) VALUES ($1, $2, $3)")
        .bind(name)
        .bind(source)
        .bind(at)
        .execute(pool)
        .await?;
    sqlx::query("DELETE FROM login_failures WHERE at < $1")
        .bind(forget_before)
        .execute(pool)
        .await?;
    Ok(())
}

/// Forget `name`'s failed logins from `source` (after a successful one from there). Failures
/// from elsewhere stay: someone else's guesses stay counted against them.
pub async fn clear_failures(pool: &AnyPool, name: &str, source: &str) -> Result<()> {
    sqlx::query("DELETE FROM login_failures WHERE name = $1 AND source = $2")
        .bind(name)
        .bind(source)
        .execute(pool)
        .await?;
    Ok(())
}

/// A session about to begin.
#[derive(Debug)]
pub struct NewSession<'a> {
    /// Hash of its id.
    pub id_hash: &'a str,
    /// Whose: an account's name, or `sso:NAME` for a person the identity provider vouched for.
    pub admin: &'a str,
    /// Its form token.
    pub csrf: &'a str,
    /// Single sign-on: the role the person's groups mapped to (None: the account's role).
    pub sso_role: Option<&'a str>,
}

/// Store a new session, and drop every session that expired: begun before `created_before`
/// or idle since before `seen_before`.
pub async fn add_session(
    pool: &AnyPool,
    new: &NewSession<'_>,
    now: i64,
    created_before: i64,
    seen_before: i64,
) -> Result<()> {
    sqlx::query("DELETE FROM sessions WHERE created < $1 OR seen < $2")
        .bind(created_before)
        .bind(seen_before)
        .execute(pool)
        .await?;
    sqlx::query(
        "INSERT INTO sessions (id_hash, admin, csrf, created, seen, sso_role) \
         VALUES ($1, $2, $3, $4, $4, $5)",
    )
    .bind(new.id_hash)
    .bind(new.admin)
    .bind(new.csrf)
    .bind(now)
    .bind(new.sso_role.map(str::to_owned))
    .execute(pool)
    .await?;
    Ok(())
}

/// Has the sign-in whose `state` hashes to `state_hash` signed someone in already?
pub async fn sso_used(pool: &AnyPool, state_hash: &str) -> Result<bool> {
    let row = sqlx::query("SELECT 1 FROM sso_used WHERE state_hash = $1")
        .bind(state_hash)
        .fetch_optional(pool)
        .await?;
    Ok(row.is_some())
}

/// Record a sign-in the provider vouched for as used (those used before `prune_before` are
/// dropped first: their cookies have expired); `false` when it was used already (two
/// callbacks racing: only one goes on). Written only after the provider has vouched, so a
/// stranger cannot fill the table.
pub async fn mark_sso_used(
    pool: &AnyPool,
    state_hash: &str,
    now: i64,
    prune_before: i64,
) -> Result<bool> {
    sqlx::query("DELETE FROM sso_used WHERE created < $1")
        .bind(prune_before)
        .execute(pool)
        .await?;
    let done = sqlx::query(
        "INSERT INTO sso_used (state_hash, created) VALUES ($1, $2) \
         ON CONFLICT (state_hash) DO NOTHING",
    )
    .bind(state_hash)
    .bind(now)
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// The session with this id hash, if its account still exists (or it is a single sign-on's).
pub async fn session(pool: &AnyPool, id_hash: &str) -> Result<Option<SessionRow>> {
    let row = sqlx::query(
        "SELECT s.admin, COALESCE(s.sso_role, a.role) AS role, s.csrf, s.created, s.seen \
         FROM sessions s LEFT JOIN admins a ON a.name = s.admin \
         WHERE s.id_hash = $1 AND (s.sso_role IS NOT NULL OR a.name IS NOT NULL)",
    )
    .bind(id_hash)
    .fetch_optional(pool)
    .await?;
    row.map(|r| {
        Ok(SessionRow {
            admin: r.try_get("admin")?,
            role: r.try_get("role")?,
            csrf: r.try_get("csrf")?,
            created: r.try_get("created")?,
            seen: r.try_get("seen")?,
        })
    })
    .transpose()
}

/// Mark a session used at `now`.
pub async fn touch_session(pool: &AnyPool, id_hash: &str, now: i64) -> Result<()> {
    sqlx::query("UPDATE sessions SET seen = $2 WHERE id_hash = $1")
        .bind(id_hash)
        .bind(now)
        .execute(pool)
        .await?;
    Ok(())
}

/// End every session of `admin` (an account's name or `sso:NAME`): how many there were.
pub async fn end_sessions_of(pool: &AnyPool, admin: &str) -> Result<u64> {
    let done = sqlx::query("DELETE FROM sessions WHERE admin = $1")
        .bind(admin)
        .execute(pool)
        .await?;
    Ok(done.rows_affected())
}

/// End a session.
pub async fn end_session(pool: &AnyPool, id_hash: &str) -> Result<()> {
    sqlx::query("DELETE FROM sessions WHERE id_hash = $1")
        .bind(id_hash)
        .execute(pool)
        .await?;
    Ok(())
}

/// Of these escrow ids, the ones the server holds: id → (device, seen by an admin).
pub async fn escrow_marks(pool: &AnyPool, ids: &[&str]) -> Result<HashMap<String, (String, bool)>> {
    // One query per chunk, with as many `$N` as ids: both databases take far more than this.
    const CHUNK: usize = 500;
    let mut out = HashMap::with_capacity(ids.len());
    for chunk in ids.chunks(CHUNK) {
        let params: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
        let sql = format!(
            "SELECT id, device, rotate_after_use FROM escrows WHERE id IN ({})",
            params.join(", ")
        );
        let mut q = sqlx::query(&sql);
        for id in chunk {
            q = q.bind(*id);
        }
        for r in q.fetch_all(pool).await? {
            out.insert(
                r.try_get("id")?,
                (
                    r.try_get("device")?,
                    r.try_get::<i64, _>("rotate_after_use")? != 0,
                ),
            );
        }
    }
    Ok(out)
}
