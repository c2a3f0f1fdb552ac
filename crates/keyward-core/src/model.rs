//! The model of one volume's unlock rights: its keyslots, the tokens in its header, and the
//! holder each slot belongs to. Built from a LUKS2 header's JSON (or by the in-memory fake);
//! pure functions only.

use serde_json::Value;

use crate::ids::{SlotId, TokenId, Uid, UserName};
use crate::kdf_floor::SlotKdf;
use crate::token::{KeywardToken, Role, TokenState};

/// One active keyslot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotInfo {
    /// Its number.
    pub id: SlotId,
    /// In which order a typed passphrase tries it.
    pub priority: SlotPriority,
    /// KDF as text, e.g. `argon2id` or `pbkdf2-sha512`.
    pub kdf: String,
    /// The KDF's parameters, as the header records them (judged by [`crate::kdf_floor`]).
    pub params: SlotKdf,
    /// The slot's whole JSON object, canonical; any change to the slot changes it (used to
    /// prove that unmanaged slots are untouched, I2).
    pub fingerprint: String,
}

/// A keyslot's LUKS2 priority: the order in which a passphrase typed at boot (cryptsetup,
/// systemd-cryptsetup) tries the slots. `Prefer` slots first, then `Normal` ones; `Ignore`
/// slots only when named explicitly (`--key-slot`), as keyward names its service slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SlotPriority {
    /// Never tried for a typed passphrase (LUKS2 priority 0).
    Ignore,
    /// Tried in header order (1; the default when the header says nothing).
    Normal,
    /// Tried before every other slot (2).
    Prefer,
}

impl SlotPriority {
    /// From the keyslot's JSON `priority` (absent or unknown: normal, as libcryptsetup reads it).
    pub fn from_luks2(v: Option<&Value>) -> Self {
        match v.and_then(Value::as_u64) {
            Some(0) => SlotPriority::Ignore,
            Some(2) => SlotPriority::Prefer,
            _ => SlotPriority::Normal,
        }
    }

    /// The LUKS2 number.
    pub fn to_luks2(self) -> u8 {
        match self {
            SlotPriority::Ignore => 0,
            SlotPriority::Normal => 1,
            SlotPriority::Prefer => 2,
        }
    }

    /// `ignore`, `normal` or `prefer`, as `cryptsetup config --priority` names them.
    pub fn label(self) -> &'static str {
        match self {
            SlotPriority::Ignore => "ignore",
            SlotPriority::Normal => "normal",
            SlotPriority::Prefer => "prefer",
        }
    }
}

/// One token in the header.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TokenEntry {
    /// A valid keyward token.
    Keyward {
        /// Token number.
        id: TokenId,
        /// The parsed token.
        token: KeywardToken,
    },
    /// Another tool's token (systemd-recovery, systemd-tpm2, clevis, …): never touched.
    Foreign {
        /// Token number.
        id: TokenId,
        /// Its `type`, quoted.
        kind: String,
        /// Slots it references.
        keyslots: Vec<SlotId>,
        /// Canonical JSON, for I2.
        fingerprint: String,
    },
    /// A `keyward`-typed token that does not parse: reported, never trusted, never touched.
    Malformed {
        /// Token number.
        id: TokenId,
        /// What is wrong with it.
        reason: String,
        /// Canonical JSON, for I2.
        fingerprint: String,
    },
}

impl TokenEntry {
    /// Token number.
    pub fn id(&self) -> TokenId {
        match self {
            TokenEntry::Keyward { id, .. }
            | TokenEntry::Foreign { id, .. }
            | TokenEntry::Malformed { id, .. } => *id,
        }
    }
}

/// Who owns a slot, as far as keyward is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SlotOwner {
    /// Exactly one valid keyward token owns it, and no other token names it.
    Managed(TokenId),
    /// A keyward token is adding or retiring it: keyward's uncommitted work.
    Transitional(TokenId),
    /// Everything else: made by the installer, cryptsetup, systemd-cryptenroll, or claimed by
    /// more than one token. Keyward never modifies these (I2).
    Unmanaged,
}

/// The role a holder plays, for reports.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum HolderRole {
    /// A managed user.
    User {
        /// Login name.
        name: UserName,
        /// Uid at grant time.
        uid: Uid,
    },
    /// The service account.
    Service,
    /// The recovery key.
    Recovery,
    /// A slot keyward does not manage.
    Unmanaged,
}

