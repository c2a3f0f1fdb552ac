//! The last status report of each LUKS2 volume, kept while its header is byte for byte the
//! same (issue 18: libcryptsetup's init and load were most of a `keyward status` round trip).
//! The key is the device's identity (device and inode numbers) and the checksums stored in its
//! header's two copies, which any metadata write changes — keyward's own, stock cryptsetup's,
//! a restored header backup. [`keyward_luks::probe::fingerprint`] verifies both copies first,
//! so a damaged header is never answered from the cache. Only reports of a header that was read
//! are kept; errors are recomputed every time.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use keyward_core::ipc::VolumeReport;

/// What a report was computed from.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Key {
    dev: u64,
    ino: u64,
    checksums: [u8; 64],
}

/// By volume name and device: a report names its volume.
type Cache = HashMap<(String, PathBuf), (Key, VolumeReport)>;

fn cache() -> &'static Mutex<Cache> {
    static CACHE: OnceLock<Mutex<Cache>> = OnceLock::new();
    CACHE.get_or_init(|| Mutex::new(HashMap::new()))
}

/// keyward-luks is built for Linux only: elsewhere nothing is cached.
#[cfg(not(target_os = "linux"))]
fn key(_device: &Path) -> Option<Key> {
    None
}

#[cfg(target_os = "linux")]
fn key(device: &Path) -> Option<Key> {
    // The checksums first: a header rewritten between the two reads keys the new content.
    let checksums = keyward_luks::probe::fingerprint(device).ok()?;
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(device).ok()?;
    Some(Key {
        dev: meta.dev(),
        ino: meta.ino(),
        checksums,
    })
}

/// The report for `device`: the cached one if the header is unchanged, else `compute()`'s.
/// The key is read before computing, so a header changed while computing is simply a miss
/// next time.
pub(crate) fn report(
    volume: &str,
    device: &Path,
    compute: impl FnOnce() -> VolumeReport,
) -> VolumeReport {
    let Some(k) = key(device) else {
        return compute();
    };
    let lock = |c: &'static Mutex<_>| match c.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    };
    let entry = (volume.to_owned(), device.to_owned());
    if let Some((cached_key, report)) = lock(cache()).get(&entry) {
        if *cached_key == k {
            return report.clone();
        }
    }
    let report = compute();
    if report.error.is_none() {
        lock(cache()).insert(entry, (k, report.clone()));
    }
    report
}
