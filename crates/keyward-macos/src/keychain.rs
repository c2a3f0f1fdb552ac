//! The seam to the System keychain, where the helper keeps the service account's password
//! (never in a file). Two items: the current password and, during a rotation, the next one —
//! written before the account's password changes, so a crash never strands a password that
//! nobody knows. The real keychain (`keychain_macos`, via `security-framework`) is macOS-only
//! glue; tests use [`MemoryKeychain`].

use keyward_core::Secret;

use crate::error::MacError;

/// The keychain service name of keyward's items.
pub const SERVICE: &str = "keyward";

/// Which item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum KeychainItem {
    /// The service account's password in force.
    ServiceCurrent,
    /// A new service password not yet committed.
    ServiceNext,
}

impl KeychainItem {
    /// The keychain account name of the item.
    pub fn account(self) -> &'static str {
        match self {
            KeychainItem::ServiceCurrent => "service-password",
            KeychainItem::ServiceNext => "service-password.next",
        }
    }
}

/// Where the helper keeps the service password.
pub trait Keychain {
    /// Read an item; `None` if absent.
    fn read(&mut self, item: KeychainItem) -> Result<Option<Secret>, MacError>;
    /// Create or replace an item.
    fn write(&mut self, item: KeychainItem, secret: &Secret) -> Result<(), MacError>;
    /// Remove an item (absent is fine).
    fn delete(&mut self, item: KeychainItem) -> Result<(), MacError>;
}

/// An in-memory keychain for tests, which can be told to fail one write.
#[derive(Debug, Default)]
pub struct MemoryKeychain {
    current: Option<Secret>,
    next: Option<Secret>,
    /// Writes so far.
    pub writes: usize,
    /// Fail the write with this index (tests of torn states).
    pub fail_write: Option<usize>,
}

impl MemoryKeychain {
    fn slot(&mut self, item: KeychainItem) -> &mut Option<Secret> {
        match item {
            KeychainItem::ServiceCurrent => &mut self.current,
            KeychainItem::ServiceNext => &mut self.next,
        }
    }
}

impl Keychain for MemoryKeychain {
    fn read(&mut self, item: KeychainItem) -> Result<Option<Secret>, MacError> {
        Ok(self.slot(item).as_ref().map(Secret::duplicate))
    }

    fn write(&mut self, item: KeychainItem, secret: &Secret) -> Result<(), MacError> {
        let n = self.writes;
        self.writes += 1;
        if self.fail_write == Some(n) {
            return Err(MacError::Keychain("write refused (test)".into()));
        }
        *self.slot(item) = Some(secret.duplicate());
        Ok(())
    }

    fn delete(&mut self, item: KeychainItem) -> Result<(), MacError> {
        *self.slot(item) = None;
        Ok(())
    }
}

impl<K: Keychain + ?Sized> Keychain for &mut K {
    fn read(&mut self, item: KeychainItem) -> Result<Option<Secret>, MacError> {
        (**self).read(item)
    }
    fn write(&mut self, item: KeychainItem, secret: &Secret) -> Result<(), MacError> {
        (**self).write(item, secret)
    }
    fn delete(&mut self, item: KeychainItem) -> Result<(), MacError> {
        (**self).delete(item)
    }
}
