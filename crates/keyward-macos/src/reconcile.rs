//! Finishing or undoing what an interrupted operation left in the registry, from what the Mac
//! shows now. Unlike LUKS2, an interrupted Secure Token grant cannot be undone (removing a
//! token takes the holder's password), so a grant whose token is there is *finished* instead
//! (`ReconcileAction::FinishedGrant`).

use keyward_core::store::ReconcileAction;
use keyward_core::{Role, TokenState};

use crate::error::MacError;
use crate::inventory::{entry_matches, Inventory};
use crate::keychain::Keychain;
use crate::registry::{Journal, Registry};
use crate::runner::Runner;
use crate::store::FileVaultStore;

impl<R: Runner, J: Journal, K: Keychain> FileVaultStore<R, J, K> {
    /// Bring the registry in line with the Mac; returns what was done.
    pub fn reconcile_now(&mut self) -> Result<Vec<ReconcileAction>, MacError> {
        let mut reg = self.journal.load()?;
        let inv = self.inventory(&reg)?;
        let actions = reconcile_registry(&mut reg, &inv);
        if !actions.is_empty() {
            self.journal.save(&reg)?;
        }
        Ok(actions)
    }
}

/// The pure part: decide and apply, given the Mac as read.
pub fn reconcile_registry(reg: &mut Registry, inv: &Inventory) -> Vec<ReconcileAction> {
    let mut actions = Vec::new();
    let interrupted_recovery = reg.entries.iter().any(|e| {
        e.token.role == Role::Recovery && matches!(e.token.state, TokenState::Adding { .. })
    });
    let ids: Vec<_> = reg.entries.iter().map(|e| e.id).collect();
    for tid in ids {
        let Some(entry) = reg.get(tid).cloned() else {
            continue;
        };
        let holds = match &entry.account {
            Some(_) => inv
                .accounts
                .iter()
                .any(|a| a.token && entry_matches(&entry, a)),
            None => inv.recovery_key,
        };
        let mut token = entry.token.clone();
        match entry.token.state {
            TokenState::Adding { next } if holds && entry.account.is_some() => {
                token.keyslot = Some(next);
                token.state = TokenState::Active;
                set(reg, tid, token);
                actions.push(ReconcileAction::FinishedGrant {
                    token: tid,
                    slot: next,
                });
            }
            TokenState::Adding { .. } => {
                // A grant that did not happen, or a recovery rotation interrupted before its
                // new key was recorded: that key is known to nobody, so drop the intent.
                reg.remove(tid);
                actions.push(ReconcileAction::UndidGrant {
                    token: tid,
                    slot: None,
                });
            }
            TokenState::Rekeying { .. } | TokenState::Retiring { .. } if holds => {
                // The account holds its token whichever password it now has; the slot number
                // it had stays.
                let was_rekeying = matches!(entry.token.state, TokenState::Rekeying { .. });
                token.state = TokenState::Active;
                set(reg, tid, token);
                actions.push(if was_rekeying {
                    ReconcileAction::UndidRekey {
                        token: tid,
                        slot: None,
                    }
                } else {
                    ReconcileAction::FinishedRekey {
                        token: tid,
                        slot: None,
                    }
                });
            }
            _ if !holds => {
                reg.remove(tid);
                actions.push(ReconcileAction::RemovedOrphan { token: tid });
            }
            _ if interrupted_recovery && entry.token.role == Role::Recovery => {
                // changerecovery may have retired this key before the crash; keyward cannot
                // tell without the key, so it no longer claims the key is escrowed.
                reg.remove(tid);
                actions.push(ReconcileAction::RemovedOrphan { token: tid });
            }
            _ => {}
        }
    }
    actions
}

fn set(reg: &mut Registry, tid: keyward_core::TokenId, token: keyward_core::KeywardToken) {
    if let Some(e) = reg.get_mut(tid) {
        e.token = token;
    }
}
