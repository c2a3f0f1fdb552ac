//! The orderings of DESIGN.md section 5, written once over a small set of keyslot primitives
//! ([`SlotBackend`]) and shared by the LUKS2 backend and the in-memory fake, so the property
//! tests exercise the very code that changes real headers.
//!
//! Every multi-step change first writes its intent into the keyward token (the header is its
//! own journal), so a crash at any step leaves a state that [`UnlockStore::reconcile`] finishes
//! or undoes without guessing. Each step boundary is a named failpoint, reconcile's own too: a
//! crash while reconciling leaves a state the next reconcile finishes.

use std::time::SystemTime;

use crate::error::{Refusal, StoreError};
use crate::ids::{SlotId, TokenId, MAX_SLOTS};
use crate::invariants::{check_transition, removal_keeps_a_way_in};
use crate::kdf::KdfClass;
use crate::model::{SlotOwner, SlotPriority, VolumeState};
use crate::secret::Secret;
use crate::store::{Authority, GrantRequest, ReconcileAction, UnlockStore};
use crate::token::{KeywardToken, Role, TokenState};

/// The primitives a slot-and-token platform (LUKS2) offers. Implementations do one header
/// change per call, never interpret tokens beyond refusing to rewrite non-keyward ones, and
/// retry internally on transient contention.
pub trait SlotBackend {
    /// Held for the duration of one composite operation.
    type Guard;
    /// Take the per-volume advisory lock.
    fn lock(&mut self) -> Result<Self::Guard, StoreError>;
    /// The clock (injected, so the core stays deterministic).
    fn now(&self) -> SystemTime;
    /// Read the header.
    fn read(&mut self) -> Result<VolumeState, StoreError>;
    /// Add keyslot `slot` for `secret`, unlocking the volume key with `authority` — from
    /// `authority_slot` only, when given, else from whichever slot accepts it.
    fn add_slot(
        &mut self,
        slot: SlotId,
        authority: &Secret,
        authority_slot: Option<SlotId>,
        secret: &Secret,
        kdf: KdfClass,
    ) -> Result<(), StoreError>;
    /// Does `secret` open `slot`?
    fn test_slot(&mut self, slot: SlotId, secret: &Secret) -> Result<bool, StoreError>;
    /// Destroy keyslot `slot`.
    fn destroy_slot(&mut self, slot: SlotId) -> Result<(), StoreError>;
    /// Add a keyward token; returns its id.
    fn add_token(&mut self, token: &KeywardToken) -> Result<TokenId, StoreError>;
    /// Replace keyward token `id`. Must refuse if `id` is not a keyward token.
    fn replace_token(&mut self, id: TokenId, token: &KeywardToken) -> Result<(), StoreError>;
    /// Remove keyward token `id`. Must refuse if `id` is not a keyward token.
    fn remove_token(&mut self, id: TokenId) -> Result<(), StoreError>;
    /// Set keyslot `slot`'s priority (the order a typed passphrase tries slots in).
    fn set_priority(&mut self, slot: SlotId, priority: SlotPriority) -> Result<(), StoreError>;
    /// A named step boundary. Test builds make it fail or kill the process; production: no-op.
    fn failpoint(&mut self, _name: &'static str) -> Result<(), StoreError> {
        Ok(())
    }
}

/// [`UnlockStore`] for any [`SlotBackend`].
#[derive(Debug)]
pub struct SlotStore<B> {
    backend: B,
}

impl<B: SlotBackend> SlotStore<B> {
    /// Wrap a backend.
    pub fn new(backend: B) -> Self {
        SlotStore { backend }
    }

    /// The backend (tests inspect it).
    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// The backend, mutably.
    pub fn backend_mut(&mut self) -> &mut B {
        &mut self.backend
    }

    /// Read, reconciling first if a previous operation was interrupted. Caller holds the lock.
    fn stable_state(&mut self) -> Result<VolumeState, StoreError> {
        let state = self.backend.read()?;
        let actions = reconcile_locked(&mut self.backend, &state)?;
        if actions.is_empty() {
            Ok(state)
        } else {
            self.backend.read()
        }
    }

    fn check_after(&mut self, before: &VolumeState) -> Result<(), StoreError> {
        let after = self.backend.read()?;
        let violations = check_transition(before, &after);
        if violations.is_empty() {
            Ok(())
        } else {
            let text: Vec<String> = violations.iter().map(ToString::to_string).collect();
            Err(StoreError::InvariantViolated(text.join("; ")))
        }
    }

