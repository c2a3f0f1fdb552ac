//! The System keychain through `security-framework` (macOS only, thin glue; CI type-checks it
//! for aarch64-apple-darwin but cannot run it — see docs/MACOS.md). Items are generic
//! passwords under the service [`SERVICE`] in `/Library/Keychains/System.keychain`, created by
//! the root helper, whose binary is the only application on each item's access list.

use security_framework::os::macos::keychain::SecKeychain;
use security_framework::os::macos::passwords::find_generic_password;

use keyward_core::Secret;

use crate::error::MacError;
use crate::keychain::{Keychain, KeychainItem, SERVICE};

const SYSTEM_KEYCHAIN: &str = "/Library/Keychains/System.keychain";
/// `errSecItemNotFound`.
const ITEM_NOT_FOUND: i32 = -25300;

/// The System keychain.
pub struct SystemKeychain {
    keychain: SecKeychain,
}

impl std::fmt::Debug for SystemKeychain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SystemKeychain")
    }
}

impl SystemKeychain {
    /// Open `/Library/Keychains/System.keychain` (root only).
    pub fn open() -> Result<Self, MacError> {
        SecKeychain::open(SYSTEM_KEYCHAIN)
            .map(|keychain| SystemKeychain { keychain })
            .map_err(|e| MacError::Keychain(e.to_string()))
    }
}

impl Keychain for SystemKeychain {
    fn read(&mut self, item: KeychainItem) -> Result<Option<Secret>, MacError> {
        let list = [self.keychain.clone()];
        match find_generic_password(Some(&list), SERVICE, item.account()) {
            Ok((password, _)) => Ok(Some(Secret::copy_from(password.as_ref()))),
            Err(e) if e.code() == ITEM_NOT_FOUND => Ok(None),
            Err(e) => Err(MacError::Keychain(e.to_string())),
        }
    }

    fn write(&mut self, item: KeychainItem, secret: &Secret) -> Result<(), MacError> {
        self.keychain
            .set_generic_password(SERVICE, item.account(), secret.expose())
            .map_err(|e| MacError::Keychain(e.to_string()))
    }

    fn delete(&mut self, item: KeychainItem) -> Result<(), MacError> {
        let list = [self.keychain.clone()];
        match find_generic_password(Some(&list), SERVICE, item.account()) {
            Ok((_, found)) => {
                found.delete();
                Ok(())
            }
            Err(e) if e.code() == ITEM_NOT_FOUND => Ok(()),
            Err(e) => Err(MacError::Keychain(e.to_string())),
        }
    }
}
