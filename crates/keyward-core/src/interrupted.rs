//! What a crash interrupted and what reconcile did about it, in words, for the audit records
//! the helper writes at start-up: which transitional token is about to be finished or undone
//! ([`found`], recorded before reconcile acts), and what each [`ReconcileAction`] did
//! ([`describe`]), each naming whose right it touched. Words only; no I/O.

use crate::model::VolumeState;
use crate::store::ReconcileAction;
use crate::token::{Role, TokenState};
use crate::{SlotId, TokenId};

/// Whose right a token was, in words.
fn whose(state: &VolumeState, token: TokenId) -> String {
    match state.keyward_token(token).map(|t| &t.role) {
        Some(Role::User { name, uid }) => format!("user {name} (uid {uid})"),
        Some(Role::Service) => "the service account".into(),
        Some(Role::Recovery) => "the recovery key".into(),
        None => format!("token {token}"),
    }
}

/// What reconcile is about to finish or undo on a volume in `state`, one line per token.
pub fn found(state: &VolumeState) -> Vec<String> {
    let slot = |s: Option<SlotId>| s.map_or_else(|| "none".into(), |s| s.to_string());
    state
        .keyward_tokens()
        .filter_map(|(tid, t)| {
            let who = whose(state, tid);
            let what = match t.state {
                TokenState::Adding { next } => {
                    format!("an interrupted grant to {who} (keyslot {next}): undoing it")
                }
                TokenState::Rekeying { next } => format!(
                    "an interrupted rekey of {who} (keyslot {} to {next}, not verified): undoing it",
                    slot(t.keyslot)
                ),
                TokenState::Retiring { retire } if t.keyslot.is_none() => {
                    format!("an interrupted revoke of {who} (keyslot {retire}): finishing it")
                }
                TokenState::Retiring { retire } => format!(
                    "an interrupted rekey of {who} (keyslot {retire} to {}, verified): finishing it",
                    slot(t.keyslot)
                ),
                _ if t.keyslot.is_none_or(|s| state.slot(s).is_none()) => format!(
                    "the token of {who}, whose keyslot {} is gone: removing it",
                    slot(t.keyslot)
                ),
                _ => return None,
            };
            Some(format!("found {what}"))
        })
        .collect()
}

/// What `action` did, `before` being the state reconcile started from.
pub fn describe(before: &VolumeState, action: &ReconcileAction) -> String {
    let slot = |s: &Option<SlotId>| s.map_or_else(String::new, |s| format!(", keyslot {s}"));
    match action {
        ReconcileAction::UndidGrant { token, slot: s } => format!(
            "undid an interrupted grant to {}{}",
            whose(before, *token),
            slot(s)
        ),
        ReconcileAction::UndidRekey { token, slot: s } => format!(
            "undid an interrupted rekey of {}: the old keyslot stays{}",
            whose(before, *token),
            s.map_or_else(String::new, |s| format!(", new keyslot {s} destroyed"))
        ),
        ReconcileAction::FinishedRekey { token, slot: s } => {
            let revoke = before.keyward_token(*token).is_some_and(|t| {
                t.keyslot.is_none() && matches!(t.state, TokenState::Retiring { .. })
            });
            let what = if revoke { "revoke of" } else { "rekey of" };
            format!(
                "finished an interrupted {what} {}{}",
                whose(before, *token),
                slot(s)
            )
        }
        ReconcileAction::FinishedGrant { token, slot } => format!(
            "finished an interrupted grant to {}, keyslot {slot}",
            whose(before, *token)
        ),
        ReconcileAction::RemovedOrphan { token } => format!(
            "removed the token of {}, whose keyslot is gone",
            whose(before, *token)
        ),
        ReconcileAction::LeftForeignSlot { slot } => {
            format!("left keyslot {slot} alone: it does not look like keyward's work")
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::fake::MemoryBackend;
    use crate::orderings::SlotStore;
    use crate::{Authority, GrantRequest, Secret, Uid, UnlockStore, UserName};

    fn alice() -> GrantRequest {
        GrantRequest::user(UserName::parse("alice").unwrap(), Uid::new(1000).unwrap())
    }

    /// A grant cut short after its intent: found (before), then undone (after), both naming
    /// the user whose right it was.
    #[test]
    fn an_interrupted_grant_is_found_and_its_undoing_named() {
        let installer = Secret::copy_from(b"installer");
        let mut store = SlotStore::new(MemoryBackend::formatted(&installer));
        store.backend_mut().fail_at("grant.intent-written");
        let pw = Secret::copy_from(b"alice's password");
        assert!(store
            .grant(&alice(), Authority::Holder(&installer), &pw)
            .is_err());
        let before = store.state().unwrap();
        let seen = found(&before);
        assert_eq!(seen.len(), 1, "{seen:?}");
        assert!(
            seen[0].starts_with("found an interrupted grant to user alice (uid 1000) (keyslot "),
            "{seen:?}"
        );
        assert!(seen[0].ends_with("): undoing it"), "{seen:?}");
        let done: Vec<String> = store
            .reconcile()
            .unwrap()
            .iter()
            .map(|a| describe(&before, a))
            .collect();
        assert_eq!(done.len(), 1, "{done:?}");
        assert!(
            done[0].starts_with("undid an interrupted grant to user alice (uid 1000)"),
            "{done:?}"
        );
        assert!(found(&store.state().unwrap()).is_empty());
    }

    #[test]
    fn a_settled_volume_has_nothing_to_find_and_a_foreign_slot_is_named() {
        let installer = Secret::copy_from(b"installer");
        let mut store = SlotStore::new(MemoryBackend::formatted(&installer));
        let pw = Secret::copy_from(b"alice's password");
        store
            .grant(&alice(), Authority::Holder(&installer), &pw)
            .unwrap();
        let state = store.state().unwrap();
        assert!(found(&state).is_empty());
        let slot = SlotId::new(7).unwrap();
        assert_eq!(
            describe(&state, &ReconcileAction::LeftForeignSlot { slot }),
            "left keyslot 7 alone: it does not look like keyward's work"
        );
        let token = TokenId::new(9).unwrap();
        assert_eq!(
            describe(&state, &ReconcileAction::RemovedOrphan { token }),
            "removed the token of token 9, whose keyslot is gone"
        );
    }
}