    /// Add `next` and prove it opens; on failure undo the slot and restore `fallback`
    /// (or remove the token when there is none) so nothing is left behind.
    fn add_verified(
        &mut self,
        (tid, token): (TokenId, &KeywardToken),
        next: SlotId,
        authority: (&Secret, Option<SlotId>),
        secret: &Secret,
        fallback: Option<&KeywardToken>,
        step: [&'static str; 2],
    ) -> Result<(), StoreError> {
        let kdf = token.role.kdf_class();
        let added = self
            .backend
            .add_slot(next, authority.0, authority.1, secret, kdf);
        let result = added.and_then(|()| {
            self.backend.failpoint(step[0])?;
            if self.backend.test_slot(next, secret)? {
                self.backend.failpoint(step[1])
            } else {
                Err(StoreError::Backend(format!(
                    "new keyslot {next} did not open with its secret"
                )))
            }
        });
        if let Err(e) = result {
            if matches!(e, StoreError::Failpoint(_)) {
                return Err(e);
            }
            let state = self.backend.read()?;
            if state.slot(next).is_some() {
                self.backend.destroy_slot(next)?;
            }
            match fallback {
                Some(t) => self.backend.replace_token(tid, t)?,
                None => self.backend.remove_token(tid)?,
            }
            return Err(e);
        }
        Ok(())
    }
}

/// Keyward picks the highest free slot: `cryptsetup luksAddKey` and `systemd-cryptenroll`
/// pick the lowest, so a slot number keyward announced in a token and another tool's new slot
/// almost never coincide (see docs/ARCHITECTURE.md).
fn pick_slot(state: &VolumeState) -> Result<SlotId, StoreError> {
    (0..u32::from(MAX_SLOTS))
        .rev()
        .filter_map(|n| SlotId::new(n).ok())
        .find(|id| {
            state.slot(*id).is_none()
                && !state
                    .keyward_tokens()
                    .any(|(_, t)| t.claimed_slots().any(|s| s == *id))
        })
        .ok_or(StoreError::NoFreeSlot)
}

/// The secret and the one slot to try it on (`None`: any slot).
fn authority_slot<'a>(
    state: &VolumeState,
    authority: Authority<'a>,
) -> Result<(&'a Secret, Option<SlotId>), StoreError> {
    match authority {
        Authority::Holder(s) => Ok((s, None)),
        Authority::Service(s) => state
            .keyward_tokens()
            .find(|(_, t)| t.role == Role::Service && t.state == TokenState::Active)
            .and_then(|(_, t)| t.keyslot)
            .map(|slot| (s, Some(slot)))
            .ok_or(StoreError::NoServiceSlot),
    }
}

fn existing_holder(state: &VolumeState, req: &GrantRequest) -> Option<SlotId> {
    state.keyward_tokens().find_map(|(_, t)| {
        let same = match (&t.role, &req.role) {
            (Role::User { name: a, .. }, Role::User { name: b, .. }) => a == b,
            (Role::Service, Role::Service) | (Role::Recovery, Role::Recovery) => {
                !req.pending && t.state == TokenState::Active
            }
            _ => false,
        };
        if same {
            t.keyslot
        } else {
            None
        }
    })
}

impl<B: SlotBackend> UnlockStore for SlotStore<B> {
    fn state(&mut self) -> Result<VolumeState, StoreError> {
        self.backend.read()
    }

    fn grant(
        &mut self,
        req: &GrantRequest,
        authority: Authority<'_>,
        secret: &Secret,
    ) -> Result<SlotId, StoreError> {
        let _guard = self.backend.lock()?;
        let before = self.stable_state()?;
        if let Some(slot) = existing_holder(&before, req) {
            return Err(Refusal::AlreadyHolds(slot).into());
        }
        let auth = authority_slot(&before, authority)?;
        let next = pick_slot(&before)?;
        let now = self.backend.now();
        let mut token = KeywardToken::new(req.role.clone(), now, authority.granted_by());
        token.state = TokenState::Adding { next };
        let tid = self.backend.add_token(&token)?;
        self.backend.failpoint("grant.intent-written")?;
        let steps = ["grant.slot-added", "grant.verified"];
        self.add_verified((tid, &token), next, auth, secret, None, steps)?;
        token.keyslot = Some(next);
        token.state = if req.pending {
            TokenState::Pending
        } else {
            TokenState::Active
        };
        self.backend.replace_token(tid, &token)?;
        self.backend.failpoint("grant.committed")?;
        self.check_after(&before)?;
        Ok(next)
    }

