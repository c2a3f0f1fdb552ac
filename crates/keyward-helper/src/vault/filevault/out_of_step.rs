//! Users whose login password no longer unlocks their Secure Token (a reset without the old
//! password left FileVault on the previous one; `keyward_macos::password_sync`). Only a login
//! can tell — the password is the only test — so a login records what it found here
//! (`state_dir/filevault-out-of-step.json`, root 0600, names only, written atomically) and
//! `keyward verify`, which has no password, reports it as a finding until a later login finds
//! the two in step again.

use std::collections::{BTreeMap, BTreeSet};

use keyward_core::config::Config;
use keyward_sys::safe_fs;

use crate::error::OpError;
use crate::service_secret::state_owner;

const FILE: &str = "filevault-out-of-step.json";

/// Volume name → the users found out of step at their last login.
type Record = BTreeMap<String, BTreeSet<String>>;

fn load(c: &Config) -> Result<Record, OpError> {
    let raw = safe_fs::read_checked(
        &c.state_dir.join(FILE),
        safe_fs::Expect::private(state_owner(c).0),
        1 << 20,
    )
    .map_err(|e| OpError::Failed(format!("{FILE}: {e}")))?;
    match raw {
        None => Ok(Record::new()),
        Some(b) => serde_json::from_slice(&b).map_err(|e| OpError::Failed(format!("{FILE}: {e}"))),
    }
}

/// The users of `volume` last found out of step.
pub(crate) fn users(c: &Config, volume: &str) -> Result<BTreeSet<String>, OpError> {
    Ok(load(c)?.remove(volume).unwrap_or_default())
}

/// Record what a login of `user` on `volume` found (written only when it changes).
pub(crate) fn note(c: &Config, volume: &str, user: &str, out: bool) -> Result<(), OpError> {
    let mut all = load(c)?;
    let users = all.entry(volume.to_owned()).or_default();
    let changed = if out {
        users.insert(user.to_owned())
    } else {
        users.remove(user)
    };
    if !changed {
        return Ok(());
    }
    all.retain(|_, u| !u.is_empty());
    let json = serde_json::to_vec(&all).map_err(|e| OpError::Failed(e.to_string()))?;
    safe_fs::write_atomic(&c.state_dir, FILE, &json, 0o600)
        .map_err(|e| OpError::Failed(format!("{FILE}: {e}")))
}
