//! The simulated Mac of a `simulated-mac` test helper, kept where a real Mac keeps its state:
//! not in the helper's memory. The Mac's model is in `<state_dir>/simulated-mac.json` and the
//! System keychain's items in `<state_dir>/simulated-keychain.json` (two stores, as on a Mac;
//! root-only, 0600, for they hold passwords). After every step that changes one of them, that
//! file is written atomically (temp, fsync, rename, fsync the directory) and then the step's
//! crash point is passed, so a helper killed anywhere leaves what a real Mac would still have,
//! and the next helper starts from it. A helper holds one simulated Mac ([`with`], the seams'
//! stand-in for Apple's tools), loaded from those files the first time it is touched. Compiled
//! into test builds only.
//!
//! The simulated Mac's answers are keyward-macos's, unchanged: this wraps it.

use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use keyward_core::config::Config;
use keyward_core::Secret;
use keyward_macos::command::{Invocation, Purpose};
use keyward_macos::fake::{persist, FakeMac};
use keyward_macos::keychain::{Keychain, KeychainItem, MemoryKeychain};
use keyward_macos::runner::{Output, RunError, Runner};
use keyward_macos::MacError;
use keyward_sys::safe_fs;
use zeroize::Zeroizing;

use super::steps::failpoint;

/// The Mac's model.
pub const MAC_FILE: &str = "simulated-mac.json";
/// The keychain's items.
pub const KEYCHAIN_FILE: &str = "simulated-keychain.json";
const LIMIT: u64 = 1 << 20;

/// Where the files are, and who must own them.
#[derive(Debug, Clone)]
struct Place {
    dir: PathBuf,
    owner: u32,
}

impl Place {
    fn read(&self, name: &str) -> std::io::Result<Option<Zeroizing<Vec<u8>>>> {
        let raw = safe_fs::read_checked(
            &self.dir.join(name),
            safe_fs::Expect::private(self.owner),
            LIMIT,
        )?;
        Ok(raw.map(Zeroizing::new))
    }

    fn write(&self, name: &str, bytes: &[u8]) -> std::io::Result<()> {
        safe_fs::write_atomic(&self.dir, name, bytes, 0o600)
    }
}

/// The simulated Mac, saved after each command that changed it.
#[derive(Debug)]
pub struct SimMac {
    mac: FakeMac,
    place: Option<Place>,
    saved: Zeroizing<Vec<u8>>,
}

/// The simulated System keychain, saved after each item written or deleted.
#[derive(Debug)]
pub struct SimKeychain {
    keys: MemoryKeychain,
    place: Option<Place>,
    saved: Zeroizing<Vec<u8>>,
}

fn io_error(what: &str, e: impl std::fmt::Display) -> String {
    format!("{what}: {e}")
}

/// The Mac and keychain saved in `dir` (owned by `owner`), or the typical Mac (and an empty
/// keychain) saved there now if there are none yet.
pub fn load(dir: &Path, owner: u32) -> Result<(SimMac, SimKeychain), MacError> {
    let place = Place {
        dir: dir.to_owned(),
        owner,
    };
    let run_error = |e: String| {
        MacError::Run(RunError::Io {
            program: "the simulated Mac",
            reason: e,
        })
    };
    let mac = match place
        .read(MAC_FILE)
        .map_err(|e| run_error(io_error(MAC_FILE, e)))?
    {
        Some(b) => persist::mac_from_json(&b).map_err(|e| run_error(e.to_string()))?,
        None => FakeMac::typical(),
    };
    let keys = match place
        .read(KEYCHAIN_FILE)
        .map_err(|e| MacError::Keychain(io_error(KEYCHAIN_FILE, e)))?
    {
        Some(b) => {
            persist::keychain_from_json(&b).map_err(|e| MacError::Keychain(e.to_string()))?
        }
        None => MemoryKeychain::default(),
    };
    let mut mac = SimMac {
        mac,
        place: Some(place.clone()),
        saved: Zeroizing::new(Vec::new()),
    };
    let mut keys = SimKeychain {
        keys,
        place: Some(place),
        saved: Zeroizing::new(Vec::new()),
    };
    mac.save_if_changed().map_err(run_error)?;
    keys.save_if_changed().map_err(MacError::Keychain)?;
    Ok((mac, keys))
}

impl SimMac {
    /// A Mac kept in memory only (the helper's unit tests).
    #[cfg(test)]
    pub fn in_memory(mac: FakeMac) -> Self {
        SimMac {
            mac,
            place: None,
            saved: Zeroizing::new(Vec::new()),
        }
    }

    /// Write the model if it differs from what was last written; whether it did.
    fn save_if_changed(&mut self) -> Result<bool, String> {
        let Some(place) = &self.place else {
            return Ok(false);
        };
        let now = persist::mac_to_json(&self.mac).map_err(|e| e.to_string())?;
        if *now == *self.saved {
            return Ok(false);
        }
        place
            .write(MAC_FILE, &now)
            .map_err(|e| io_error(MAC_FILE, e))?;
        self.saved = now;
        Ok(true)
    }
}

impl Deref for SimMac {
    type Target = FakeMac;
    fn deref(&self) -> &FakeMac {
        &self.mac
    }
}

impl DerefMut for SimMac {
    fn deref_mut(&mut self) -> &mut FakeMac {
        &mut self.mac
    }
}