    fn rekey(
        &mut self,
        slot: SlotId,
        authority: Authority<'_>,
        secret: &Secret,
    ) -> Result<SlotId, StoreError> {
        let _guard = self.backend.lock()?;
        let before = self.stable_state()?;
        let (tid, current) = managed(&before, slot)?;
        if current.state != TokenState::Active {
            return Err(Refusal::InTransition(slot).into());
        }
        let auth = authority_slot(&before, authority)?;
        let next = pick_slot(&before)?;
        let mut token = current.clone();
        token.state = TokenState::Rekeying { next };
        self.backend.replace_token(tid, &token)?;
        self.backend.failpoint("rekey.intent-written")?;
        let steps = ["rekey.slot-added", "rekey.verified"];
        self.add_verified((tid, &token), next, auth, secret, Some(&current), steps)?;
        token.keyslot = Some(next);
        token.state = TokenState::Retiring { retire: slot };
        self.backend.replace_token(tid, &token)?;
        self.backend.failpoint("rekey.token-moved")?;
        self.backend.destroy_slot(slot)?;
        self.backend.failpoint("rekey.old-destroyed")?;
        token.state = TokenState::Active;
        self.backend.replace_token(tid, &token)?;
        self.check_after(&before)?;
        Ok(next)
    }

    fn revoke(&mut self, slot: SlotId) -> Result<(), StoreError> {
        let _guard = self.backend.lock()?;
        let before = self.stable_state()?;
        let (tid, token) = managed(&before, slot)?;
        if !removal_keeps_a_way_in(&before, slot) {
            return Err(Refusal::WouldLockOut(slot).into());
        }
        // Intent first: libcryptsetup wipes a slot's key material before it rewrites the
        // header, so a crash inside destroy can leave a slot that opens nothing still listed.
        // The token then already says the slot is on its way out (no longer a way in), and
        // reconcile finishes the destroy.
        let mut retiring = token;
        retiring.keyslot = None;
        retiring.state = TokenState::Retiring { retire: slot };
        self.backend.replace_token(tid, &retiring)?;
        self.backend.failpoint("revoke.intent-written")?;
        self.backend.destroy_slot(slot)?;
        self.backend.failpoint("revoke.slot-destroyed")?;
        self.backend.remove_token(tid)?;
        self.check_after(&before)
    }

    fn commit(
        &mut self,
        slot: SlotId,
        escrow: Option<crate::token::EscrowRef>,
    ) -> Result<(), StoreError> {
        let _guard = self.backend.lock()?;
        let before = self.stable_state()?;
        let (tid, mut token) = managed(&before, slot)?;
        if token.state != TokenState::Pending {
            return Err(Refusal::NotPending(slot).into());
        }
        token.state = TokenState::Active;
        if escrow.is_some() {
            token.escrow = escrow;
        }
        self.backend.replace_token(tid, &token)?;
        self.check_after(&before)
    }

    fn prefer(&mut self, slot: SlotId) -> Result<(), StoreError> {
        let _guard = self.backend.lock()?;
        let before = self.stable_state()?;
        let (_, token) = managed(&before, slot)?;
        if !matches!(token.role, Role::User { .. }) || token.state != TokenState::Active {
            return Err(StoreError::Backend(format!(
                "keyslot {slot} is not an active user slot; only those are preferred"
            )));
        }
        let mut changed = false;
        for s in &before.slots {
            let user_slot = matches!(before.owner_of(s.id), SlotOwner::Managed(_))
                && before
                    .managed_token(s.id)
                    .is_some_and(|(_, t)| matches!(t.role, Role::User { .. }));
            if s.id != slot && user_slot && s.priority == SlotPriority::Prefer {
                self.backend.set_priority(s.id, SlotPriority::Normal)?;
                changed = true;
            }
        }
        if before
            .slot(slot)
            .is_some_and(|s| s.priority != SlotPriority::Prefer)
        {
            self.backend.set_priority(slot, SlotPriority::Prefer)?;
            changed = true;
        }
        if changed {
            self.check_after(&before)?;
        }
        Ok(())
    }

    fn ignore_at_boot(&mut self, slot: SlotId) -> Result<(), StoreError> {
        let _guard = self.backend.lock()?;
        let before = self.stable_state()?;
        let (_, token) = managed(&before, slot)?;
        if token.role != Role::Service {
            return Err(StoreError::Backend(format!(
                "keyslot {slot} is not a service slot; only those are ignored at boot"
            )));
        }
        if before
            .slot(slot)
            .is_some_and(|s| s.priority != SlotPriority::Ignore)
        {
            self.backend.set_priority(slot, SlotPriority::Ignore)?;
            self.check_after(&before)?;
        }
        Ok(())
    }

