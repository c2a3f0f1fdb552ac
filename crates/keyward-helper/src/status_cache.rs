//! What `keyward status` shows, kept while what it was read from is unchanged (issue 18):
//! each LUKS2 volume's report while its header is byte for byte the same
//! ([`keyward_luks::header_cache`]; reports of an error are recomputed every time), and each
//! holder's standing while the account files have the same stamps and the policy is the same
//! ([`keyward_sys::users::accounts_stamp`], which gives none while a directory answers: then
//! every standing is looked up again). Lookup errors (`unknown`) are never kept.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;

use keyward_core::config::Config;
use keyward_core::ipc::VolumeReport;
use keyward_core::{Uid, UserName};
use keyward_sys::users::{accounts_stamp, AccountsStamp};

use crate::ctx::lock;

/// The report for `device`: the kept one if the header is unchanged, else `compute()`'s.
pub(crate) fn report(
    volume: &str,
    device: &Path,
    compute: impl FnOnce() -> VolumeReport,
) -> VolumeReport {
    static REPORTS: keyward_luks::header_cache::HeaderCache<VolumeReport> =
        keyward_luks::header_cache::HeaderCache::new();
    REPORTS.get(volume, device, compute, |r| r.error.is_none())
}

/// What the kept standings were read from.
#[derive(Debug, Clone, PartialEq, Eq)]
struct AccountsKey {
    files: AccountsStamp,
    policy: String,
}

/// Standings by name and uid.
type Standings = BTreeMap<(String, u32), &'static str>;

/// The standings kept, with what they were read from.
static STANDINGS: Mutex<Option<(AccountsKey, Standings)>> = Mutex::new(None);

/// Where `name` (granted as `uid`) stands now, as `status` shows it: the kept answer while the
/// account files and policy are unchanged, else a fresh lookup (`accounts::standing`).
pub(crate) fn standing(c: &Config, name: &UserName, uid: Uid) -> &'static str {
    let key = accounts_stamp().map(|files| AccountsKey {
        files,
        policy: format!("{:?}", c.policy),
    });
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
