//! What was last computed from each LUKS2 volume's header (the helper's status reports), kept
//! while the header is byte for byte the same (issue 18: libcryptsetup's init and load were
//! most of a `keyward status` round trip). The key is the device's identity (device and inode
//! numbers) and the checksums stored in its header's two copies, which any metadata write
//! changes — keyward's own, stock cryptsetup's, a restored header backup.
//! [`probe::fingerprint`](crate::probe) verifies both copies first, so a damaged header is never answered
//! from the cache. Off Linux there is no header to read: nothing is kept, every value is
//! computed.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

/// What a kept value was computed from: the device's identity and its header's checksums.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderKey {
    dev: u64,
    ino: u64,
    checksums: [u8; 64],
}

impl HeaderKey {
    /// `device`'s key now; `None` if its header cannot be read or either copy fails its
    /// checksum (nothing is kept or answered from the cache then).
    pub fn of(device: &Path) -> Option<Self> {
        // The checksums first: a header rewritten between the two reads keys the new content.
        #[cfg(target_os = "linux")]
        let checksums = crate::probe::fingerprint(device).ok()?;
        // No LUKS2 header to read off Linux: no key, so nothing is kept.
        #[cfg(not(target_os = "linux"))]
        let checksums: [u8; 64] = None?;
        let meta = std::fs::metadata(device).ok()?;
        Some(HeaderKey {
            dev: meta.dev(),
            ino: meta.ino(),
            checksums,
        })
    }
}

/// Values by name (a volume) and device, each with the key it was computed under.
type Entries<T> = BTreeMap<(String, PathBuf), (HeaderKey, T)>;

/// One value per volume and device, kept while the device's [`HeaderKey`] is unchanged.
#[derive(Debug)]
pub struct HeaderCache<T> {
    entries: Mutex<Entries<T>>,
}

impl<T: Clone> Default for HeaderCache<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Clone> HeaderCache<T> {
    /// An empty cache (usable in a `static`).
    pub const fn new() -> Self {
        HeaderCache {
            entries: Mutex::new(BTreeMap::new()),
        }
    }

    /// The value for `name` on `device`: the kept one if the header is unchanged, else
    /// `compute()`'s, kept if `keep` says so (a report of an error is not: it is computed
    /// again every time). The key is read before computing, so a header changed while
    /// computing is simply a miss next time.
    pub fn get(
        &self,
        name: &str,
        device: &Path,
        compute: impl FnOnce() -> T,
        keep: impl FnOnce(&T) -> bool,
    ) -> T {
        self.get_under(HeaderKey::of(device), name, device, compute, keep)
    }

    /// [`get`](Self::get) with the key read already (`None`: nothing kept or answered).
    fn get_under(
        &self,
        key: Option<HeaderKey>,
        name: &str,
        device: &Path,
        compute: impl FnOnce() -> T,
        keep: impl FnOnce(&T) -> bool,
    ) -> T {
        let Some(key) = key else {
            return compute();
        };
        let entry = (name.to_owned(), device.to_owned());
        if let Some((_, value)) = self.lock().get(&entry).filter(|(kept, _)| *kept == key) {
            return value.clone();
        }
        let value = compute();
        if keep(&value) {
            self.lock().insert(entry, (key, value.clone()));
        }
        value
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries<T>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
#[path = "header_cache_tests.rs"]
mod tests;
