//! Revealing an escrowed recovery key to an admin, the one way it is done, for the CLI and the
//! web UI alike: a reason is required; the key is decrypted, then the retrieval is audited and
//! the key marked for rotation after use in one transaction, and only then handed out. Also
//! says whether the device last reported this key as its active one.

use zeroize::Zeroizing;

use crate::checkin;
use crate::identity::Identity;
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

/// Reveal the latest (or the named) escrowed key of `device`'s `volume` to `who`.
pub async fn reveal(
    store: &Store,
    identity: &Identity,
    device: &str,
    volume: &str,
    escrow: Option<&str>,
    who: &str,
    reason: &str,
) -> Result<Revealed, String> {
    let reason = reason.trim();
    if reason.is_empty() {
        return Err("a reason is required: say why the key is needed".into());
    }
    if reason.chars().count() > MAX_REASON {
        return Err(format!("the reason is longer than {MAX_REASON} characters"));
    }
    let found = store
        .escrow(device, volume, escrow)
        .await?
        .ok_or("no escrowed key for that device and volume")?;
    let key =
        Zeroizing::new(age::decrypt(&identity.age, &found.ciphertext).map_err(|e| e.to_string())?);
    store
        .reveal(
            &found.id,
            &AuditRecord {
                at: crate::store::now(),
                who: who.to_owned(),
                action: "key-show".into(),
                device: Some(device.to_owned()),
                volume: Some(volume.to_owned()),
                reason: Some(format!("{reason} [{}]", found.id)),
            },
        )
        .await?;
    let reported = checkin::latest(store, device).await?.and_then(|(at, r)| {
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
