//! Each holder's standing as `keyward status` shows it, kept while what it was read from is
//! unchanged (issue 18; a LUKS2 volume's report is kept by `vault::luks::status` while its
//! header is the same): while the account files have the same stamps and the policy is the same
//! ([`keyward_sys::users::accounts_stamp`], which gives none while a directory answers: then
//! every standing is looked up again). Lookup errors (`unknown`) are never kept.

use std::collections::BTreeMap;
use std::sync::Mutex;

use keyward_core::config::Config;
use keyward_core::{Uid, UserName};
use keyward_sys::users::{accounts_stamp, AccountsStamp};

use crate::ctx::lock;

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
