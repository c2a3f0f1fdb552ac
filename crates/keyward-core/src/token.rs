//! The `keyward` LUKS2 token: what keyward writes into a header to say who a keyslot belongs
//! to, and — while an operation is under way — what it is about to do. The header is its own
//! journal: an interrupted grant or rekey leaves a token in a transitional state that names the
//! slot involved, so a later reconcile knows exactly which slot is keyward's uncommitted work.
//!
//! Parsing is strict: unknown fields, wrong types, impossible combinations are errors, and the
//! caller reports such a token and never trusts it (its slots count as unmanaged).

use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::ids::{SlotId, Uid, UserName};

/// The LUKS2 token type keyward owns.
pub const TOKEN_TYPE: &str = "keyward";

/// Whose unlock right a slot is.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Role {
    /// A managed user's passphrase.
    User {
        /// Login name.
        name: UserName,
        /// Numeric uid at grant time; a reused name with another uid is not the same user.
        uid: Uid,
    },
    /// The `_keyward` service account's random secret.
    Service,
    /// The recovery key.
    Recovery,
}

impl Role {
    /// `user`, `service` or `recovery`.
    pub fn label(&self) -> &'static str {
        match self {
            Role::User { .. } => "user",
            Role::Service => "service",
            Role::Recovery => "recovery",
        }
    }

    /// Human passphrases get a memory-hard KDF; random 256-bit secrets do not need one.
    pub fn kdf_class(&self) -> crate::kdf::KdfClass {
        match self {
            Role::User { .. } => crate::kdf::KdfClass::Passphrase,
            Role::Service | Role::Recovery => crate::kdf::KdfClass::RandomKey,
        }
    }
}

/// How the slot came to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum GrantedBy {
    /// Opened by the service secret (the normal chain of trust).
    Service,
    /// Opened by an existing holder's passphrase (bootstrap).
    Passphrase,
}

/// Where a token is in its life. Only `Active` and `Pending` are stable; the others exist
/// only between the steps of one operation and are finished or undone by reconcile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TokenState {
    /// Committed: the slot is a working unlock path.
    Active,
    /// Added but not committed (a recovery key awaiting its escrow receipt). Never counts as
    /// an unlock path for I1.
    Pending,
    /// Grant in progress: `next` is about to be (or was just) added.
    Adding {
        /// The slot being added.
        next: SlotId,
    },
    /// Rekey in progress: the token still owns its old slot; `next` is being added.
    Rekeying {
        /// The replacement slot.
        next: SlotId,
    },
    /// Rekey committed: the token owns the new slot; `retire` is about to be destroyed.
    Retiring {
        /// The old slot to destroy.
        retire: SlotId,
    },
}

impl TokenState {
    /// True for the states reconcile must finish or undo.
    pub fn is_transitional(&self) -> bool {
        !matches!(self, TokenState::Active | TokenState::Pending)
    }
}

/// An escrowed recovery key's reference, as the escrow server's receipt named it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EscrowRef {
    /// Server-side escrow id.
    pub id: String,
    /// Lowercase hex SHA-256 of the escrowed ciphertext.
    pub sha256: String,
}

/// A parsed, valid `keyward` token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeywardToken {
    /// Whose slot this is.
    pub role: Role,
    /// The slot the token owns; `None` while adding, or after someone destroyed the slot.
    pub keyslot: Option<SlotId>,
    /// When the right was granted (seconds precision).
    pub created: SystemTime,
    /// How it was granted.
    pub granted_by: GrantedBy,
    /// Stable or transitional state.
    pub state: TokenState,
    /// Recovery tokens only: where the key is escrowed.
    pub escrow: Option<EscrowRef>,
}

/// Why a token was rejected; safe to log (no secrets can be in a token).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed keyward token: {0}")]
pub struct TokenParseError(pub String);

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire {
    #[serde(rename = "type")]
    kind: String,
    keyslots: Vec<String>,
    role: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    uid: Option<u32>,
    created: String,
    granted_by: GrantedBy,
    state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    next_keyslot: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    retire_keyslot: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    escrow: Option<EscrowRef>,
}

fn bad(msg: impl Into<String>) -> TokenParseError {
    TokenParseError(msg.into())
}

impl KeywardToken {
    /// A new active token for `role` on `keyslot`.
    pub fn new(role: Role, created: SystemTime, granted_by: GrantedBy) -> Self {
        KeywardToken {
            role,
            keyslot: None,
            created: truncate_to_seconds(created),
            granted_by,
            state: TokenState::Active,
            escrow: None,
        }
    }