impl HolderRole {
    /// `user`, `service`, `recovery` or `unmanaged`.
    pub fn label(&self) -> &'static str {
        match self {
            HolderRole::User { .. } => "user",
            HolderRole::Service => "service",
            HolderRole::Recovery => "recovery",
            HolderRole::Unmanaged => "unmanaged",
        }
    }
}

/// One unlock right, as `keyward status` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// The slot.
    pub slot: SlotId,
    /// Whose it is.
    pub role: HolderRole,
    /// The keyward token's state, for managed and transitional slots.
    pub state: Option<TokenState>,
    /// The slot's KDF.
    pub kdf: String,
    /// The keyward token, if any.
    pub token: Option<TokenId>,
    /// For an escrowed recovery key: the escrow server's id for it.
    pub escrow_id: Option<String>,
    /// When keyward made the slot's token (for a recovery key: when its rotation began).
    pub created: Option<std::time::SystemTime>,
}

/// Everything keyward knows about one volume's header.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VolumeState {
    /// Active keyslots, ascending.
    pub slots: Vec<SlotInfo>,
    /// Tokens, ascending.
    pub tokens: Vec<TokenEntry>,
    /// The order the header's JSON lists its keyslots in, which is the order libcryptsetup
    /// tries a typed passphrase against each priority group (json-c keeps insertion order, so
    /// a slot added later is tried later whatever its number). Empty when unknown (a FileVault
    /// volume, or a header read as parsed JSON): then by number.
    pub slot_order: Vec<SlotId>,
}

/// Why a header's JSON could not be modelled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unexpected LUKS2 metadata: {0}")]
pub struct HeaderParseError(pub String);

impl VolumeState {
    /// Build the model from LUKS2 metadata JSON (`crypt_dump_json`, or
    /// `cryptsetup luksDump --dump-json-metadata`). Keyslot and token ids must be canonical.
    pub fn from_luks2_json(meta: &Value) -> Result<Self, HeaderParseError> {
        let err = |m: &str| HeaderParseError(m.to_owned());
        let keyslots = meta
            .get("keyslots")
            .and_then(Value::as_object)
            .ok_or_else(|| err("no keyslots object"))?;
        let mut slots = Vec::with_capacity(keyslots.len());
        for (k, v) in keyslots {
            let id = SlotId::parse(k).map_err(|e| HeaderParseError(e.to_string()))?;
            let kdf = v.get("kdf").ok_or_else(|| err("keyslot without kdf"))?;
            let params = SlotKdf::from_luks2(kdf);
            let kind = kdf.get("type").and_then(Value::as_str).unwrap_or("unknown");
            let kdf = match kdf.get("hash").and_then(Value::as_str) {
                Some(h) => format!("{kind}-{h}"),
                None => kind.to_owned(),
            };
            slots.push(SlotInfo {
                id,
                priority: SlotPriority::from_luks2(v.get("priority")),
                kdf: kdf
                    .chars()
                    .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
                    .take(32)
                    .collect(),
                params,
                fingerprint: v.to_string(),
            });
        }
        slots.sort_by_key(|s| s.id);
        let mut tokens = Vec::new();
        if let Some(tok) = meta.get("tokens").and_then(Value::as_object) {
            for (k, v) in tok {
                let n: u32 = k.parse().map_err(|_| err("non-numeric token id"))?;
                let id = TokenId::new(n).map_err(|e| HeaderParseError(e.to_string()))?;
                tokens.push(token_entry(id, v));
            }
        }
        tokens.sort_by_key(TokenEntry::id);
        Ok(VolumeState {
            slots,
            tokens,
            slot_order: Vec::new(),
        })
    }

    /// The slot with this number, if active.
    pub fn slot(&self, id: SlotId) -> Option<&SlotInfo> {
        self.slots.iter().find(|s| s.id == id)
    }

    /// The valid keyward tokens.
    pub fn keyward_tokens(&self) -> impl Iterator<Item = (TokenId, &KeywardToken)> {
        self.tokens.iter().filter_map(|t| match t {
            TokenEntry::Keyward { id, token } => Some((*id, token)),
            TokenEntry::Foreign { .. } | TokenEntry::Malformed { .. } => None,
        })
    }

    /// The keyward token with this id.
    pub fn keyward_token(&self, id: TokenId) -> Option<&KeywardToken> {
        self.keyward_tokens()
            .find_map(|(tid, t)| (tid == id).then_some(t))
    }

