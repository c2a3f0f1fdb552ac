//! Enrolled devices' public keys, cached in memory: every signed request needs one, and a key
//! never changes once enrolled (devices are never deleted or re-keyed; a new key is a new
//! enrollment with a new id), so a cached key can never be stale, on this instance or any
//! other sharing the database. Only keys found are cached: a device unknown here may be
//! enrolled at another instance a moment later. `serve` warms the cache from the database in
//! the background, so a restarted instance does not send a fleet's first requests to the
//! database one key at a time. A revoked device's key stays cached: revocation is not a
//! property of the key but a row the writer reads in the transaction of every request's write
//! (`writer/batch.rs`), so it takes effect at once on every instance.

use std::collections::HashMap;
use std::sync::RwLock;

use base64::Engine;
use ed25519_dalek::VerifyingKey;

use crate::store::{Store, StoreError};

/// Keys cached at most (about 260 bytes each with the id and the decompressed point: 26 MB
/// for 100,000 devices); beyond that, lookups go to the database.
const MAX_CACHED: usize = 500_000;
/// Devices read a page when warming the cache.
const WARM_PAGE: i64 = 5_000;

/// The cache.
#[derive(Debug, Default)]
pub struct DeviceKeys {
    keys: RwLock<HashMap<String, VerifyingKey>>,
}

impl DeviceKeys {
    /// Cache every enrolled device's key (up to the limit), a page at a time; returns how
    /// many are cached.
    pub async fn warm(&self, store: &Store) -> Result<usize, StoreError> {
        let mut after = String::new();
        loop {
            let page = store.device_keys_after(&after, WARM_PAGE).await?;
            let Some((last, _)) = page.last() else { break };
            after = last.clone();
            for (device, key) in &page {
                if let Some(key) = parse(key) {
                    self.remember(device, key);
                }
            }
            if page.len() < WARM_PAGE as usize || self.len() >= MAX_CACHED {
                break;
            }
        }
        Ok(self.len())
    }

    fn len(&self) -> usize {
        self.keys.read().map_or(0, |m| m.len())
    }

    /// The key of `device`, if it is enrolled (a stored key that does not parse counts as
    /// none, as it would verify nothing).
    pub async fn get(
        &self,
        store: &Store,
        device: &str,
    ) -> Result<Option<VerifyingKey>, StoreError> {
        if let Some(key) = self.keys.read().ok().and_then(|m| m.get(device).copied()) {
            return Ok(Some(key));
        }
        let key = store.device_key(device).await?.as_deref().and_then(parse);
        if let Some(key) = key {
            self.remember(device, key);
        }
        Ok(key)
    }

    /// Cache the key of a device just enrolled or looked up.
    pub fn remember(&self, device: &str, key: VerifyingKey) {
        if let Ok(mut m) = self.keys.write() {
            if m.len() < MAX_CACHED {
                m.insert(device.to_owned(), key);
            }
        }
    }
}

/// A stored key (base64 of the 32-byte Ed25519 public key), if it is one.
fn parse(b64: &str) -> Option<VerifyingKey> {
    let raw = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
    VerifyingKey::from_bytes(&<[u8; 32]>::try_from(raw).ok()?).ok()
}