    /// The slots this token has a claim on: its own and any it is adding or retiring.
    pub fn claimed_slots(&self) -> impl Iterator<Item = SlotId> {
        let extra = match self.state {
            TokenState::Adding { next } | TokenState::Rekeying { next } => Some(next),
            TokenState::Retiring { retire } => Some(retire),
            TokenState::Active | TokenState::Pending => None,
        };
        self.keyslot.into_iter().chain(extra)
    }

    /// True if `value` claims to be a keyward token (whether or not it parses).
    pub fn is_keyward_type(value: &Value) -> bool {
        value.get("type").and_then(Value::as_str) == Some(TOKEN_TYPE)
    }

    /// Parse a token object from the header, strictly.
    pub fn from_json(value: &Value) -> Result<Self, TokenParseError> {
        let w: Wire = serde_json::from_value(value.clone()).map_err(|e| bad(e.to_string()))?;
        if w.kind != TOKEN_TYPE {
            return Err(bad("type is not \"keyward\""));
        }
        let keyslot = match w.keyslots.as_slice() {
            [] => None,
            [one] => Some(SlotId::parse(one).map_err(|e| bad(e.to_string()))?),
            _ => return Err(bad("a keyward token owns at most one keyslot")),
        };
        let slot_field = |f: &Option<String>, name: &str| -> Result<SlotId, TokenParseError> {
            let s = f
                .as_deref()
                .ok_or_else(|| bad(format!("{name} is required")))?;
            SlotId::parse(s).map_err(|e| bad(e.to_string()))
        };
        let state = match w.state.as_str() {
            "active" => TokenState::Active,
            "pending" => TokenState::Pending,
            "adding" => TokenState::Adding {
                next: slot_field(&w.next_keyslot, "next_keyslot")?,
            },
            "rekeying" => TokenState::Rekeying {
                next: slot_field(&w.next_keyslot, "next_keyslot")?,
            },
            "retiring" => TokenState::Retiring {
                retire: slot_field(&w.retire_keyslot, "retire_keyslot")?,
            },
            other => return Err(bad(format!("unknown state {}", crate::quote(other)))),
        };
        let wants_next = matches!(
            state,
            TokenState::Adding { .. } | TokenState::Rekeying { .. }
        );
        let wants_retire = matches!(state, TokenState::Retiring { .. });
        if w.next_keyslot.is_some() != wants_next || w.retire_keyslot.is_some() != wants_retire {
            return Err(bad("next_keyslot/retire_keyslot do not match the state"));
        }
        if matches!(state, TokenState::Adding { .. }) && keyslot.is_some() {
            return Err(bad("an adding token owns no keyslot yet"));
        }
        if state.is_transitional() && keyslot.is_some() && keyslot == w_next_or_retire(&state) {
            return Err(bad("a token cannot replace a slot with itself"));
        }
        let role = match (w.role.as_str(), w.user, w.uid) {
            ("user", Some(user), Some(uid)) => Role::User {
                name: UserName::parse(&user).map_err(|e| bad(e.to_string()))?,
                uid: Uid::new(uid).map_err(|e| bad(e.to_string()))?,
            },
            ("user", _, _) => return Err(bad("a user token needs user and uid")),
            ("service", None, None) => Role::Service,
            ("recovery", None, None) => Role::Recovery,
            ("service" | "recovery", _, _) => return Err(bad("only user tokens name a user")),
            (other, _, _) => return Err(bad(format!("unknown role {}", crate::quote(other)))),
        };
        if w.escrow.is_some() && role != Role::Recovery {
            return Err(bad("only recovery tokens carry an escrow reference"));
        }
        if let Some(e) = &w.escrow {
            let id_ok = (1..=64).contains(&e.id.len())
                && e.id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            let sha_ok = e.sha256.len() == 64
                && e.sha256
                    .bytes()
                    .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
            if !id_ok || !sha_ok {
                return Err(bad("escrow id or sha256 is malformed"));
            }
        }
        if state == TokenState::Pending && matches!(role, Role::User { .. }) {
            return Err(bad("user tokens are never pending"));
        }
        let created = humantime::parse_rfc3339(&w.created).map_err(|e| bad(e.to_string()))?;
        Ok(KeywardToken {
            role,
            keyslot,
            created,
            granted_by: w.granted_by,
            state,
            escrow: w.escrow,
        })
    }

