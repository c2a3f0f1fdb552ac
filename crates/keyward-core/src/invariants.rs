//! Invariants I1–I3 (DESIGN.md section 5) as checks over a volume's state:
//!
//! * **I1** every volume keeps at least one committed unlock path that a person can use at boot
//!   without keyward: an unmanaged slot (installer passphrase, another tool's TPM2/FIDO2/recovery
//!   slot), a user's committed slot, or a committed recovery key. keyward's own service slot
//!   never counts: its secret lives in the helper's state, usually on the volume it unlocks;
//! * **I2** keyward never modifies an unmanaged slot (nor another tool's token): a property of a
//!   transition, checked by comparing the states before and after;
//! * **I3** every keyward token points at an existing slot, every keyward slot has exactly one
//!   token, and no token is left mid-operation.

use std::fmt;

use crate::ids::{SlotId, TokenId};
use crate::model::{HolderRole, SlotOwner, TokenEntry, VolumeState};
use crate::token::{Role, TokenState};

/// One broken invariant.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Violation {
    /// I1: no committed unlock path a person can use without keyward remains (the service
    /// slot, if any, opens nothing at boot).
    NoCommittedPath,
    /// I2: an unmanaged slot changed or disappeared.
    UnmanagedSlotChanged(SlotId),
    /// I2: another tool's token (or a malformed one) changed or disappeared.
    ForeignTokenChanged(TokenId),
    /// I3: a keyward token owns no existing slot.
    OrphanToken(TokenId),
    /// I3: a slot is claimed by more than one token, one of them keyward's.
    SlotClaimedTwice(SlotId),
    /// I3: a token was left in a transitional state.
    Unfinished(TokenId),
}

impl Violation {
    /// `I1`, `I2` or `I3`.
    pub fn invariant(&self) -> &'static str {
        match self {
            Violation::NoCommittedPath => "I1",
            Violation::UnmanagedSlotChanged(_) | Violation::ForeignTokenChanged(_) => "I2",
            Violation::OrphanToken(_)
            | Violation::SlotClaimedTwice(_)
            | Violation::Unfinished(_) => "I3",
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let i = self.invariant();
        match self {
            Violation::NoCommittedPath => write!(
                f,
                "{i}: no way in that a person can use without keyward (keyward's service slot does not count)"
            ),
            Violation::UnmanagedSlotChanged(s) => write!(f, "{i}: unmanaged keyslot {s} changed"),
            Violation::ForeignTokenChanged(t) => write!(f, "{i}: foreign token {t} changed"),
            Violation::OrphanToken(t) => write!(f, "{i}: keyward token {t} owns no keyslot"),
            Violation::SlotClaimedTwice(s) => write!(f, "{i}: keyslot {s} has several tokens"),
            Violation::Unfinished(t) => write!(f, "{i}: keyward token {t} is mid-operation"),
        }
    }
}

/// The slots that count as ways in for I1: unmanaged ones, and keyward's user and recovery
/// slots whose token is committed (not pending, not mid-grant). A recovery token becomes
/// committed only on the escrow server's signed receipt or the admin's typed-back
/// confirmation, so a committed recovery key is one a person can get. The service slot never
/// counts: only keyward can use it, and its secret is usually stored on the volume it opens.
pub fn committed_paths(state: &VolumeState) -> Vec<SlotId> {
    state
        .slots
        .iter()
        .map(|s| s.id)
        .filter(|id| match state.owner_of(*id) {
            SlotOwner::Unmanaged => true,
            SlotOwner::Managed(t) => state
                .keyward_token(t)
                .is_some_and(|t| t.state != TokenState::Pending && t.role != Role::Service),
            SlotOwner::Transitional(_) => false,
        })
        .collect()
}

/// May `slot` be removed without breaking I1? Not if it is the last way in a person can use;
/// and not if nothing committed at all would be left (a volume already without a human way in
/// keeps its last service slot, the only thing still opening it, until someone adds one).
pub fn removal_keeps_a_way_in(state: &VolumeState, slot: SlotId) -> bool {
    let paths = committed_paths(state);
    if paths.iter().any(|s| *s != slot) {
        return true;
    }
    if paths.contains(&slot) {
        return false;
    }
    // No human way in either way: only another committed slot (a service slot) may be left.
    state.slots.iter().map(|s| s.id).any(|id| {
        id != slot
            && matches!(state.owner_of(id), SlotOwner::Managed(t)
                if state.keyward_token(t).is_some_and(|t| t.state == TokenState::Active))
    })
}

