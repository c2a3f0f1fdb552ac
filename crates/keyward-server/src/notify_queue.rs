//! The webhook outbox (`notify_outbox`, migration 10): the SQL of `[notify]`, nothing else. An
//! event row is inserted inside the transaction of the step it tells of (the request, the
//! decision, the reveal) — so a step never commits without its event, nor an event without its
//! step, and a crash loses neither. Instances claim a row with a lease (`UPDATE … WHERE
//! lease_until <= now`), so on one PostgreSQL database each event is sent by one instance at a
//! time; a delivered row is deleted, and a row given up is deleted with a `notify-failed` audit
//! record, in one transaction. The body is made once, at insert: a retry sends the same bytes
//! (and the same event id, for the receiver to drop duplicates). Sending is `notify.rs`.

use sqlx::any::AnyRow;
use sqlx::{AnyConnection, AnyPool, Row};

use crate::store::{insert_audit, AuditRecord, StoreError};

type Result<T> = std::result::Result<T, StoreError>;

/// What happened, as the body's `event` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum EventKind {
    /// Someone asked for a key.
    RevealRequested,
    /// A second person approved a request.
    RevealApproved,
    /// A second person denied a request.
    RevealDenied,
    /// A key was shown to a person (through a request, or alone where that is allowed).
    KeyRevealed,
}

impl EventKind {
    /// The word in the body.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::RevealRequested => "reveal-requested",
            EventKind::RevealApproved => "reveal-approved",
            EventKind::RevealDenied => "reveal-denied",
            EventKind::KeyRevealed => "key-revealed",
        }
    }
}

/// One event, as the step that causes it knows it. Never a key or a secret: names, ids and the
/// reason a person typed.
#[derive(Debug, Clone, Copy)]
pub struct Event<'a> {
    /// What happened.
    pub kind: EventKind,
    /// When (RFC 3339; the `at` of the step's audit record).
    pub at: &'a str,
    /// Who did it, as the audit names them (`api:NAME`, `web:NAME`, `root(uid 0)`).
    pub who: &'a str,
    /// The device.
    pub device: &'a str,
    /// The volume.
    pub volume: &'a str,
    /// The reveal request, if the step belongs to one.
    pub request: Option<&'a str>,
    /// The reason the requester gave.
    pub reason: &'a str,
}

impl Event<'_> {
    /// The JSON body the receiver gets, under event id `id`.
    pub fn body(&self, id: &str) -> String {
        serde_json::json!({
            "id": id,
            "event": self.kind.as_str(),
            "at": self.at,
            "who": self.who,
            "device": self.device,
            "volume": self.volume,
            "request": self.request,
            "reason": self.reason,
        })
        .to_string()
    }
}

fn event_id() -> Result<String> {
    let mut b = [0u8; 12];
    getrandom::fill(&mut b).map_err(|e| StoreError::other(e.to_string()))?;
    Ok(format!("evt-{}", keyward_core::hex::encode(&b)))
}

/// Queue `event` inside the caller's transaction (the one that stores the step); its id.
pub async fn enqueue(conn: &mut AnyConnection, event: &Event<'_>) -> Result<String> {
    let id = event_id()?;
    let now = crate::clock::unix_now();
    sqlx::query(
        "INSERT INTO notify_outbox (id, event, device, volume, body, created, next_attempt) \
         VALUES ($1, $2, $3, $4, $5, $6, $6)",
    )
    .bind(&id)
    .bind(event.kind.as_str())
    .bind(event.device)
    .bind(event.volume)
    .bind(event.body(&id))
    .bind(now)
    .execute(conn)
    .await?;
    Ok(id)
}

/// A row this instance holds the lease on.
#[derive(Debug, Clone)]
pub struct Claimed {
    /// The event id (`evt-…`).
    pub id: String,
    /// Its kind, as stored.
    pub event: String,
    /// The device.
    pub device: String,
    /// The volume.
    pub volume: String,
    /// The JSON body, byte for byte as every attempt sends it.
    pub body: String,
    /// When it was queued (Unix seconds).
    pub created: i64,
    /// Attempts so far, this one included.
    pub attempts: i64,
}