    /// The JSON object to write into the header.
    pub fn to_json(&self) -> Value {
        let (user, uid) = match &self.role {
            Role::User { name, uid } => (Some(name.as_str().to_owned()), Some(uid.get())),
            Role::Service | Role::Recovery => (None, None),
        };
        let (state, next, retire) = match self.state {
            TokenState::Active => ("active", None, None),
            TokenState::Pending => ("pending", None, None),
            TokenState::Adding { next } => ("adding", Some(next), None),
            TokenState::Rekeying { next } => ("rekeying", Some(next), None),
            TokenState::Retiring { retire } => ("retiring", None, Some(retire)),
        };
        let wire = Wire {
            kind: TOKEN_TYPE.to_owned(),
            keyslots: self.keyslot.iter().map(ToString::to_string).collect(),
            role: self.role.label().to_owned(),
            user,
            uid,
            created: humantime::format_rfc3339_seconds(self.created).to_string(),
            granted_by: self.granted_by,
            state: state.to_owned(),
            next_keyslot: next.map(|s| s.to_string()),
            retire_keyslot: retire.map(|s| s.to_string()),
            escrow: self.escrow.clone(),
        };
        // Serializing a struct of strings and integers into a Value cannot fail.
        serde_json::to_value(wire).unwrap_or(Value::Null)
    }
}

fn w_next_or_retire(state: &TokenState) -> Option<SlotId> {
    match *state {
        TokenState::Adding { next } | TokenState::Rekeying { next } => Some(next),
        TokenState::Retiring { retire } => Some(retire),
        TokenState::Active | TokenState::Pending => None,
    }
}

fn truncate_to_seconds(t: SystemTime) -> SystemTime {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(secs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn design_example() -> Value {
        json!({ "type": "keyward", "keyslots": ["3"], "role": "user", "user": "alice", "uid": 1001,
                "created": "2026-11-22T10:00:00Z", "granted_by": "service", "state": "active" })
    }

    #[test]
    fn parses_the_design_example_and_round_trips() {
        let t = KeywardToken::from_json(&design_example()).expect("valid");
        assert_eq!(t.keyslot, SlotId::new(3).ok());
        assert_eq!(t.role.label(), "user");
        assert_eq!(t.to_json(), design_example());
    }

    #[test]
    fn recovery_with_escrow_round_trips() {
        let v = json!({ "type": "keyward", "keyslots": ["1"], "role": "recovery",
            "created": "2026-11-22T10:00:00Z", "granted_by": "service", "state": "pending",
            "escrow": {"id": "e-1", "sha256": "a".repeat(64)} });
        let t = KeywardToken::from_json(&v).expect("valid");
        assert_eq!(t.to_json(), v);
    }

    #[test]
    fn transitional_states_round_trip() {
        let v = json!({ "type": "keyward", "keyslots": ["3"], "role": "service",
            "created": "2026-11-22T10:00:00Z", "granted_by": "passphrase", "state": "rekeying",
            "next_keyslot": "4" });
        let t = KeywardToken::from_json(&v).expect("valid");
        assert_eq!(t.claimed_slots().count(), 2);
        assert_eq!(t.to_json(), v);
    }

    #[test]
    fn strictness() {
        // Each case merges a patch into the valid example; `null` removes a field.
        let cases = [
            ("unknown field", json!({"extra": 1})),
            ("two slots", json!({"keyslots": ["1", "2"]})),
            ("slot 32", json!({"keyslots": ["32"]})),
            ("slot as number", json!({"keyslots": [3]})),
            ("no uid", json!({"uid": null})),
            ("uid -1", json!({"uid": u32::MAX})),
            ("negative uid", json!({"uid": -5})),
            ("bad user", json!({"user": "../root"})),
            ("bad role", json!({"role": "admin"})),
            ("bad state", json!({"state": "weird"})),
            ("pending user", json!({"state": "pending"})),
            ("bad time", json!({"created": "yesterday"})),
            ("other type", json!({"type": "systemd-tpm2"})),
            (
                "escrow on user",
                json!({"escrow": {"id": "x", "sha256": "a".repeat(64)}}),
            ),
            ("stray next", json!({"next_keyslot": "4"})),
            ("rekey without next", json!({"state": "rekeying"})),
        ];
        for (name, patch) in cases {
            let mut v = design_example();
            if let (Value::Object(m), Value::Object(p)) = (&mut v, patch) {
                for (k, val) in p {
                    if val.is_null() {
                        m.remove(&k);
                    } else {
                        m.insert(k, val);
                    }
                }
            }
            assert!(
                KeywardToken::from_json(&v).is_err(),
                "{name} should be rejected"
            );
        }
    }
}