/// Uninstall's plan (I1): keyward's slots in the order they go — users and recovery first, the
/// service slot last — or `None` when no slot keyward does not manage would remain a way in,
/// so that removing them would lock the volume: then none goes.
pub fn release_order(state: &VolumeState) -> Option<Vec<SlotId>> {
    let mut ours: Vec<(bool, SlotId)> = state
        .holders()
        .into_iter()
        .filter(|h| h.token.is_some())
        .map(|h| (h.role == HolderRole::Service, h.slot))
        .collect();
    ours.sort();
    let ours: Vec<SlotId> = ours.into_iter().map(|(_, s)| s).collect();
    let others = committed_paths(state)
        .into_iter()
        .filter(|s| !ours.contains(s))
        .count();
    (others > 0 || ours.is_empty()).then_some(ours)
}

/// I1 and I3 over one state.
pub fn check_state(state: &VolumeState) -> Vec<Violation> {
    let mut v = Vec::new();
    if committed_paths(state).is_empty() {
        v.push(Violation::NoCommittedPath);
    }
    for (id, t) in state.keyward_tokens() {
        if t.state.is_transitional() {
            v.push(Violation::Unfinished(id));
        }
        match t.keyslot {
            Some(s) if state.slot(s).is_some() => {
                if state.owner_of(s) == SlotOwner::Unmanaged {
                    v.push(Violation::SlotClaimedTwice(s));
                }
            }
            Some(_) | None => {
                if !matches!(t.state, TokenState::Adding { .. }) {
                    v.push(Violation::OrphanToken(id));
                }
            }
        }
    }
    v
}

/// I2 for a transition, plus I1 and I3 on the state after it.
pub fn check_transition(before: &VolumeState, after: &VolumeState) -> Vec<Violation> {
    let mut v = Vec::new();
    for s in &before.slots {
        if before.owner_of(s.id) == SlotOwner::Unmanaged
            && after.slot(s.id).map(|a| &a.fingerprint) != Some(&s.fingerprint)
        {
            v.push(Violation::UnmanagedSlotChanged(s.id));
        }
    }
    for t in &before.tokens {
        if matches!(t, TokenEntry::Foreign { .. } | TokenEntry::Malformed { .. })
            && !after.tokens.contains(t)
        {
            v.push(Violation::ForeignTokenChanged(t.id()));
        }
    }
    // A volume that had no way in before (an admin removed the last one by hand) is reported
    // by status and verify; an operation that did not remove the last way in is not blamed.
    let had_way_in = !committed_paths(before).is_empty();
    v.extend(
        check_state(after)
            .into_iter()
            .filter(|x| had_way_in || *x != Violation::NoCommittedPath),
    );
    v
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::fake::MemoryBackend;
    use crate::orderings::{SlotBackend, SlotStore};
    use crate::{Authority, GrantRequest, Secret, Uid, UnlockStore, UserName};

    /// Users before the service slot; and nothing at all once only keyward's slots are left.
    #[test]
    fn release_goes_service_last_and_never_takes_the_last_way_in() {
        let installer = Secret::copy_from(b"installer");
        let mut store = SlotStore::new(MemoryBackend::formatted(&installer));
        // Alice first, the service slot after her: whichever way the store numbers new slots,
        // the service slot is not simply the highest or the lowest of keyward's.
        let alice = GrantRequest::user(UserName::parse("alice").unwrap(), Uid::new(1000).unwrap());
        let a = store
            .grant(
                &alice,
                Authority::Holder(&installer),
                &Secret::copy_from(b"a"),
            )
            .unwrap();
        let bob = GrantRequest::user(UserName::parse("bob").unwrap(), Uid::new(1001).unwrap());
        let service_req = GrantRequest {
            role: Role::Service,
            pending: false,
        };
        let s = store
            .grant(
                &service_req,
                Authority::Holder(&installer),
                &Secret::copy_from(b"s"),
            )
            .unwrap();
        let b = store
            .grant(
                &bob,
                Authority::Holder(&installer),
                &Secret::copy_from(b"b"),
            )
            .unwrap();
        let mut users = vec![a, b];
        users.sort();
        users.push(s);
        assert_eq!(release_order(&store.state().unwrap()), Some(users));
        // What `cryptsetup luksKillSlot` would do behind keyward's back.
        store
            .backend_mut()
            .destroy_slot(SlotId::new(0).unwrap())
            .unwrap();
        assert_eq!(release_order(&store.state().unwrap()), None);
    }
}
