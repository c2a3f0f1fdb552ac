//! Which user slot a passphrase typed at boot tries first. cryptsetup and systemd-cryptsetup
//! try slots in turn, each user slot a full argon2id run, so the tenth user granted would wait
//! ten times as long at the boot prompt. keyward gives one user slot LUKS2 priority `prefer`:
//! `[policy] primary_user`'s, or else that of whoever logged in last — on a laptop, its owner.
//! This is the decision; [`crate::UnlockStore::prefer`] makes it so (never touching an
//! unmanaged slot, I2).

use crate::ids::{SlotId, UserName};
use crate::model::{HolderRole, SlotPriority, VolumeState};

/// After `user` logged in (or changed their password): the user slot to make `prefer`, or
/// `None` when nothing is to change — the preferred user (`primary`, else `user`) holds no
/// slot, or theirs is already the only user slot with priority `prefer`.
pub fn to_prefer(
    state: &VolumeState,
    primary: Option<&UserName>,
    user: &UserName,
) -> Option<SlotId> {
    let primary = primary.unwrap_or(user);
    let users: Vec<(SlotId, UserName)> = state
        .holders()
        .into_iter()
        .filter_map(|h| match h.role {
            HolderRole::User { name, .. } => Some((h.slot, name)),
            _ => None,
        })
        .collect();
    let slot = users.iter().find(|(_, name)| name == primary)?.0;
    let preferred = |s: SlotId| {
        state
            .slot(s)
            .is_some_and(|i| i.priority == SlotPriority::Prefer)
    };
    let others_preferred = users.iter().any(|(s, _)| *s != slot && preferred(*s));
    (others_preferred || !preferred(slot)).then_some(slot)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::expect_used)]
    use super::*;
    use crate::fake::MemoryBackend;
    use crate::orderings::{SlotBackend, SlotStore};
    use crate::store::{Authority, GrantRequest, UnlockStore};
    use crate::{Secret, Uid};

    fn name(n: &str) -> UserName {
        UserName::parse(n).expect("valid")
    }

    /// A volume with the installer's slot and slots for `users`.
    fn volume(users: &[&str]) -> (SlotStore<MemoryBackend>, Vec<SlotId>) {
        let install = Secret::copy_from(b"install");
        let mut store = SlotStore::new(MemoryBackend::formatted(&install));
        let slots = users
            .iter()
            .zip(1000..)
            .map(|(u, uid)| {
                let req = GrantRequest::user(name(u), Uid::new(uid).expect("uid"));
                let pw = Secret::copy_from(u.as_bytes());
                store
                    .grant(&req, Authority::Holder(&install), &pw)
                    .expect("grant")
            })
            .collect();
        (store, slots)
    }

    fn state(store: &mut SlotStore<MemoryBackend>) -> VolumeState {
        store.state().expect("read")
    }

    /// (`VolumeState::user_slot`, which the helper's login and revoke use: tested here over
    /// the same volumes.)
    #[test]
    fn a_users_slot_is_found_by_their_name() {
        let (mut store, slots) = volume(&["alice", "bob"]);
        let state = state(&mut store);
        let bob = Uid::new(1001).expect("uid");
        assert_eq!(state.user_slot(&name("bob")), Some((slots[1], bob)));
        assert_eq!(state.user_slot(&name("carol")), None);
    }

    #[test]
    fn the_user_who_logged_in_is_preferred_once() {
        let (mut store, slots) = volume(&["alice", "bob"]);
        let bob = slots[1];
        assert_eq!(to_prefer(&state(&mut store), None, &name("bob")), Some(bob));
        store.prefer(bob).expect("prefer");
        assert_eq!(to_prefer(&state(&mut store), None, &name("bob")), None);
        // Alice logs in next: she is preferred now.
        assert_eq!(
            to_prefer(&state(&mut store), None, &name("alice")),
            Some(slots[0])
        );
    }

    #[test]
    fn the_primary_user_wins_over_whoever_logged_in() {
        let (mut store, slots) = volume(&["alice", "bob"]);
        let alice = name("alice");
        let s = state(&mut store);
        assert_eq!(to_prefer(&s, Some(&alice), &name("bob")), Some(slots[0]));
        store.prefer(slots[0]).expect("prefer");
        assert_eq!(
            to_prefer(&state(&mut store), Some(&alice), &name("bob")),
            None
        );
    }

    #[test]
    fn nothing_to_do_for_a_user_without_a_slot() {
        let (mut store, _) = volume(&["alice"]);
        let s = state(&mut store);
        assert_eq!(to_prefer(&s, None, &name("carol")), None);
        assert_eq!(to_prefer(&s, Some(&name("carol")), &name("alice")), None);
    }

    #[test]
    fn a_second_preferred_user_slot_is_corrected() {
        let (mut store, slots) = volume(&["alice", "bob"]);
        store.prefer(slots[0]).expect("prefer");
        // Another tool (or an old keyward) left bob's slot `prefer` too.
        store
            .backend_mut()
            .set_priority(slots[1], SlotPriority::Prefer)
            .expect("set");
        assert_eq!(
            to_prefer(&state(&mut store), None, &name("alice")),
            Some(slots[0])
        );
    }

    #[test]
    fn an_unmanaged_preferred_slot_does_not_count() {
        let (mut store, slots) = volume(&["alice"]);
        store.prefer(slots[0]).expect("prefer");
        let zero = SlotId::new(0).expect("0");
        store
            .backend_mut()
            .set_priority(zero, SlotPriority::Prefer)
            .expect("set");
        assert_eq!(to_prefer(&state(&mut store), None, &name("alice")), None);
    }
}
