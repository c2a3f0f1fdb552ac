//! What `keyward status` shows, kept while what it was read from is unchanged (issue 18):
//! each LUKS2 volume's report while its header is byte for byte the same
//! ([`keyward_luks::header_cache`]; reports of an error are recomputed every time).
//!
//! Also each holder's standing (issue 18): NSS and /etc/shadow were read once per holder per
//! `status`. A standing is kept while the account files are the same files with the same
//! content stamps (device, inode, size, mtime and ctime of /etc/passwd, /etc/group,
//! /etc/shadow and /etc/nsswitch.conf: useradd, usermod, passwd and chpasswd replace or rewrite
//! them) and the policy is the same. Only when nsswitch.conf answers passwd, group and shadow
//! from `files` (and `systemd`, `compat`) alone: a directory (sss, ldap, winbind) changes
//! without touching a file, so its users are looked up every time. Lookup errors (`unknown`)
//! are never kept.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;

use keyward_core::config::Config;
use keyward_core::ipc::VolumeReport;
use keyward_core::{Uid, UserName};

use crate::ctx::lock;

/// The report for `device`: the kept one if the header is unchanged, else `compute()`'s.
#[cfg(target_os = "linux")]
pub(crate) fn report(
    volume: &str,
    device: &Path,
    compute: impl FnOnce() -> VolumeReport,
) -> VolumeReport {
    static REPORTS: keyward_luks::header_cache::HeaderCache<VolumeReport> =
        keyward_luks::header_cache::HeaderCache::new();
    REPORTS.get(volume, device, compute, |r| r.error.is_none())
}

/// keyward-luks is built for Linux only: elsewhere nothing is kept.
#[cfg(not(target_os = "linux"))]
pub(crate) fn report(
    _volume: &str,
    _device: &Path,
    compute: impl FnOnce() -> VolumeReport,
) -> VolumeReport {
    compute()
}

/// The account files a standing is read from.
const ACCOUNT_FILES: [&str; 4] = [
    "/etc/passwd",
    "/etc/group",
    crate::accounts::SHADOW,
    "/etc/nsswitch.conf",
];

/// One file's identity and content stamps.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FileStamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

/// What a standing was read from: each account file's identity and stamps, and the policy.
#[derive(Debug, Clone, PartialEq, Eq)]
struct AccountsKey {
    files: Vec<Option<FileStamp>>,
    policy: String,
}

/// The files' key, or `None` when standings must not be kept (a directory source answers).
fn accounts_key(c: &Config) -> Option<AccountsKey> {
    use std::os::unix::fs::MetadataExt;
    let files: Vec<Option<FileStamp>> = ACCOUNT_FILES
        .iter()
        .map(|f| {
            std::fs::metadata(f).ok().map(|m| FileStamp {
                dev: m.dev(),
                ino: m.ino(),
                size: m.size(),
                mtime: (m.mtime(), m.mtime_nsec()),
                ctime: (m.ctime(), m.ctime_nsec()),
            })
        })
        .collect();
    local_sources(files.last().cloned().flatten()).then(|| AccountsKey {
        files,
        policy: format!("{:?}", c.policy),
    })
}

/// [`files_only`] of /etc/nsswitch.conf, read again only when its stamp changes.
fn local_sources(stamp: Option<FileStamp>) -> bool {
    static LAST: Mutex<Option<(Option<FileStamp>, bool)>> = Mutex::new(None);
    let mut last = lock(&LAST);
    if let Some((kept, verdict)) = last.as_ref() {
        if *kept == stamp && stamp.is_some() {
            return *verdict;
        }
    }
    let nss = std::fs::read_to_string("/etc/nsswitch.conf").unwrap_or_default();
    let verdict = files_only(&nss);
    *last = Some((stamp, verdict));
    verdict
}

/// Whether `nsswitch` answers passwd, group and shadow from local files alone (an absent line
/// means glibc's default, `files`).
fn files_only(nsswitch: &str) -> bool {
    nsswitch
        .lines()
        .map(|l| l.split('#').next().unwrap_or_default())
        .filter_map(|l| l.split_once(':'))
        .filter(|(db, _)| matches!(db.trim(), "passwd" | "group" | "shadow"))
        .all(|(_, sources)| {
            sources
                .split_whitespace()
                .all(|s| matches!(s, "files" | "systemd" | "compat") || s.starts_with('['))
        })
}

/// Standings by name and uid.
type Standings = BTreeMap<(String, u32), &'static str>;

/// The standings kept, with what they were read from.
static STANDINGS: Mutex<Option<(AccountsKey, Standings)>> = Mutex::new(None);

/// Where `name` (granted as `uid`) stands now, as `status` shows it: the kept answer while the
/// account files and policy are unchanged, else a fresh lookup (`accounts::standing`).
pub(crate) fn standing(c: &Config, name: &UserName, uid: Uid) -> &'static str {
    let key = accounts_key(c);
    let entry = (name.to_string(), uid.get());
    if let Some((kept, map)) = lock(&STANDINGS).as_ref() {
        if let Some(label) = map.get(&entry).filter(|_| key.as_ref() == Some(kept)) {
            return label;
        }
    }
    let label = crate::accounts::standing(c, name, Some(uid)).map_or("unknown", |s| s.label());
    if let (Some(k), false) = (key, label == "unknown") {
        let mut kept = lock(&STANDINGS);
        match kept.as_mut() {
            Some((was, map)) if *was == k => {
                map.insert(entry, label);
            }
            _ => *kept = Some((k, BTreeMap::from([(entry, label)]))),
        }
    }
    label
}

#[cfg(test)]
mod tests {
    use super::files_only;

    #[test]
    fn only_local_sources_are_kept() {
        assert!(files_only(
            "passwd: files systemd\ngroup: files systemd\nshadow: files systemd\nhosts: files dns\n"
        ));
        assert!(files_only("hosts: files dns\n"), "absent lines: files");
        assert!(files_only(
            "passwd: compat\ngroup: files [SUCCESS=merge] systemd\n"
        ));
        assert!(!files_only("passwd: files sss\ngroup: files\n"));
        assert!(!files_only("# c\nshadow: files ldap # x\n"));
    }
}
