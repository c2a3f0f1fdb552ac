//! The two-person reveal, one implementation for the web UI and the admin API: make a request,
//! approve or deny it, reveal its key once, and expire what lapsed. Each step checks the
//! actor's role and the request's state (`reveal_flow.rs`, pure), then stores the move with
//! its audit record (`reveal_requests.rs`); the reveal itself is `keys::reveal`, which spends
//! the request in the transaction that audits it. Every audit record names the person, the
//! request id and the request's reason, and (`[notify]`) queues the webhook's event in the
//! same transaction. With `[reveal] require_approval = false` a request is born approved: the
//! requester alone may reveal it, once.

use keyward_core::VolumeName;

use crate::app_state::AppState;
use crate::keys::{self, Retrieval, RevealError, Revealed};
use crate::notify_queue::{Event, EventKind};
use crate::reveal_flow::{self, Refusal, Request, State};
use crate::reveal_requests::{self as db, audit_record};
use crate::roles::{Right, Role};
use crate::store::{AuditRecord, StoreError};

/// Who acts: the name the audit gives them (`web:NAME`, `api:NAME`) and their role.
#[derive(Debug, Clone)]
pub struct Actor {
    /// As the audit names them.
    pub who: String,
    /// What they may do.
    pub role: Role,
}

/// Why a step did not happen.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FlowError {
    /// The role or the request's state forbids it.
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// A field is wrong; the message says which.
    #[error("{0}")]
    BadInput(String),
    /// No request has that id.
    #[error("no reveal request has that id")]
    NoRequest,
    /// No device has that id.
    #[error("no device has that id")]
    NoDevice,
    /// Nothing is escrowed for that device and volume.
    #[error("no escrowed key for that device and volume")]
    NoEscrow,
    /// Revealing failed for a reason of the server's own (decryption, database).
    #[error("revealing: {0}")]
    Reveal(RevealError),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The webhook's event for a step by `who` on `req`, audited as `record`.
fn event<'a>(
    kind: EventKind,
    who: &'a str,
    req: &'a Request,
    record: &'a AuditRecord,
) -> Event<'a> {
    Event {
        kind,
        at: &record.at,
        who,
        device: &req.device,
        volume: &req.volume,
        request: Some(&req.id),
        reason: &req.reason,
    }
}

fn request_id() -> Result<String, FlowError> {
    let mut b = [0u8; 12];
    getrandom::fill(&mut b).map_err(|e| StoreError::other(e.to_string()))?;
    Ok(format!("req-{}", keyward_core::hex::encode(&b)))
}

