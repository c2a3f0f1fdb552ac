//! Users whose login password no longer unlocks their Secure Token (a reset without the old
//! password left FileVault on the previous one; [`crate::password_sync`]). Only a login can
//! tell — the password is the only test — so a login records what it found here
//! (`state_dir/filevault-out-of-step.json`, beside the registry: root 0600, names only, written
//! atomically, `{"VOLUME":["USER",…]}`) and `keyward verify`, which has no password, reports it
//! as a `filevault-old-password` finding until a later login finds the two in step again.
//!
//! [`FileVaultStore::note_login_sync`] writes it at a login, [`FileVaultStore::old_password_findings`]
//! reads it for `verify`. The file is opened through keyward-sys's checked opening: the caller
//! says who must own it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use keyward_core::ipc::FindingReport;
use keyward_sys::safe_fs;

use crate::error::MacError;
use crate::keychain::Keychain;
use crate::names::ShortName;
use crate::password_sync::{PasswordSync, FINDING};
use crate::registry::Journal;
use crate::runner::Runner;
use crate::store::FileVaultStore;

/// The record's file name in the state directory.
pub const FILE: &str = "filevault-out-of-step.json";

/// Volume name → the users found out of step at their last login.
type Record = BTreeMap<String, BTreeSet<String>>;

/// The record in a state directory.
#[derive(Debug, Clone)]
pub struct OutOfStep {
    dir: PathBuf,
    owner: u32,
}

fn failed(e: impl std::fmt::Display) -> MacError {
    MacError::OutOfStepRecord(e.to_string())
}

impl OutOfStep {
    /// The record in `state_dir`, which must be owned by `owner` and private to it.
    pub fn new(state_dir: &Path, owner: u32) -> Self {
        OutOfStep {
            dir: state_dir.to_owned(),
            owner,
        }
    }

    fn load(&self) -> Result<Record, MacError> {
        let expect = safe_fs::Expect::private(self.owner);
        match safe_fs::read_checked(&self.dir.join(FILE), expect, 1 << 20).map_err(failed)? {
            None => Ok(Record::new()),
            Some(b) => serde_json::from_slice(&b).map_err(failed),
        }
    }

    /// The users of `volume` last found out of step.
    pub fn users(&self, volume: &str) -> Result<BTreeSet<String>, MacError> {
        Ok(self.load()?.remove(volume).unwrap_or_default())
    }

    /// Record what a login of `user` on `volume` found: `out` of step or not. The file is
    /// written only when that changes what it says, and a volume with nobody left goes.
    pub fn note(&self, volume: &str, user: &str, out: bool) -> Result<(), MacError> {
        let mut all = self.load()?;
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
        let json = serde_json::to_vec(&all).map_err(failed)?;
        safe_fs::write_atomic(&self.dir, FILE, &json, 0o600).map_err(failed)
    }
}

impl<R: Runner, J: Journal, K: Keychain> FileVaultStore<R, J, K> {
    /// A token holder macOS just let in as `name` with `password`: does the password also
    /// unlock FileVault, or did a reset leave FileVault on the old one? What it finds goes in
    /// `record` (for `volume`), and `why` — the login's record so far — comes back with it
    /// added. A check that cannot be made is said there too, and the record is left alone; a
    /// record that cannot be written is the error.
    pub fn note_login_sync(
        &mut self,
        record: &OutOfStep,
        volume: &str,
        name: &ShortName,
        password: &keyward_core::Secret,
        why: String,
    ) -> Result<String, MacError> {
        let sync = match self.login_password_sync(name, password) {
            Ok(sync) => sync,
            Err(e) => {
                return Ok(format!(
                    "{why}; FileVault's password could not be checked: {e}"
                ))
            }
        };
        let out = sync == PasswordSync::FileVaultOnOldPassword;
        record.note(volume, name.as_str(), out)?;
        Ok(if out {
            format!("{why}; but {sync}")
        } else {
            why
        })
    }

    /// `keyward verify`'s findings for `volume`: one `filevault-old-password` finding per
    /// token holder whose last login found FileVault on an old password, with the token's slot.
    /// A user who no longer holds a token has no FileVault password to be behind; a record
    /// that cannot be read is a finding too (slot 0, no user), not silence.
    pub fn old_password_findings(
        &mut self,
        record: &OutOfStep,
        volume: &str,
    ) -> Vec<FindingReport> {
        let finding = |user: Option<String>, slot: u32, detail: String| {
            FindingReport::about(FINDING, slot, "user", user, "secure-token", detail)
        };
        let users = match record.users(volume) {
            Ok(u) => u,
            Err(e) => return vec![finding(None, 0, e.to_string())],
        };
        let view = self.view().ok().map(|(_, view)| view);
        users
            .into_iter()
            .filter_map(|user| {
                let slot = ShortName::parse(&user)
                    .ok()
                    .and_then(|n| view.as_ref().and_then(|v| v.slot_of(&n)))?;
                let detail = PasswordSync::FileVaultOnOldPassword.to_string();
                Some(finding(
                    Some(user),
                    slot.get(),
                    format!("at their last login, {detail}"),
                ))
            })
            .collect()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn me() -> u32 {
        rustix::process::geteuid().as_raw()
    }

    fn file(dir: &Path) -> String {
        String::from_utf8(std::fs::read(dir.join(FILE)).unwrap()).unwrap()
    }

    #[test]
    fn a_login_out_of_step_is_recorded_by_name_and_one_in_step_again_clears_it() {
        let dir = tempfile::tempdir().unwrap();
        let r = OutOfStep::new(dir.path(), me());
        assert!(r.users("mac").unwrap().is_empty(), "no file: nobody");
        r.note("mac", "admin", true).unwrap();
        r.note("other", "bob", true).unwrap();
        // The format the helper has always written: volume -> sorted names, nothing else.
        assert_eq!(file(dir.path()), r#"{"mac":["admin"],"other":["bob"]}"#);
        let mode = std::fs::metadata(dir.path().join(FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(
            r.users("mac").unwrap(),
            BTreeSet::from(["admin".to_owned()])
        );
        r.note("mac", "admin", false).unwrap();
        assert_eq!(
            file(dir.path()),
            r#"{"other":["bob"]}"#,
            "an empty volume goes"
        );
        assert!(r.users("mac").unwrap().is_empty());
    }

    #[test]
    fn the_file_is_written_only_when_what_it_says_changes() {
        // A state directory that does not exist: any write would fail.
        let dir = tempfile::tempdir().unwrap();
        let r = OutOfStep::new(&dir.path().join("absent"), me());
        r.note("mac", "admin", false).unwrap();
        let e = r.note("mac", "admin", true).unwrap_err();
        assert!(
            e.to_string().starts_with("filevault-out-of-step.json: "),
            "{e}"
        );
    }

    #[test]
    fn a_record_others_could_write_is_refused_with_its_name() {
        let dir = tempfile::tempdir().unwrap();
        let r = OutOfStep::new(dir.path(), me());
        r.note("mac", "admin", true).unwrap();
        let path = dir.path().join(FILE);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = r.users("mac").unwrap_err();
        assert!(
            e.to_string().starts_with("filevault-out-of-step.json: "),
            "{e}"
        );
        let e = r.note("mac", "admin", false).unwrap_err();
        assert!(
            e.to_string().starts_with("filevault-out-of-step.json: "),
            "{e}"
        );
    }
}