    fn verify(&mut self, slot: SlotId, secret: &Secret) -> Result<bool, StoreError> {
        if self.backend.read()?.slot(slot).is_none() {
            return Err(StoreError::NoSuchSlot(slot));
        }
        self.backend.test_slot(slot, secret)
    }

    fn reconcile(&mut self) -> Result<Vec<ReconcileAction>, StoreError> {
        let _guard = self.backend.lock()?;
        let state = self.backend.read()?;
        reconcile_locked(&mut self.backend, &state)
    }
}

fn managed(state: &VolumeState, slot: SlotId) -> Result<(TokenId, KeywardToken), StoreError> {
    if state.slot(slot).is_none() {
        return Err(StoreError::NoSuchSlot(slot));
    }
    match state.owner_of(slot) {
        SlotOwner::Managed(_) => state
            .managed_token(slot)
            .map(|(id, t)| (id, t.clone()))
            .ok_or(StoreError::NoSuchSlot(slot)),
        SlotOwner::Transitional(_) => Err(Refusal::InTransition(slot).into()),
        SlotOwner::Unmanaged => Err(Refusal::Unmanaged(slot).into()),
    }
}

/// Destroy `slot` if it exists and is exactly what keyward would have made for `token`;
/// otherwise leave it alone. Returns what happened to it.
fn destroy_if_ours<B: SlotBackend>(
    b: &mut B,
    state: &VolumeState,
    tid: TokenId,
    token: &KeywardToken,
    slot: SlotId,
    actions: &mut Vec<ReconcileAction>,
) -> Result<Option<SlotId>, StoreError> {
    let Some(info) = state.slot(slot) else {
        return Ok(None);
    };
    let ours = state.owner_of(slot) == SlotOwner::Transitional(tid)
        && kdf_matches(&info.kdf, token.role.kdf_class());
    if ours {
        b.destroy_slot(slot)?;
        b.failpoint("reconcile.slot-destroyed")?;
        Ok(Some(slot))
    } else {
        actions.push(ReconcileAction::LeftForeignSlot { slot });
        Ok(None)
    }
}

/// Keyward makes pbkdf2-sha512 slots for random keys and argon2id (or, with
/// `danger_fast_kdf`, pbkdf2-sha512) slots for passphrases.
fn kdf_matches(kdf: &str, class: KdfClass) -> bool {
    match class {
        KdfClass::RandomKey => kdf == "pbkdf2-sha512",
        KdfClass::Passphrase => kdf == "argon2id" || kdf == "pbkdf2-sha512",
    }
}

fn reconcile_locked<B: SlotBackend>(
    b: &mut B,
    state: &VolumeState,
) -> Result<Vec<ReconcileAction>, StoreError> {
    let mut actions = Vec::new();
    for (tid, token) in state.keyward_tokens() {
        let orphan = token.keyslot.is_none_or(|s| state.slot(s).is_none());
        match token.state {
            TokenState::Adding { next } => {
                let slot = destroy_if_ours(b, state, tid, token, next, &mut actions)?;
                b.remove_token(tid)?;
                b.failpoint("reconcile.token-written")?;
                actions.push(ReconcileAction::UndidGrant { token: tid, slot });
            }
            TokenState::Rekeying { next } => {
                let slot = destroy_if_ours(b, state, tid, token, next, &mut actions)?;
                finish(b, tid, token, orphan)?;
                actions.push(ReconcileAction::UndidRekey { token: tid, slot });
            }
            TokenState::Retiring { retire } => {
                let slot = destroy_if_ours(b, state, tid, token, retire, &mut actions)?;
                finish(b, tid, token, orphan)?;
                actions.push(ReconcileAction::FinishedRekey { token: tid, slot });
            }
            TokenState::Active | TokenState::Pending if orphan => {
                b.remove_token(tid)?;
                b.failpoint("reconcile.token-written")?;
                actions.push(ReconcileAction::RemovedOrphan { token: tid });
            }
            TokenState::Active | TokenState::Pending => {}
        }
    }
    Ok(actions)
}

/// Return a rekeyed token to `active` on its own slot, or drop it if that slot is gone.
fn finish<B: SlotBackend>(
    b: &mut B,
    tid: TokenId,
    token: &KeywardToken,
    orphan: bool,
) -> Result<(), StoreError> {
    if orphan {
        b.remove_token(tid)?;
    } else {
        let mut t = token.clone();
        t.state = TokenState::Active;
        b.replace_token(tid, &t)?;
    }
    b.failpoint("reconcile.token-written")
}
