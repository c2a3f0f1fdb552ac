//! keyward's own record of what it manages on a Mac — the counterpart of the `keyward` tokens
//! in a LUKS2 header, since a Secure Token has no room for them. Each entry is a
//! [`KeywardToken`] (same strict format, same states, so an interrupted operation leaves its
//! intent here) plus the account it belongs to, identified by short name *and* GeneratedUID so
//! a deleted and re-created account with the same name is not mistaken for the old one.
//!
//! The helper keeps it in `state_dir/macos-registry.json` (root, 0600, written atomically);
//! [`MemoryJournal`] serves tests.

use std::path::{Path, PathBuf};

use keyward_core::token::KeywardToken;
use keyward_core::TokenId;
use keyward_sys::safe_fs;
use serde_json::{json, Value};

use crate::error::MacError;
use crate::names::{GeneratedUid, ShortName};

/// The account an entry belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountRef {
    /// Short name.
    pub name: ShortName,
    /// GeneratedUID at grant time.
    pub generated_uid: GeneratedUid,
}

/// One managed unlock right.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Its token number (stable for the entry's life).
    pub id: TokenId,
    /// Role, slot, state, escrow — exactly as in a LUKS2 header.
    pub token: KeywardToken,
    /// The account, for user and service entries; `None` for the recovery key.
    pub account: Option<AccountRef>,
}

/// All entries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Registry {
    /// Entries, by id.
    pub entries: Vec<Entry>,
}

impl Registry {
    /// Add an entry under the lowest free id.
    pub fn add(
        &mut self,
        token: KeywardToken,
        account: Option<AccountRef>,
    ) -> Result<TokenId, MacError> {
        let id = (0..u32::from(keyward_core::ids::MAX_TOKENS))
            .filter_map(|n| TokenId::new(n).ok())
            .find(|id| self.entries.iter().all(|e| e.id != *id))
            .ok_or(MacError::TooManyHolders)?;
        self.entries.push(Entry { id, token, account });
        self.entries.sort_by_key(|e| e.id);
        Ok(id)
    }

    /// The entry with this id.
    pub fn get(&self, id: TokenId) -> Option<&Entry> {
        self.entries.iter().find(|e| e.id == id)
    }

    /// The entry with this id, mutably.
    pub fn get_mut(&mut self, id: TokenId) -> Option<&mut Entry> {
        self.entries.iter_mut().find(|e| e.id == id)
    }

    /// Remove an entry.
    pub fn remove(&mut self, id: TokenId) {
        self.entries.retain(|e| e.id != id);
    }

    /// The JSON form.
    pub fn to_json(&self) -> Value {
        let entries: Vec<Value> = self
            .entries
            .iter()
            .map(|e| {
                let mut v = json!({ "id": e.id.get(), "token": e.token.to_json() });
                if let Some(a) = &e.account {
                    v["account"] = json!({ "name": a.name.as_str(), "generated_uid": a.generated_uid.as_str() });
                }
                v
            })
            .collect();
        json!({ "version": 1, "entries": entries })
    }

    /// Parse the JSON form strictly: anything unexpected is an error (the helper then refuses
    /// to act rather than forget what it manages).
    pub fn from_json(v: &Value) -> Result<Self, MacError> {
        let bad = |m: &str| MacError::Registry(m.to_owned());
        if v.get("version").and_then(Value::as_u64) != Some(1) {
            return Err(bad("unknown version"));
        }
        let mut reg = Registry::default();
        for e in v
            .get("entries")
            .and_then(Value::as_array)
            .ok_or_else(|| bad("no entries"))?
        {
            let obj = e.as_object().ok_or_else(|| bad("entry is not an object"))?;
            if obj
                .keys()
                .any(|k| !matches!(k.as_str(), "id" | "token" | "account"))
            {
                return Err(bad("unknown field in entry"));
            }
            let id = obj
                .get("id")
                .and_then(Value::as_u64)
                .and_then(|n| u32::try_from(n).ok())
                .and_then(|n| TokenId::new(n).ok())
                .ok_or_else(|| bad("bad id"))?;
            let token = KeywardToken::from_json(obj.get("token").ok_or_else(|| bad("no token"))?)
                .map_err(|e| MacError::Registry(e.to_string()))?;
            let account = match obj.get("account") {
                None => None,
                Some(a) => Some(AccountRef {
                    name: ShortName::parse(a.get("name").and_then(Value::as_str).unwrap_or(""))?,
                    generated_uid: GeneratedUid::parse(
                        a.get("generated_uid").and_then(Value::as_str).unwrap_or(""),
                    )?,
                }),
            };
            if reg.get(id).is_some() {
                return Err(bad("duplicate id"));
            }
            reg.entries.push(Entry { id, token, account });
        }
        reg.entries.sort_by_key(|e| e.id);
        Ok(reg)
    }
}

/// Where the registry lives.
pub trait Journal {
    /// Read it (an absent registry is empty).
    fn load(&mut self) -> Result<Registry, MacError>;
    /// Replace it durably.
    fn save(&mut self, registry: &Registry) -> Result<(), MacError>;
}

/// In memory, for tests; can be told to fail one save, as a crash would.
#[derive(Debug, Default)]
pub struct MemoryJournal {
    /// The saved registry.
    pub registry: Registry,
    /// Saves so far.
    pub saves: usize,
    /// Fail the save with this index (0 = the next one made after setting it from 0 saves).
    pub fail_save: Option<usize>,
}