    /// Who owns `slot`.
    pub fn owner_of(&self, slot: SlotId) -> SlotOwner {
        let mut claims = self
            .keyward_tokens()
            .filter(|(_, t)| t.claimed_slots().any(|s| s == slot));
        let first = claims.next();
        if claims.next().is_some() || self.foreign_claims(slot) {
            return SlotOwner::Unmanaged;
        }
        match first {
            // The token's own keyslot is committed: active, pending, or the old slot of a
            // rekey in progress, or the new slot of one being retired.
            Some((id, t)) if t.keyslot == Some(slot) => SlotOwner::Managed(id),
            Some((id, _)) => SlotOwner::Transitional(id),
            None => SlotOwner::Unmanaged,
        }
    }

    fn foreign_claims(&self, slot: SlotId) -> bool {
        self.tokens.iter().any(|t| match t {
            TokenEntry::Foreign { keyslots, .. } => keyslots.contains(&slot),
            // A malformed keyward token may name any slot; its raw keyslots are in the
            // fingerprint. Treat any slot it names as not ours.
            TokenEntry::Malformed { fingerprint, .. } => malformed_names(fingerprint, slot),
            TokenEntry::Keyward { .. } => false,
        })
    }

    /// Every active slot with its holder.
    pub fn holders(&self) -> Vec<Holder> {
        self.slots
            .iter()
            .map(|s| {
                let (role, state, token, escrow_id, created) = match self.owner_of(s.id) {
                    SlotOwner::Managed(id) | SlotOwner::Transitional(id) => {
                        let t = self.keyward_token(id);
                        let role = match t.map(|t| &t.role) {
                            Some(Role::User { name, uid }) => HolderRole::User {
                                name: name.clone(),
                                uid: *uid,
                            },
                            Some(Role::Service) => HolderRole::Service,
                            Some(Role::Recovery) => HolderRole::Recovery,
                            None => HolderRole::Unmanaged,
                        };
                        let escrow = t.and_then(|t| t.escrow.as_ref()).map(|e| e.id.clone());
                        let created = t.map(|t| t.created);
                        (role, t.map(|t| t.state), Some(id), escrow, created)
                    }
                    SlotOwner::Unmanaged => (HolderRole::Unmanaged, None, None, None, None),
                };
                Holder {
                    slot: s.id,
                    role,
                    state,
                    kdf: s.kdf.clone(),
                    token,
                    escrow_id,
                    created,
                }
            })
            .collect()
    }

    /// The slot keyward granted `user`, and the uid it was granted to, if they hold one.
    pub fn user_slot(&self, user: &UserName) -> Option<(SlotId, Uid)> {
        self.holders().into_iter().find_map(|h| match h.role {
            HolderRole::User { name, uid } if &name == user => Some((h.slot, uid)),
            _ => None,
        })
    }

    /// The lowest slot number that is neither active nor claimed by a keyward token.
    pub fn free_slot(&self) -> Option<SlotId> {
        (0..u32::from(crate::ids::MAX_SLOTS))
            .filter_map(|n| SlotId::new(n).ok())
            .find(|id| {
                self.slot(*id).is_none()
                    && !self
                        .keyward_tokens()
                        .any(|(_, t)| t.claimed_slots().any(|s| s == *id))
            })
    }

    /// The keyward token owning a managed slot, if `slot` is managed.
    pub fn managed_token(&self, slot: SlotId) -> Option<(TokenId, &KeywardToken)> {
        match self.owner_of(slot) {
            SlotOwner::Managed(id) => self.keyward_token(id).map(|t| (id, t)),
            SlotOwner::Transitional(_) | SlotOwner::Unmanaged => None,
        }
    }
}

fn token_entry(id: TokenId, v: &Value) -> TokenEntry {
    let fingerprint = v.to_string();
    if KeywardToken::is_keyward_type(v) {
        return match KeywardToken::from_json(v) {
            Ok(token) => TokenEntry::Keyward { id, token },
            Err(e) => TokenEntry::Malformed {
                id,
                reason: e.0,
                fingerprint,
            },
        };
    }
    let kind = v.get("type").and_then(Value::as_str).unwrap_or("");
    TokenEntry::Foreign {
        id,
        kind: crate::quote(kind),
        keyslots: raw_keyslots(v),
        fingerprint,
    }
}

fn raw_keyslots(v: &Value) -> Vec<SlotId> {
    v.get("keyslots")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .filter_map(|s| SlotId::parse(s).ok())
                .collect()
        })
        .unwrap_or_default()
}

fn malformed_names(fingerprint: &str, slot: SlotId) -> bool {
    serde_json::from_str::<Value>(fingerprint)
        .map(|v| raw_keyslots(&v).contains(&slot))
        .unwrap_or(true)
}
