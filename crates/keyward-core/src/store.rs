//! `UnlockStore`: what keyward needs from a platform's unlock rights. LUKS2 implements it
//! through the generic slot orderings in [`crate::orderings`]; macOS (Secure Token) will
//! implement it directly.

use crate::error::StoreError;
use crate::ids::{SlotId, TokenId};
use crate::model::VolumeState;
use crate::secret::Secret;
use crate::token::{GrantedBy, Role};

/// The secret that proves the right to add a slot: keyward's own service secret (the chain
/// of trust) or a current holder's passphrase (bootstrap).
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub enum Authority<'a> {
    /// The service secret: only the active service slot is tried, so a grant costs one cheap
    /// KDF run instead of trying every (argon2id) slot in turn.
    Service(&'a Secret),
    /// A current holder's passphrase: every slot may be tried, as cryptsetup does.
    Holder(&'a Secret),
}

impl Authority<'_> {
    /// The secret.
    pub fn secret(&self) -> &Secret {
        match self {
            Authority::Service(s) | Authority::Holder(s) => s,
        }
    }

    /// What the new token records about how it was granted.
    pub fn granted_by(&self) -> GrantedBy {
        match self {
            Authority::Service(_) => GrantedBy::Service,
            Authority::Holder(_) => GrantedBy::Passphrase,
        }
    }
}

/// What to grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantRequest {
    /// Whose right it is.
    pub role: Role,
    /// Leave the new right `pending` (uncommitted) instead of `active`: a recovery key awaiting
    /// its escrow receipt, or a rotated service secret not yet committed.
    pub pending: bool,
}

impl GrantRequest {
    /// A user's own right, active at once.
    pub fn user(name: crate::UserName, uid: crate::Uid) -> Self {
        GrantRequest {
            role: Role::User { name, uid },
            pending: false,
        }
    }
}

/// Something reconcile did to bring a volume back to a stable state.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReconcileAction {
    /// An interrupted grant was undone: its half-made slot (if any) destroyed, its token removed.
    UndidGrant {
        /// The token removed.
        token: TokenId,
        /// The slot destroyed, if it had been created.
        slot: Option<SlotId>,
    },
    /// An interrupted rekey was undone: the holder keeps the old slot.
    UndidRekey {
        /// The token restored to active.
        token: TokenId,
        /// The new slot destroyed, if it had been created.
        slot: Option<SlotId>,
    },
    /// A rekey that had verified and moved its token was finished: the old slot destroyed.
    FinishedRekey {
        /// The token made active.
        token: TokenId,
        /// The old slot destroyed, if it still existed.
        slot: Option<SlotId>,
    },
    /// An interrupted grant whose right exists was finished (its token made active). LUKS2
    /// undoes such grants; a Mac cannot remove a Secure Token without its holder's password,
    /// so it finishes them.
    FinishedGrant {
        /// The token made active.
        token: TokenId,
        /// The slot it now holds.
        slot: SlotId,
    },
    /// A keyward token whose slot no longer exists was removed.
    RemovedOrphan {
        /// The token removed.
        token: TokenId,
    },
    /// A slot named by a transitional token did not look like keyward's work (wrong KDF), so it
    /// was left alone and the token's claim dropped.
    LeftForeignSlot {
        /// The slot left untouched.
        slot: SlotId,
    },
}

/// A platform's store of unlock rights on one volume.
pub trait UnlockStore {
    /// Read the holders (no lock, no change).
    fn state(&mut self) -> Result<VolumeState, StoreError>;

    /// Add a right for `secret`, opened by `authority`.
    /// Ordering: intent → add slot → verify → commit. Returns the new slot.
    fn grant(
        &mut self,
        req: &GrantRequest,
        authority: Authority<'_>,
        secret: &Secret,
    ) -> Result<SlotId, StoreError>;

    /// Move a managed slot to `secret`, opened by `authority`. Never in place: add new slot,
    /// verify, move the token, kill the old slot. Returns the new slot.
    fn rekey(
        &mut self,
        slot: SlotId,
        authority: Authority<'_>,
        secret: &Secret,
    ) -> Result<SlotId, StoreError>;

    /// Remove a managed slot; refused if it is unmanaged (I2) or the last committed path (I1).
    fn revoke(&mut self, slot: SlotId) -> Result<(), StoreError>;

    /// Commit a pending slot (a rotated secret or recovery key): it becomes a working unlock
    /// path, recording where a recovery key is escrowed. One header write; the old slot, if
    /// any, is the caller's to revoke afterwards.
    fn commit(
        &mut self,
        slot: SlotId,
        escrow: Option<crate::token::EscrowRef>,
    ) -> Result<(), StoreError>;

    /// Does `secret` open `slot`?
    fn verify(&mut self, slot: SlotId, secret: &Secret) -> Result<bool, StoreError>;

    /// Remove keyward tokens whose slot no longer exists: the orphans a reconcile pass
    /// removes (every backend's reconcile cleans them).
    fn clean_orphan_tokens(&mut self) -> Result<Vec<TokenId>, StoreError> {
        Ok(self
            .reconcile()?
            .into_iter()
            .filter_map(|a| match a {
                ReconcileAction::RemovedOrphan { token } => Some(token),
                _ => None,
            })
            .collect())
    }

    /// Finish or undo whatever an interrupted operation left behind, and clean orphans.
    fn reconcile(&mut self) -> Result<Vec<ReconcileAction>, StoreError>;

    /// Make user slot `slot` the one a passphrase typed at boot tries first, and every other
    /// keyward user slot an ordinary one, so the primary user unlocks at single-slot cost
    /// however many users hold slots. Unmanaged slots are never touched (I2). Platforms
    /// without slot priorities have nothing to do.
    fn prefer(&mut self, slot: SlotId) -> Result<(), StoreError> {
        let _ = slot;
        Ok(())
    }

    /// Give service slot `slot` the priority a typed passphrase never tries (LUKS2 `ignore`):
    /// nobody types its random secret, and keyward (or an admin, with `--key-slot`) opens it by
    /// number. Only an active or pending service slot; nothing when it already is. Platforms
    /// without slot priorities have nothing to do.
    fn ignore_at_boot(&mut self, slot: SlotId) -> Result<(), StoreError> {
        let _ = slot;
        Ok(())
    }
}

/// Where a volume's service right stands, whatever its kind: a LUKS2 service slot
/// (`secret_orderings::service::settle`) or a Mac's service account (keyward-macos).
#[derive(Debug)]
pub enum ServiceStanding {
    /// This right works with this stored secret.
    Working(SlotId, Secret),
    /// No service right (bootstrap needed).
    Missing,
    /// A service right exists, but no stored secret opens it.
    Drift(SlotId),
}
