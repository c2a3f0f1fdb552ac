//! Revealing an escrowed recovery key to a person, the one way it is done, for the CLI, the web
//! UI and the admin API alike: a reason is required; the key is decrypted, then the retrieval
//! is audited, the key marked for rotation after use, (two-person reveal) the approved
//! request spent and (`[notify]`) the webhook's event queued, in one transaction, and only
//! then handed out. Who may reveal is decided
//! before this is called (`reveals.rs`). Also says whether the device last reported this key
//! as its active one.

use zeroize::Zeroizing;

use crate::identity::Identity;
use crate::notify_queue::{Event, EventKind};
use crate::store::{AuditRecord, Store};

/// A revealed key.
pub struct Revealed {
    /// Which escrow.
    pub escrow_id: String,
    /// The recovery key.
    pub key: Zeroizing<Vec<u8>>,
    /// Whether the device reported it active, in words.
    pub standing: String,
}

impl std::fmt::Debug for Revealed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Revealed")
            .field("escrow_id", &self.escrow_id)
            .finish_non_exhaustive()
    }
}

/// Longest reason kept.
pub const MAX_REASON: usize = 500;

/// What to reveal, to whom, and why.
#[derive(Debug, Clone, Copy)]
pub struct Retrieval<'a> {
    /// The device.
    pub device: &'a str,
    /// Its volume.
    pub volume: &'a str,
    /// A particular escrow, or the latest.
    pub escrow: Option<&'a str>,
    /// Who sees the key (as the audit names them).
    pub who: &'a str,
    /// Why (required).
    pub reason: &'a str,
    /// The approved reveal request this reveal spends, if any (two-person reveal).
    pub request: Option<&'a str>,
}

/// Why a key was not revealed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RevealError {
    /// No reason, or only blanks.
    #[error("a reason is required: say why the key is needed")]
    NoReason,
    /// A reason longer than [`MAX_REASON`].
    #[error("the reason is longer than {MAX_REASON} characters")]
    ReasonTooLong,
    /// A reason with a control character other than a line break or tab.
    #[error("the reason holds a control character")]
    ReasonUnprintable,
    /// Nothing escrowed for that device and volume (or no such escrow).
    #[error("no escrowed key for that device and volume")]
    NoEscrow,
    /// The request was denied, expired or used between the check and the reveal.
    #[error("the request is no longer approved (denied, expired or used)")]
    RequestSpent,
    /// The escrow does not decrypt with this server's identity.
    #[error("decrypting the escrow: {0}")]
    Decrypt(String),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// Check a reason: trimmed, not empty, not too long.
pub fn checked_reason(reason: &str) -> Result<&str, RevealError> {
    let reason = reason.trim();
    if reason.is_empty() {
        return Err(RevealError::NoReason);
    }
    if reason.chars().count() > MAX_REASON {
        return Err(RevealError::ReasonTooLong);
    }
    if reason
        .chars()
        .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
    {
        return Err(RevealError::ReasonUnprintable);
    }
    Ok(reason)
}

/// Reveal the latest (or the named) escrowed key of a device's volume.
pub async fn reveal(
    store: &Store,
    identity: &Identity,
    what: Retrieval<'_>,
) -> Result<Revealed, RevealError> {
    let Retrieval {
        device,
        volume,
        escrow,
        who,
        reason,
        request,
    } = what;
    let reason = checked_reason(reason)?;
    let found = store
        .escrow(device, volume, escrow)
        .await?
        .ok_or(RevealError::NoEscrow)?;
    let key = Zeroizing::new(
        age::decrypt(&identity.age, &found.ciphertext)
            .map_err(|e| RevealError::Decrypt(e.to_string()))?,
    );
    let noted = match request {
        Some(id) => format!("{reason} [{}] [request {id}]", found.id),
        None => format!("{reason} [{}]", found.id),
    };
    let record = AuditRecord {
        at: crate::clock::now(),
        who: who.to_owned(),
        action: "key-show".into(),
        device: Some(device.to_owned()),
        volume: Some(volume.to_owned()),
        reason: Some(noted),
    };
    let spend = request.map(|id| (id, crate::clock::unix_now()));
    let event = Event {
        kind: EventKind::KeyRevealed,
        at: &record.at,
        who,
        device,
        volume,
        request,
        reason,
    };
    let event = store.notifying().then_some(&event);
    if !record_reveal(store, &found.id, &record, spend, event).await? {
        return Err(RevealError::RequestSpent);
    }
    let reported = store
        .latest_report(device)
        .await
        .map_err(RevealError::Store)?
        .and_then(|(at, r)| {
            r.volumes
                .into_iter()
                .find(|v| v.volume.as_str() == volume)
                .map(|v| (at, v.escrow_id))
        });
    let id = found.id.clone();
    let standing = match reported {
        Some((at, Some(active))) if active == id => {
            format!("the device reported this key ({id}) active at {at}")
        }
        Some((at, other)) => format!(
            "note: at its last check-in ({at}) the device reported {} active, not this key ({id}); \
             if it does not open the disk, its rotation may not have been committed",
            other.as_deref().unwrap_or("no escrowed key")
        ),
        None => format!(
            "note: the device has not reported this volume yet, so this key ({id}) is not confirmed active"
        ),
    };
    Ok(Revealed {
        escrow_id: found.id,
        key,
        standing,
    })
}

/// Record a key retrieval and mark the key for rotation after use, together; with a
/// reveal request `(id, now)`, spend it in the same transaction; with `event`, queue the
/// webhook's in it too. False, with nothing written, if that request was no longer
/// approved and unexpired.
async fn record_reveal(
    store: &Store,
    escrow_id: &str,
    record: &AuditRecord,
    request: Option<(&str, i64)>,
    event: Option<&Event<'_>>,
) -> Result<bool, crate::store::StoreError> {
    let mut tx = store.pool().begin().await?;
    if let Some((id, now)) = request {
        if !crate::reveal_requests::consume(&mut tx, id, now).await? {
            return Ok(false);
        }
    }
    crate::store::insert_audit(&mut *tx, record).await?;
    if let Some(event) = event {
        crate::notify_queue::enqueue(&mut tx, event).await?;
    }
    sqlx::query("UPDATE escrows SET rotate_after_use = 1 WHERE id = $1")
        .bind(escrow_id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(true)
}
