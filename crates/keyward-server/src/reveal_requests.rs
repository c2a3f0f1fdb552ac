//! The `reveal_requests` table (migration 8): storing requests and moving them from state to
//! state, each move conditional on the state it leaves (so two instances racing on one request
//! move it once) and committed together with its audit record. Policy lives in
//! `reveal_flow.rs`; the key itself is revealed by `keys.rs`, which consumes an approved
//! request in the transaction that audits the reveal.

use sqlx::any::AnyRow;
use sqlx::{AnyPool, Row};

use crate::notify_queue::{self, Event};
use crate::reveal_flow::{Request, State};
use crate::store::{insert_audit, AuditRecord, StoreError};

type Result<T> = std::result::Result<T, StoreError>;

const COLUMNS: &str =
    "id, device, volume, reason, requester, created, state, decided_by, decided, expires, revealed";

fn request(r: &AnyRow) -> Result<Request> {
    let state: String = r.try_get("state")?;
    Ok(Request {
        id: r.try_get("id")?,
        device: r.try_get("device")?,
        volume: r.try_get("volume")?,
        reason: r.try_get("reason")?,
        requester: r.try_get("requester")?,
        created: r.try_get("created")?,
        state: State::parse(&state)
            .ok_or_else(|| StoreError::other(format!("reveal request state {state:?}")))?,
        decided_by: r.try_get("decided_by")?,
        decided: r.try_get("decided")?,
        expires: r.try_get("expires")?,
        revealed: r.try_get("revealed")?,
    })
}

/// Store a new request and its audit record (and the webhook's `event`, if any), together.
pub async fn create(
    pool: &AnyPool,
    req: &Request,
    record: &AuditRecord,
    event: Option<&Event<'_>>,
) -> Result<()> {
    let mut tx = pool.begin().await?;
    sqlx::query(
        "INSERT INTO reveal_requests (id, device, volume, reason, requester, created, state, \
         decided_by, decided, expires) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(&req.id)
    .bind(&req.device)
    .bind(&req.volume)
    .bind(&req.reason)
    .bind(&req.requester)
    .bind(req.created)
    .bind(req.state.as_str())
    .bind(&req.decided_by)
    .bind(req.decided)
    .bind(req.expires)
    .execute(&mut *tx)
    .await?;
    insert_audit(&mut *tx, record).await?;
    if let Some(event) = event {
        notify_queue::enqueue(&mut tx, event).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// One request.
pub async fn get(pool: &AnyPool, id: &str) -> Result<Option<Request>> {
    let sql = format!("SELECT {COLUMNS} FROM reveal_requests WHERE id = $1");
    let row = sqlx::query(&sql).bind(id).fetch_optional(pool).await?;
    row.as_ref().map(request).transpose()
}

/// Move a request from `from` to `to` (recording who decided, when, and its new expiry) and
/// audit it (and queue the webhook's `event`, if any), together; false, with nothing written,
/// if it was no longer in `from` or had lapsed by the time of the decision.
#[allow(clippy::too_many_arguments)] // one transaction's worth of facts, each named
pub async fn decide(
    pool: &AnyPool,
    id: &str,
    from: State,
    to: State,
    decided: (&str, i64),
    expires: i64,
    record: &AuditRecord,
    event: Option<&Event<'_>>,
) -> Result<bool> {
    let mut tx = pool.begin().await?;
    let done = sqlx::query(
        "UPDATE reveal_requests SET state = $3, decided_by = $4, decided = $5, expires = $6 \
         WHERE id = $1 AND state = $2 AND expires > $5",
    )
    .bind(id)
    .bind(from.as_str())
    .bind(to.as_str())
    .bind(decided.0)
    .bind(decided.1)
    .bind(expires)
    .execute(&mut *tx)
    .await?;
    if done.rows_affected() != 1 {
        return Ok(false);
    }
    insert_audit(&mut *tx, record).await?;
    if let Some(event) = event {
        notify_queue::enqueue(&mut tx, event).await?;
    }
    tx.commit().await?;
    Ok(true)
}

/// Spend an approved, unexpired request inside the caller's transaction (the one that audits
/// the reveal); false if it was not approved or had expired by `now`.
pub async fn consume(conn: &mut sqlx::AnyConnection, id: &str, now: i64) -> Result<bool> {
    let done = sqlx::query(
        "UPDATE reveal_requests SET state = 'revealed', revealed = $2 \
         WHERE id = $1 AND state = 'approved' AND expires > $2",
    )
    .bind(id)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Mark every pending or approved request past its time as expired, each with an audit record
/// (`reveal-expire`), at most `limit` at a time; how many.
pub async fn expire_due(pool: &AnyPool, now: i64, limit: i64) -> Result<u64> {
    let sql = format!(
        "SELECT {COLUMNS} FROM reveal_requests WHERE state IN ('pending', 'approved') \
         AND expires <= $1 ORDER BY expires LIMIT $2"
    );
    let due = sqlx::query(&sql)
        .bind(now)
        .bind(limit)
        .fetch_all(pool)
        .await?;
    let mut expired = 0;
    for row in &due {
        let req = request(row)?;
        let mut tx = pool.begin().await?;
        let done = sqlx::query(
            "UPDATE reveal_requests SET state = 'expired' WHERE id = $1 AND state = $2 \
             AND expires <= $3",
        )
        .bind(&req.id)
        .bind(req.state.as_str())
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 1 {
            let record = audit_record(
                "server",
                "reveal-expire",
                &req,
                &format!("{} while {}", req.reason, req.state.as_str()),
            );
            insert_audit(&mut *tx, &record).await?;
            tx.commit().await?;
            expired += 1;
        }
    }
    Ok(expired)
}

/// Which requests a list shows.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub enum Listing<'a> {
    /// Pending requests made by anyone but this person (an approver's queue).
    PendingFor(&'a str),
    /// This person's own requests.
    MadeBy(&'a str),
    /// Everyone's recently decided requests.
    Decided,
}

/// Requests, newest first, at most `limit`.
pub async fn list(pool: &AnyPool, which: Listing<'_>, limit: i64) -> Result<Vec<Request>> {
    let (filter, who) = match which {
        Listing::PendingFor(me) => ("state = 'pending' AND requester <> $2", me),
        Listing::MadeBy(me) => ("requester = $2", me),
        Listing::Decided => ("state <> 'pending' AND $2 = ''", ""),
    };
    let sql = format!(
        "SELECT {COLUMNS} FROM reveal_requests WHERE {filter} ORDER BY created DESC, id LIMIT $1"
    );
    let rows = sqlx::query(&sql)
        .bind(limit)
        .bind(who)
        .fetch_all(pool)
        .await?;
    rows.iter().map(request).collect()
}

/// The audit record of a step on `req`: who, what, the device and volume, and the reason with
/// the request id.
pub fn audit_record(who: &str, action: &str, req: &Request, reason: &str) -> AuditRecord {
    AuditRecord {
        at: crate::clock::now(),
        who: who.to_owned(),
        action: action.to_owned(),
        device: Some(req.device.clone()),
        volume: Some(req.volume.clone()),
        reason: Some(format!("{reason} [request {}]", req.id)),
    }
}