/// Whether `id` could be a request id (so it may be looked up and echoed).
pub fn id_ok(id: &str) -> bool {
    id.len() == 28
        && id.starts_with("req-")
        && id[4..]
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Ask for the key of `device`'s `volume`, saying why.
pub async fn request(
    s: &AppState,
    actor: &Actor,
    device: &str,
    volume: &str,
    reason: &str,
) -> Result<Request, FlowError> {
    if !actor.role.may(Right::RequestReveal) {
        return Err(Refusal::RoleLacks(actor.role).into());
    }
    let reason = keys::checked_reason(reason).map_err(|e| FlowError::BadInput(e.to_string()))?;
    let volume = VolumeName::parse(volume)
        .map_err(|_| FlowError::BadInput("that is not a volume name".into()))?;
    // No id holds a control character (PostgreSQL refuses a NUL in text outright).
    if device.len() > 128 || device.chars().any(char::is_control) {
        return Err(FlowError::NoDevice);
    }
    if s.store.device(device).await?.is_none() {
        return Err(FlowError::NoDevice);
    }
    if s.store
        .escrow(device, volume.as_str(), None)
        .await?
        .is_none()
    {
        return Err(FlowError::NoEscrow);
    }
    let now = crate::clock::unix_now();
    let single = !s.reveal.require_approval;
    let req = Request {
        id: request_id()?,
        device: device.to_owned(),
        volume: volume.as_str().to_owned(),
        reason: reason.to_owned(),
        requester: actor.who.clone(),
        created: now,
        state: if single {
            State::Approved
        } else {
            State::Pending
        },
        decided_by: None,
        decided: single.then_some(now),
        expires: now + s.reveal.approval_secs(),
        revealed: None,
    };
    let noted = if single {
        format!("{reason} (no approval required: [reveal] require_approval = false)")
    } else {
        reason.to_owned()
    };
    let record = audit_record(&actor.who, "reveal-request", &req, &noted);
    let event = event(EventKind::RevealRequested, &actor.who, &req, &record);
    let event = s.store.notifying().then_some(&event);
    db::create(s.store.pool(), &req, &record, event).await?;
    Ok(req)
}

/// The request `id`, with anything lapsed expired (and audited) first.
async fn current(s: &AppState, id: &str) -> Result<Request, FlowError> {
    if !id_ok(id) {
        return Err(FlowError::NoRequest);
    }
    let req = db::get(s.store.pool(), id)
        .await?
        .ok_or(FlowError::NoRequest)?;
    if req.lapsed(crate::clock::unix_now()) {
        db::expire_due(s.store.pool(), crate::clock::unix_now(), 100).await?;
        return db::get(s.store.pool(), id)
            .await?
            .ok_or(FlowError::NoRequest);
    }
    Ok(req)
}

/// Approve (`approve`) or deny someone else's pending request.
pub async fn decide(
    s: &AppState,
    actor: &Actor,
    id: &str,
    approve: bool,
) -> Result<Request, FlowError> {
    let req = current(s, id).await?;
    let now = crate::clock::unix_now();
    reveal_flow::may_decide(&req, &actor.who, actor.role, now)?;
    let (to, action, kind, expires) = if approve {
        (
            State::Approved,
            "reveal-approve",
            EventKind::RevealApproved,
            now + s.reveal.approval_secs(),
        )
    } else {
        (
            State::Denied,
            "reveal-deny",
            EventKind::RevealDenied,
            req.expires,
        )
    };
    let record = audit_record(&actor.who, action, &req, &req.reason);
    let event = event(kind, &actor.who, &req, &record);
    let event = s.store.notifying().then_some(&event);
    let moved = db::decide(
        s.store.pool(),
        &req.id,
        State::Pending,
        to,
        (&actor.who, now),
        expires,
        &record,
        event,
    )
    .await?;
    let after = current(s, id).await?;
    if !moved {
        // Someone else decided first (or it lapsed meanwhile).
        return Err(Refusal::NotPending(after.state).into());
    }
    Ok(after)
}

/// Reveal the key of one's own approved request, once.
pub async fn reveal(
    s: &AppState,
    actor: &Actor,
    id: &str,
) -> Result<(Request, Revealed), FlowError> {
    let req = current(s, id).await?;
    reveal_flow::may_reveal(&req, &actor.who, actor.role, crate::clock::unix_now())?;
    let what = Retrieval {
        device: &req.device,
        volume: &req.volume,
        escrow: None,
        who: &actor.who,
        reason: &req.reason,
        request: Some(&req.id),
    };
    match keys::reveal(&s.store, &s.identity, what).await {
        Ok(revealed) => Ok((req, revealed)),
        Err(RevealError::NoEscrow) => Err(FlowError::NoEscrow),
        Err(RevealError::RequestSpent) => {
            // Used or expired by someone else's move in the meantime: say which.
            let now = current(s, id).await?;
            Err(
                reveal_flow::may_reveal(&now, &actor.who, actor.role, crate::clock::unix_now())
                    .err()
                    .unwrap_or(Refusal::Used)
                    .into(),
            )
        }
        Err(e) => Err(FlowError::Reveal(e)),
    }
}

/// Expire lapsed requests every minute, so the audit says when they lapsed even if nobody
/// looks at them.
pub async fn expire_every_minute(s: std::sync::Arc<AppState>) {
    let minute = std::time::Duration::from_secs(60);
    // Not at start: requests are expired on demand too, and a start stays quiet.
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + minute, minute);
    loop {
        tick.tick().await;
        if let Err(e) = db::expire_due(s.store.pool(), crate::clock::unix_now(), 1000).await {
            crate::log::error(
                "expiring reveal requests",
                &[("error", e.to_string().into())],
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::id_ok;

    #[test]
    fn request_ids_are_recognised_exactly() {
        assert!(id_ok("req-0123456789abcdef01234567"));
        assert!(!id_ok("req-0123456789ABCDEF01234567"));
        assert!(!id_ok("req-0123456789abcdef0123456"));
        assert!(!id_ok("esc-0123456789abcdef01234567"));
        assert!(!id_ok("req-<script>alert(1)</script>"));
    }
}
