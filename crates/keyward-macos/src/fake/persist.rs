//! The simulated Mac as bytes, so that a test helper can keep it in a file across its own
//! death: the Mac's model ([`FakeMac`] without its calls or scripted answers) and, apart, the
//! System keychain's two items — two stores, as on a Mac, each changed by a step of its own.
//! The bytes hold passwords: they are handed back in [`Zeroizing`] buffers, and the caller
//! keeps them root-only.

use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, Zeroizing};

use super::FakeMac;
use crate::keychain::{Keychain, KeychainItem, MemoryKeychain};
use crate::MacError;

/// The saved form could not be made or read.
#[derive(Debug, thiserror::Error)]
#[error("the simulated Mac's saved state: {0}")]
pub struct PersistError(String);

impl From<serde_json::Error> for PersistError {
    fn from(e: serde_json::Error) -> Self {
        PersistError(e.to_string())
    }
}

impl From<MacError> for PersistError {
    fn from(e: MacError) -> Self {
        PersistError(e.to_string())
    }
}

/// The keychain's items as saved.
#[derive(Serialize, Deserialize, Default)]
struct Items {
    current: Option<Vec<u8>>,
    next: Option<Vec<u8>>,
}

impl Drop for Items {
    fn drop(&mut self) {
        self.current.zeroize();
        self.next.zeroize();
    }
}

/// The Mac's model as JSON.
pub fn mac_to_json(mac: &FakeMac) -> Result<Zeroizing<Vec<u8>>, PersistError> {
    Ok(Zeroizing::new(serde_json::to_vec(mac)?))
}

/// A Mac read back from [`mac_to_json`]'s bytes (no calls recorded, nothing scripted).
pub fn mac_from_json(bytes: &[u8]) -> Result<FakeMac, PersistError> {
    Ok(serde_json::from_slice(bytes)?)
}

/// The keychain's items as JSON.
pub fn keychain_to_json(keys: &mut MemoryKeychain) -> Result<Zeroizing<Vec<u8>>, PersistError> {
    let read = |keys: &mut MemoryKeychain, item| -> Result<Option<Vec<u8>>, PersistError> {
        Ok(keys.read(item)?.map(|s| s.expose().to_vec()))
    };
    let items = Items {
        current: read(keys, KeychainItem::ServiceCurrent)?,
        next: read(keys, KeychainItem::ServiceNext)?,
    };
    Ok(Zeroizing::new(serde_json::to_vec(&items)?))
}

/// A keychain read back from [`keychain_to_json`]'s bytes.
pub fn keychain_from_json(bytes: &[u8]) -> Result<MemoryKeychain, PersistError> {
    let items: Items = serde_json::from_slice(bytes)?;
    let mut keys = MemoryKeychain::default();
    for (item, value) in [
        (KeychainItem::ServiceCurrent, &items.current),
        (KeychainItem::ServiceNext, &items.next),
    ] {
        if let Some(v) = value {
            keys.write(item, &keyward_core::Secret::copy_from(v))?;
        }
    }
    keys.writes = 0;
    Ok(keys)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_mac_and_its_keychain_read_back_as_they_were_saved() {
        let mut mac = FakeMac::typical();
        mac.keys_made = 7;
        mac.accounts[1].token = true;
        mac.accounts[1].unlock_password = Some(b"old".to_vec());
        let back = mac_from_json(&mac_to_json(&mac).unwrap()).unwrap();
        assert_eq!(back.keys_made, 7);
        assert_eq!(back.accounts.len(), 2);
        assert!(back.accounts[1].token);
        assert_eq!(
            back.accounts[1].unlock_password.as_deref(),
            Some(&b"old"[..])
        );
        assert_eq!(back.recovery_key, mac.recovery_key);

        let mut keys = MemoryKeychain::default();
        keys.write(
            KeychainItem::ServiceNext,
            &keyward_core::Secret::copy_from(b"n3xt"),
        )
        .unwrap();
        let mut back = keychain_from_json(&keychain_to_json(&mut keys).unwrap()).unwrap();
        assert!(back.read(KeychainItem::ServiceCurrent).unwrap().is_none());
        let next = back.read(KeychainItem::ServiceNext).unwrap().unwrap();
        assert_eq!(next.expose(), b"n3xt");
    }
}
