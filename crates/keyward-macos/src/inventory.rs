//! Reading a Mac's unlock rights, and presenting them in keyward's volume model.
//!
//! Holders are found by asking `sysadminctl -secureTokenStatus` about each candidate account —
//! never from `fdesetup list`, which lists FileVault users (it can name accounts without a
//! token and miss holders); `fdesetup list` only supplies each holder's crypto user UUID.
//! Candidates are accounts with uid ≥ 500, keyward's service account, and every account
//! keyward's registry names. Hidden accounts below 500 that belong to other vendors are not
//! scanned: keyward may then count fewer holders than there are, which only makes its
//! "is another way in left?" checks stricter.
//!
//! Each holder becomes a "slot" so the platform-neutral model, invariants and reports apply
//! unchanged: managed ones keep the slot number their registry entry names, unmanaged ones get
//! the lowest numbers left.

use std::collections::BTreeMap;

use keyward_core::model::{SlotInfo, TokenEntry, VolumeState};
use keyward_core::token::TokenState;
use keyward_core::SlotId;

use crate::error::MacError;
use crate::names::{AccountId, GeneratedUid, ShortName};
use crate::registry::{Entry, Registry};

/// The "KDF" column for a Secure Token holder.
pub const KDF_SECURE_TOKEN: &str = "secure-token";
/// The "KDF" column for FileVault's personal recovery key.
pub const KDF_RECOVERY_KEY: &str = "recovery-key";

/// One scanned account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// Short name.
    pub name: ShortName,
    /// UniqueID.
    pub uid: AccountId,
    /// GeneratedUID, if the directory has one.
    pub generated_uid: Option<GeneratedUid>,
    /// Holds a Secure Token.
    pub token: bool,
    /// The crypto user UUID `fdesetup list` gives for it, if it is a FileVault user.
    pub crypto_uuid: Option<GeneratedUid>,
}

/// What was read from the Mac.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inventory {
    /// Scanned accounts.
    pub accounts: Vec<Account>,
    /// FileVault has a personal recovery key.
    pub recovery_key: bool,
}

impl Inventory {
    /// The scanned account with this name.
    pub fn account(&self, name: &ShortName) -> Option<&Account> {
        self.accounts.iter().find(|a| &a.name == name)
    }
}

/// What a slot number stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A Secure Token holder.
    Account(Account),
    /// The personal recovery key.
    RecoveryKey,
}

/// The Mac in keyward's model, with the meaning of each slot number.
#[derive(Debug, Clone, Default)]
pub struct View {
    /// Slots and tokens, as for a LUKS2 header.
    pub state: VolumeState,
    /// Slot number → holder.
    pub targets: BTreeMap<SlotId, Target>,
}

impl View {
    /// What `slot` stands for.
    pub fn target(&self, slot: SlotId) -> Option<&Target> {
        self.targets.get(&slot)
    }

    /// The slot an account holds, if any.
    pub fn slot_of(&self, name: &ShortName) -> Option<SlotId> {
        self.targets.iter().find_map(|(s, t)| match t {
            Target::Account(a) if &a.name == name => Some(*s),
            _ => None,
        })
    }

    /// The highest slot number that is neither used nor claimed (keyward's LUKS2 rule, kept
    /// so a number announced in an intent never meets one given to an unmanaged holder).
    pub fn pick_slot(&self) -> Result<SlotId, MacError> {
        (0..u32::from(keyward_core::ids::MAX_SLOTS))
            .rev()
            .filter_map(|n| SlotId::new(n).ok())
            .find(|id| {
                self.state.slot(*id).is_none()
                    && !self
                        .state
                        .keyward_tokens()
                        .any(|(_, t)| t.claimed_slots().any(|s| s == *id))
            })
            .ok_or(MacError::TooManyHolders)
    }
}

/// True if `entry` is about `account` (same name and GeneratedUID).
pub fn entry_matches(entry: &Entry, account: &Account) -> bool {
    entry.account.as_ref().is_some_and(|r| {
        r.name == account.name && account.generated_uid.as_ref() == Some(&r.generated_uid)
    })
}

/// The slot number an entry places its holder at: its own slot, or the one a grant announced.
fn entry_slot(entry: &Entry) -> Option<SlotId> {
    match entry.token.state {
        TokenState::Adding { next } => Some(next),
        _ => entry.token.keyslot,
    }
}

/// Build the model of the Mac from what was read and what keyward recorded.
pub fn build_view(inv: &Inventory, reg: &Registry) -> Result<View, MacError> {
    let mut targets: BTreeMap<SlotId, Target> = BTreeMap::new();
    let mut placed: Vec<&ShortName> = Vec::new();
    let mut recovery_placed = false;
    for e in &reg.entries {
        let Some(slot) = entry_slot(e) else { continue };
        if targets.contains_key(&slot) {
            continue;
        }
        match &e.account {
            Some(_) => {
                if let Some(a) = inv.accounts.iter().find(|a| a.token && entry_matches(e, a)) {
                    if !placed.contains(&&a.name) {
                        placed.push(&a.name);
                        targets.insert(slot, Target::Account(a.clone()));
                    }
                }
            }
            None if inv.recovery_key && !recovery_placed => {
                recovery_placed = true;
                targets.insert(slot, Target::RecoveryKey);
            }
            None => {}
        }
    }
    let claimed: Vec<SlotId> = reg
        .entries
        .iter()
        .flat_map(|e| e.token.claimed_slots().chain(entry_slot(e)))
        .collect();
    let mut free = (0..u32::from(keyward_core::ids::MAX_SLOTS))
        .filter_map(|n| SlotId::new(n).ok())
        .filter(|s| !claimed.contains(s) && !targets.contains_key(s))
        .collect::<Vec<_>>()
        .into_iter();
    for a in inv
        .accounts
        .iter()
        .filter(|a| a.token && !placed.contains(&&a.name))
    {
        let slot = free.next().ok_or(MacError::TooManyHolders)?;
        targets.insert(slot, Target::Account(a.clone()));
    }
    if inv.recovery_key && !recovery_placed {
        let slot = free.next().ok_or(MacError::TooManyHolders)?;
        targets.insert(slot, Target::RecoveryKey);
    }
    let slots = targets
        .iter()
        .map(|(id, t)| SlotInfo {
            id: *id,
            // FileVault has no order of trying: every holder unlocks at its own cost.
            priority: keyward_core::SlotPriority::Normal,
            kdf: match t {
                Target::Account(_) => KDF_SECURE_TOKEN.to_owned(),
                Target::RecoveryKey => KDF_RECOVERY_KEY.to_owned(),
            },
            // macOS derives its own keys; the LUKS2 KDF floor does not apply.
            params: keyward_core::kdf_floor::SlotKdf::NotLuks2,
            fingerprint: match t {
                Target::Account(a) => format!(
                    "account {} {}",
                    a.name,
                    a.generated_uid.as_ref().map_or("-", GeneratedUid::as_str)
                ),
                Target::RecoveryKey => "personal-recovery-key".to_owned(),
            },
        })
        .collect();
    let tokens = reg
        .entries
        .iter()
        .map(|e| TokenEntry::Keyward {
            id: e.id,
            token: e.token.clone(),
        })
        .collect();
    Ok(View {
        state: VolumeState {
            slots,
            tokens,
            ..VolumeState::default()
        },
        targets,
    })
}