impl Journal for MemoryJournal {
    fn load(&mut self) -> Result<Registry, MacError> {
        Ok(self.registry.clone())
    }

    fn save(&mut self, registry: &Registry) -> Result<(), MacError> {
        let n = self.saves;
        self.saves += 1;
        if self.fail_save == Some(n) {
            return Err(MacError::Registry("save refused (test)".into()));
        }
        self.registry = registry.clone();
        Ok(())
    }
}

impl<J: Journal + ?Sized> Journal for &mut J {
    fn load(&mut self) -> Result<Registry, MacError> {
        (**self).load()
    }
    fn save(&mut self, registry: &Registry) -> Result<(), MacError> {
        (**self).save(registry)
    }
}

/// A JSON file in the helper's root-only state directory, read and written as every such
/// file is (`keyward_sys::safe_fs`): read without following a link and only if owned by the
/// state's owner and private (0600), at most 1 MiB; written to a fresh temporary file (0600),
/// fsynced, renamed over it, directory fsynced.
#[derive(Debug, Clone)]
pub struct FileJournal {
    path: PathBuf,
    owner: u32,
}

impl FileJournal {
    /// The registry at `path`, owned by `owner` (root in the helper).
    pub fn new(path: &Path, owner: u32) -> Self {
        FileJournal {
            path: path.to_owned(),
            owner,
        }
    }
}

fn io(e: std::io::Error) -> MacError {
    MacError::Registry(e.to_string())
}

impl Journal for FileJournal {
    fn load(&mut self) -> Result<Registry, MacError> {
        let expect = safe_fs::Expect::private(self.owner);
        let Some(raw) = safe_fs::read_checked(&self.path, expect, 1 << 20).map_err(io)? else {
            return Ok(Registry::default());
        };
        let v: Value =
            serde_json::from_slice(&raw).map_err(|e| MacError::Registry(e.to_string()))?;
        Registry::from_json(&v)
    }

    fn save(&mut self, registry: &Registry) -> Result<(), MacError> {
        let text = serde_json::to_vec_pretty(&registry.to_json())
            .map_err(|e| MacError::Registry(e.to_string()))?;
        let (Some(dir), Some(name)) = (
            self.path.parent(),
            self.path.file_name().and_then(|n| n.to_str()),
        ) else {
            return Err(MacError::Registry(format!(
                "{}: not a file in a directory",
                self.path.display()
            )));
        };
        safe_fs::write_atomic(dir, name, &text, 0o600).map_err(io)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use keyward_core::token::{EscrowRef, GrantedBy};
    use keyward_core::{Role, SlotId, TokenState};

    fn sample() -> Registry {
        let mut reg = Registry::default();
        let mut t = KeywardToken::new(Role::Service, std::time::UNIX_EPOCH, GrantedBy::Passphrase);
        t.keyslot = Some(SlotId::new(31).unwrap());
        let account = AccountRef {
            name: ShortName::parse("_keyward").unwrap(),
            generated_uid: GeneratedUid::parse("9DB1DCA0-9B6A-464F-94A3-32853C5E2987").unwrap(),
        };
        reg.add(t, Some(account)).unwrap();
        let mut r = KeywardToken::new(Role::Recovery, std::time::UNIX_EPOCH, GrantedBy::Service);
        r.keyslot = Some(SlotId::new(30).unwrap());
        r.state = TokenState::Pending;
        r.escrow = Some(EscrowRef {
            id: "e-1".into(),
            sha256: "a".repeat(64),
        });
        reg.add(r, None).unwrap();
        reg
    }

    #[test]
    fn json_round_trips_and_is_strict() {
        let reg = sample();
        assert_eq!(Registry::from_json(&reg.to_json()).unwrap(), reg);
        let mut v = reg.to_json();
        v["entries"][0]["extra"] = json!(1);
        assert!(Registry::from_json(&v).is_err());
        let mut v = reg.to_json();
        v["entries"][1]["id"] = json!(0);
        assert!(Registry::from_json(&v).is_err(), "duplicate id");
        let mut v = reg.to_json();
        v["entries"][0]["account"]["name"] = json!("-rf");
        assert!(Registry::from_json(&v).is_err());
        assert!(Registry::from_json(&json!({"version": 2, "entries": []})).is_err());
    }

    #[test]
    fn ids_are_reused_lowest_first() {
        let mut reg = sample();
        reg.remove(TokenId::new(0).unwrap());
        let t = KeywardToken::new(Role::Recovery, std::time::UNIX_EPOCH, GrantedBy::Service);
        assert_eq!(reg.add(t, None).unwrap().get(), 0);
    }

    #[test]
    fn the_file_is_private_and_atomic() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("macos-registry.json");
        let me = keyward_sys::hardening::effective_uid();
        let mut j = FileJournal::new(&path, me);
        assert_eq!(j.load().unwrap(), Registry::default());
        j.save(&sample()).unwrap();
        assert_eq!(j.load().unwrap(), sample());
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temporary left"
        );
        // Readable by others, or another owner's: not the helper's record, refused.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(j.load().is_err(), "a registry others can read is refused");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(
            FileJournal::new(&path, me + 1).load().is_err(),
            "another owner's"
        );
        // A symlink in its place is not followed.
        std::fs::remove_file(&path).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", &path).unwrap();
        assert!(j.load().is_err());
    }
}
