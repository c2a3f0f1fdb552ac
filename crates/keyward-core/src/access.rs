//! Who may ask the helper for what. Each connection is classified once, at accept, from the
//! kernel's peer credentials; each class has an allow-list over the operation catalog (OpenSSH's
//! monitor table is the model). Root Not Required operations are refused for every class: they
//! belong in the unprivileged agent, not in the root process.

use crate::catalog::{Operation, PrivilegeClass};
use crate::ids::Uid;

/// The class of a connected peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallerClass {
    /// Effective uid 0: the CLI and the PAM module.
    Admin,
    /// The service user: keywardd.
    Agent,
}

impl CallerClass {
    /// Classify a peer by its effective uid; `None` means: close before reading anything.
    pub fn of(peer: Uid, service_user: Option<Uid>) -> Option<Self> {
        if peer.get() == 0 {
            Some(CallerClass::Admin)
        } else if Some(peer) == service_user {
            Some(CallerClass::Agent)
        } else {
            None
        }
    }

    /// `admin` or `agent`.
    pub fn label(self) -> &'static str {
        match self {
            CallerClass::Admin => "admin",
            CallerClass::Agent => "agent",
        }
    }
}

/// Is `class` allowed to run `op` in the helper?
pub fn permits(class: CallerClass, op: Operation) -> bool {
    if op.class() == PrivilegeClass::RootNotRequired {
        return false;
    }
    match class {
        CallerClass::Admin => matches!(
            op,
            Operation::Status
                | Operation::Bootstrap
                | Operation::Grant
                | Operation::Revoke
                | Operation::Verify
                | Operation::CleanOrphanTokens
                | Operation::Uninstall
                | Operation::LoginCapture
                | Operation::PasswordChange
                | Operation::ServiceRotate
                | Operation::ServiceRepair
                | Operation::SetDevice
                | Operation::RecoveryEscrowBegin
                | Operation::RecoveryEscrowCommit
                | Operation::RecoveryBegin
                | Operation::RecoveryCommit
                | Operation::RecoveryAbort
                | Operation::RunCommand
                | Operation::PolicyShow
        ),
        // The agent may look and check, and carry a recovery rotation to the escrow server and
        // back: it only ever sees ciphertext, and a commit needs the server's signed receipt.
        // It can neither add nor remove anyone's unlock right on its own: it may relay the
        // escrow server's signed commands, which the helper verifies (signature, device,
        // expiry, single use) before acting — the agent cannot forge, redirect or replay one.
        CallerClass::Agent => matches!(
            op,
            Operation::Status
                | Operation::Verify
                | Operation::RecoveryEscrowBegin
                | Operation::RecoveryEscrowCommit
                | Operation::RunCommand
                | Operation::PolicyShow
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_peers_get_no_class() {
        let svc = Uid::new(999).ok();
        assert_eq!(
            CallerClass::of(Uid::new(0).expect("0"), svc),
            Some(CallerClass::Admin)
        );
        assert_eq!(
            CallerClass::of(Uid::new(999).expect("u"), svc),
            Some(CallerClass::Agent)
        );
        assert_eq!(CallerClass::of(Uid::new(1000).expect("u"), svc), None);
        assert_eq!(CallerClass::of(Uid::new(1000).expect("u"), None), None);
    }

    #[test]
    fn root_not_required_is_never_served_and_agents_cannot_change_slots() {
        for op in Operation::ALL {
            if op.class() == PrivilegeClass::RootNotRequired {
                assert!(!permits(CallerClass::Admin, *op), "{}", op.name());
                assert!(!permits(CallerClass::Agent, *op), "{}", op.name());
            }
            if permits(CallerClass::Agent, *op) {
                assert!(permits(CallerClass::Admin, *op), "{}", op.name());
            }
        }
        for op in [Operation::Grant, Operation::Revoke, Operation::Bootstrap] {
            assert!(!permits(CallerClass::Agent, op));
        }
        // The agent carries escrowed rotations, but never sees a plaintext recovery key.
        assert!(permits(CallerClass::Agent, Operation::RecoveryEscrowBegin));
        assert!(permits(CallerClass::Agent, Operation::RecoveryEscrowCommit));
        assert!(!permits(CallerClass::Agent, Operation::RecoveryBegin));
        assert!(!permits(CallerClass::Agent, Operation::RecoveryCommit));
        // It relays signed commands; the helper checks them.
        assert!(permits(CallerClass::Agent, Operation::RunCommand));
    }
}