fn claimed(r: &AnyRow) -> Result<Claimed> {
    Ok(Claimed {
        id: r.try_get("id")?,
        event: r.try_get("event")?,
        device: r.try_get("device")?,
        volume: r.try_get("volume")?,
        body: r.try_get("body")?,
        created: r.try_get("created")?,
        attempts: r.try_get("attempts")?,
    })
}

/// Claim the oldest event due at `now` that nobody holds, until `lease_until`. None if there is
/// none, or another instance claimed it first (its lease is checked again in the update, so
/// two instances racing on one row claim it once).
pub async fn claim_next(pool: &AnyPool, now: i64, lease_until: i64) -> Result<Option<Claimed>> {
    let row = sqlx::query(
        "UPDATE notify_outbox SET lease_until = $2, attempts = attempts + 1 \
         WHERE id = (SELECT id FROM notify_outbox WHERE next_attempt <= $1 AND lease_until <= $1 \
                     ORDER BY seq LIMIT 1) \
         AND lease_until <= $1 \
         RETURNING id, event, device, volume, body, created, attempts",
    )
    .bind(now)
    .bind(lease_until)
    .fetch_optional(pool)
    .await?;
    row.as_ref().map(claimed).transpose()
}

/// The receiver took `id`: drop it, and make the backlog due now (the receiver is back, so
/// events waiting out a backoff go at once, in order).
pub async fn delivered(pool: &AnyPool, id: &str, now: i64) -> Result<()> {
    let mut tx = pool.begin().await?;
    sqlx::query("DELETE FROM notify_outbox WHERE id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "UPDATE notify_outbox SET next_attempt = $1 WHERE next_attempt > $1 AND lease_until <= $1",
    )
    .bind(now)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

/// The attempt failed (`error`): try again at `at`, by whichever instance is free then.
pub async fn retry_at(pool: &AnyPool, id: &str, at: i64, error: &str) -> Result<()> {
    sqlx::query(
        "UPDATE notify_outbox SET next_attempt = $2, lease_until = 0, last_error = $3 WHERE id = $1",
    )
    .bind(id)
    .bind(at)
    .bind(error)
    .execute(pool)
    .await?;
    Ok(())
}

/// Stop trying: drop the event and audit `notify-failed` (with the last error), together.
pub async fn give_up(pool: &AnyPool, ev: &Claimed, error: &str) -> Result<()> {
    let mut tx = pool.begin().await?;
    let done = sqlx::query("DELETE FROM notify_outbox WHERE id = $1")
        .bind(&ev.id)
        .execute(&mut *tx)
        .await?;
    if done.rows_affected() == 1 {
        let record = AuditRecord {
            at: crate::clock::now(),
            who: "server".into(),
            action: "notify-failed".into(),
            device: Some(ev.device.clone()),
            volume: Some(ev.volume.clone()),
            reason: Some(format!(
                "webhook event {} ({}) not delivered after {} attempts; last: {error}",
                ev.id, ev.event, ev.attempts
            )),
        };
        insert_audit(&mut *tx, &record).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Events waiting to be delivered (for `/metrics`).
pub async fn depth(pool: &AnyPool) -> Result<i64> {
    let row = sqlx::query("SELECT COUNT(*) AS n FROM notify_outbox")
        .fetch_one(pool)
        .await?;
    Ok(row.try_get("n")?)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_body_holds_the_contract_fields_and_nothing_else() {
        let e = Event {
            kind: EventKind::KeyRevealed,
            at: "2026-12-04T08:00:00.000000000Z",
            who: "api:helpdesk-bot",
            device: "dev-1",
            volume: "data",
            request: Some("req-0123456789abcdef01234567"),
            reason: "ticket \"1\" <b>",
        };
        let v: serde_json::Value = serde_json::from_str(&e.body("evt-1")).unwrap();
        let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            ["at", "device", "event", "id", "reason", "request", "volume", "who"]
        );
        assert_eq!(v["event"], "key-revealed");
        assert_eq!(v["reason"], "ticket \"1\" <b>");
        let alone = Event { request: None, ..e };
        let v: serde_json::Value = serde_json::from_str(&alone.body("evt-2")).unwrap();
        assert!(v["request"].is_null());
        assert_eq!(v["id"], "evt-2");
    }
}
