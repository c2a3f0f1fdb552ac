//! An in-memory [`SlotBackend`] that behaves like a LUKS2 header where it matters to keyward:
//! 32 keyslots, tokens must reference existing slots, destroying a slot unassigns it from
//! tokens, adding a slot needs a secret an existing slot accepts. Used by the property tests
//! here and by the helper's tests; it can fire any named failpoint once, to simulate a crash.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use serde_json::{json, Map, Value};

use crate::error::StoreError;
use crate::ids::{SlotId, TokenId, MAX_SLOTS, MAX_TOKENS};
use crate::kdf::KdfClass;
use crate::model::{SlotPriority, VolumeState};
use crate::orderings::SlotBackend;
use crate::secret::Secret;
use crate::token::KeywardToken;

#[derive(Debug)]
struct FakeSlot {
    secret: Secret,
    kdf: &'static str,
    salt: u64,
    priority: SlotPriority,
}

/// The in-memory volume.
#[derive(Debug)]
pub struct MemoryBackend {
    slots: BTreeMap<SlotId, FakeSlot>,
    tokens: BTreeMap<TokenId, Value>,
    salt: u64,
    now: SystemTime,
    max_tokens: u32,
    fail_at: Option<&'static str>,
    /// Every step name passed, in order (tests read it).
    pub trace: Vec<&'static str>,
}

impl MemoryBackend {
    /// A volume with one unmanaged slot (slot 0) for `secret`, as an installer leaves it.
    pub fn formatted(secret: &Secret) -> Self {
        let mut b = MemoryBackend {
            slots: BTreeMap::new(),
            tokens: BTreeMap::new(),
            salt: 0,
            now: SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_000_000),
            max_tokens: u32::from(MAX_TOKENS),
            fail_at: None,
            trace: Vec::new(),
        };
        b.insert_unmanaged(SlotId::new(0).ok(), secret);
        b
    }

    /// Add a slot the way another tool would (no keyward token), at `slot` or the lowest free.
    pub fn insert_unmanaged(&mut self, slot: Option<SlotId>, secret: &Secret) -> Option<SlotId> {
        let id = slot.or_else(|| {
            (0..u32::from(MAX_SLOTS))
                .filter_map(|n| SlotId::new(n).ok())
                .find(|s| !self.slots.contains_key(s))
        })?;
        self.salt += 1;
        let s = FakeSlot {
            secret: secret.duplicate(),
            kdf: "argon2id",
            salt: self.salt,
            priority: SlotPriority::Normal,
        };
        self.slots.insert(id, s);
        Some(id)
    }

    /// Add another tool's token naming `slot`.
    pub fn insert_foreign_token(&mut self, kind: &str, slot: SlotId) -> Option<TokenId> {
        let id = self.free_token()?;
        let v = json!({"type": kind, "keyslots": [slot.to_string()]});
        self.tokens.insert(id, v);
        Some(id)
    }

    /// Make the next pass over failpoint `name` fail with [`StoreError::Failpoint`].
    pub fn fail_at(&mut self, name: &'static str) {
        self.fail_at = Some(name);
    }

    /// Limit the token area (to test a full one).
    pub fn set_max_tokens(&mut self, n: u32) {
        self.max_tokens = n;
    }

    fn free_token(&self) -> Option<TokenId> {
        (0..self.max_tokens)
            .filter_map(|n| TokenId::new(n).ok())
            .find(|t| !self.tokens.contains_key(t))
    }

    fn check_refs(&self, v: &Value) -> Result<(), StoreError> {
        let refs = v
            .get("keyslots")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for r in refs {
            let ok = r
                .as_str()
                .and_then(|s| SlotId::parse(s).ok())
                .is_some_and(|s| self.slots.contains_key(&s));
            if !ok {
                return Err(StoreError::Backend("token names a missing keyslot".into()));
            }
        }
        Ok(())
    }

    fn keyward_token_mut(&mut self, id: TokenId) -> Result<&mut Value, StoreError> {
        match self.tokens.get_mut(&id) {
            Some(v) if KeywardToken::is_keyward_type(v) => Ok(v),
            _ => Err(StoreError::NotKeywardToken(id)),
        }
    }
}

impl SlotBackend for MemoryBackend {
    type Guard = ();

    fn lock(&mut self) -> Result<(), StoreError> {
        Ok(())
    }

    fn now(&self) -> SystemTime {
        self.now
    }