impl Runner for SimMac {
    fn run(&mut self, inv: &Invocation) -> Result<Output, RunError> {
        let out = self.mac.run(inv);
        let changed = self.save_if_changed().map_err(|reason| RunError::Io {
            program: "the simulated Mac",
            reason,
        })?;
        if changed {
            // The commands the helper sends that change a Mac. (The login right is the
            // installer's, which the CLI writes; `removerecovery` has no caller in the helper.)
            match inv.purpose {
                Purpose::TokenOn => failpoint("filevault-mac.token-on"),
                Purpose::TokenOff => failpoint("filevault-mac.token-off"),
                Purpose::DeleteUser => failpoint("filevault-mac.user-deleted"),
                Purpose::ChangeRecovery => failpoint("filevault-mac.recovery-changed"),
                Purpose::DirectoryWrite => failpoint("filevault-mac.directory-written"),
                Purpose::ChangePassword => failpoint("filevault-mac.password-changed"),
                Purpose::SetInitialPassword => failpoint("filevault-mac.password-set"),
                _ => {}
            }
        }
        out
    }
}

impl SimKeychain {
    /// A keychain kept in memory only (the helper's unit tests).
    #[cfg(test)]
    pub fn in_memory(keys: MemoryKeychain) -> Self {
        SimKeychain {
            keys,
            place: None,
            saved: Zeroizing::new(Vec::new()),
        }
    }

    fn save_if_changed(&mut self) -> Result<bool, String> {
        let Some(place) = &self.place else {
            return Ok(false);
        };
        let now = persist::keychain_to_json(&mut self.keys).map_err(|e| e.to_string())?;
        if *now == *self.saved {
            return Ok(false);
        }
        place
            .write(KEYCHAIN_FILE, &now)
            .map_err(|e| io_error(KEYCHAIN_FILE, e))?;
        self.saved = now;
        Ok(true)
    }
}

impl Deref for SimKeychain {
    type Target = MemoryKeychain;
    fn deref(&self) -> &MemoryKeychain {
        &self.keys
    }
}

impl DerefMut for SimKeychain {
    fn deref_mut(&mut self) -> &mut MemoryKeychain {
        &mut self.keys
    }
}

impl Keychain for SimKeychain {
    fn read(&mut self, item: KeychainItem) -> Result<Option<Secret>, MacError> {
        self.keys.read(item)
    }

    fn write(&mut self, item: KeychainItem, secret: &Secret) -> Result<(), MacError> {
        self.keys.write(item, secret)?;
        if self.save_if_changed().map_err(MacError::Keychain)? {
            match item {
                KeychainItem::ServiceCurrent => failpoint("filevault-keychain.current-written"),
                KeychainItem::ServiceNext => failpoint("filevault-keychain.next-written"),
                _ => {}
            }
        }
        Ok(())
    }

    fn delete(&mut self, item: KeychainItem) -> Result<(), MacError> {
        self.keys.delete(item)?;
        if self.save_if_changed().map_err(MacError::Keychain)? {
            match item {
                KeychainItem::ServiceCurrent => failpoint("filevault-keychain.current-deleted"),
                KeychainItem::ServiceNext => failpoint("filevault-keychain.next-deleted"),
                _ => {}
            }
        }
        Ok(())
    }
}

/// The simulated Mac and its keychain, read from the state directory the first time the
/// helper touches them (the typical Mac if there is none yet: an admin holding a token, a
/// user without one, FileVault on), and saved there after every change.
static SIM: Mutex<Option<(SimMac, SimKeychain)>> = Mutex::new(None);

/// Run `f` on the helper's one simulated Mac and its keychain, one operation at a time (the
/// seams' `with` in a `simulated-mac` build).
pub fn with<T>(
    c: &Config,
    f: impl FnOnce(&mut SimMac, &mut SimKeychain) -> T,
) -> Result<T, MacError> {
    let mut sim = SIM.lock().unwrap_or_else(PoisonError::into_inner);
    let (mac, keys) = match &mut *sim {
        Some(loaded) => loaded,
        none => none.insert(load(&c.state_dir, crate::ctx::state_owner(c).0)?),
    };
    let out = f(mac, keys);
    // The simulation records every call for its own tests; a long-lived helper drops them.
    mac.calls.clear();
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    use keyward_macos::build::dscl;
    use keyward_macos::names::ShortName;

    use super::*;

    #[test]
    fn a_change_is_in_the_root_only_files_when_the_step_returns_and_the_next_load_sees_it() {
        let dir = tempfile::tempdir().unwrap();
        let owner = std::fs::metadata(dir.path()).unwrap().uid();
        let (mut mac, mut keys) = load(dir.path(), owner).unwrap();
        for file in [MAC_FILE, KEYCHAIN_FILE] {
            let meta = std::fs::metadata(dir.path().join(file)).unwrap();
            assert_eq!(meta.permissions().mode() & 0o777, 0o600, "{file}");
        }
        let name = ShortName::parse("_keyward").unwrap();
        mac.run(&dscl::create_account(&name)).unwrap();
        keys.write(KeychainItem::ServiceNext, &Secret::copy_from(b"n3xt"))
            .unwrap();
        // A reader (a read changes nothing, so nothing is written for it).
        mac.run(&dscl::read_account(&name)).unwrap();

        // What the next helper process would load, without anything kept in memory.
        let (again, mut keys_again) = load(dir.path(), owner).unwrap();
        assert!(again.account("_keyward").is_some());
        assert!(again.account("admin").is_some_and(|a| a.token));
        let next = keys_again.read(KeychainItem::ServiceNext).unwrap().unwrap();
        assert_eq!(next.expose(), b"n3xt");
        assert!(keys_again
            .read(KeychainItem::ServiceCurrent)
            .unwrap()
            .is_none());
    }
}