    fn read(&mut self) -> Result<VolumeState, StoreError> {
        let keyslots: Map<String, Value> = self
            .slots
            .iter()
            .map(|(id, s)| {
                let (kind, hash) = s.kdf.split_once('-').unwrap_or((s.kdf, ""));
                let mut kdf = json!({"type": kind, "salt": s.salt});
                if !hash.is_empty() {
                    kdf["hash"] = json!(hash);
                }
                // The costs libcryptsetup writes: keyward's random-key PBKDF2, and its LUKS2
                // argon2id default on a machine with plenty of memory.
                if kind == "pbkdf2" {
                    kdf["iterations"] = json!(crate::kdf::RANDOM_KEY_PBKDF2_ITERATIONS);
                } else {
                    kdf["time"] = json!(4);
                    kdf["memory"] = json!(1_048_576);
                    kdf["cpus"] = json!(4);
                }
                let mut slot = json!({"type": "luks2", "kdf": kdf});
                if s.priority != SlotPriority::Normal {
                    slot["priority"] = json!(s.priority.to_luks2());
                }
                (id.to_string(), slot)
            })
            .collect();
        let tokens: Map<String, Value> = self
            .tokens
            .iter()
            .map(|(id, v)| (id.to_string(), v.clone()))
            .collect();
        let meta = json!({"keyslots": keyslots, "tokens": tokens});
        VolumeState::from_luks2_json(&meta).map_err(|e| StoreError::Backend(e.to_string()))
    }

    fn add_slot(
        &mut self,
        slot: SlotId,
        authority: &Secret,
        authority_slot: Option<SlotId>,
        secret: &Secret,
        kdf: KdfClass,
    ) -> Result<(), StoreError> {
        let opens = |(id, s): (&SlotId, &FakeSlot)| {
            authority_slot.is_none_or(|a| a == *id) && s.secret.ct_eq(authority)
        };
        if !self.slots.iter().any(opens) {
            return Err(StoreError::AuthenticationFailed);
        }
        if self.slots.contains_key(&slot) {
            return Err(StoreError::Backend(format!("keyslot {slot} is in use")));
        }
        self.salt += 1;
        let kdf = match kdf {
            KdfClass::RandomKey => "pbkdf2-sha512",
            KdfClass::Passphrase => "argon2id",
        };
        let s = FakeSlot {
            secret: secret.duplicate(),
            kdf,
            salt: self.salt,
            priority: SlotPriority::Normal,
        };
        self.slots.insert(slot, s);
        Ok(())
    }

    fn test_slot(&mut self, slot: SlotId, secret: &Secret) -> Result<bool, StoreError> {
        Ok(self
            .slots
            .get(&slot)
            .is_some_and(|s| s.secret.ct_eq(secret)))
    }

    fn destroy_slot(&mut self, slot: SlotId) -> Result<(), StoreError> {
        self.slots
            .remove(&slot)
            .ok_or(StoreError::NoSuchSlot(slot))?;
        let name = Value::String(slot.to_string());
        for v in self.tokens.values_mut() {
            if let Some(Value::Array(a)) = v.get_mut("keyslots") {
                a.retain(|s| *s != name);
            }
        }
        Ok(())
    }

    fn add_token(&mut self, token: &KeywardToken) -> Result<TokenId, StoreError> {
        let v = token.to_json();
        self.check_refs(&v)?;
        let id = self.free_token().ok_or(StoreError::TokenAreaFull)?;
        self.tokens.insert(id, v);
        Ok(id)
    }

    fn replace_token(&mut self, id: TokenId, token: &KeywardToken) -> Result<(), StoreError> {
        let v = token.to_json();
        self.check_refs(&v)?;
        *self.keyward_token_mut(id)? = v;
        Ok(())
    }

    fn remove_token(&mut self, id: TokenId) -> Result<(), StoreError> {
        self.keyward_token_mut(id)?;
        self.tokens.remove(&id);
        Ok(())
    }

    fn set_priority(&mut self, slot: SlotId, priority: SlotPriority) -> Result<(), StoreError> {
        self.slots
            .get_mut(&slot)
            .ok_or(StoreError::NoSuchSlot(slot))?
            .priority = priority;
        Ok(())
    }

    fn failpoint(&mut self, name: &'static str) -> Result<(), StoreError> {
        self.trace.push(name);
        if self.fail_at == Some(name) {
            self.fail_at = None;
            return Err(StoreError::Failpoint(name));
        }
        Ok(())
    }
}
