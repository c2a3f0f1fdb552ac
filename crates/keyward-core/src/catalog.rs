//! The closed catalog of every operation keyward performs, each with its privilege class
//! (DESIGN.md section 2). The helper serves only Root Required and Credentials Required
//! operations; Root Not Required ones belong in the unprivileged agent.

use std::fmt;

/// Who may run an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum PrivilegeClass {
    /// The agent does it as `_keyward`; the root helper refuses it.
    RootNotRequired,
    /// The helper does it, without any secret.
    RootRequired,
    /// The helper does it with a secret it holds or is handed.
    CredentialsRequired,
}

impl fmt::Display for PrivilegeClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PrivilegeClass::RootNotRequired => "Root Not Required",
            PrivilegeClass::RootRequired => "Root Required",
            PrivilegeClass::CredentialsRequired => "Credentials Required",
        })
    }
}

macro_rules! catalog {
    ($( $(#[$doc:meta])* $name:ident = $wire:literal => $class:ident, )*) => {
        /// Every operation keyward performs. Closed: adding one means adding it here, with a
        /// class, which the compiler then forces every allow-list to consider.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        #[non_exhaustive]
        pub enum Operation { $( $(#[$doc])* $name, )* }

        impl Operation {
            /// Every operation, in catalog order.
            pub const ALL: &'static [Operation] = &[ $( Operation::$name, )* ];

            /// The operation's privilege class.
            pub fn class(self) -> PrivilegeClass {
                match self { $( Operation::$name => PrivilegeClass::$class, )* }
            }

            /// The stable name used in logs and the audit trail.
            pub fn name(self) -> &'static str {
                match self { $( Operation::$name => $wire, )* }
            }
        }
    };
}

catalog! {
    /// Fetch policy from the escrow server.
    PolicySync = "policy-sync" => RootNotRequired,
    /// Upload an age-encrypted recovery key to the escrow server.
    EscrowUpload = "escrow-upload" => RootNotRequired,
    /// Enroll the device with the escrow server.
    Enroll = "enroll" => RootNotRequired,
    /// Schedule the periodic verification and rotations.
    Schedule = "schedule" => RootNotRequired,
    /// Look a user up in the user database.
    UserLookup = "user-lookup" => RootNotRequired,
    /// Report status to the escrow server.
    Report = "report" => RootNotRequired,
    /// Read a volume's LUKS2 header and list its holders.
    Status = "status" => RootRequired,
    /// Remove a user's keyward slot.
    Revoke = "revoke" => RootRequired,
    /// Remove keyward tokens whose slot is gone.
    CleanOrphanTokens = "clean-orphan-tokens" => RootRequired,
    /// Kill a pending recovery slot that was never committed.
    RecoveryAbort = "recovery-abort" => RootRequired,
    /// Create the `_keyward` account, directories, units and PAM profile.
    Install = "install" => RootRequired,
    /// Remove keyward's slots (checked against I1), account, directories, units, PAM profile.
    Uninstall = "uninstall" => RootRequired,
    /// Record the device id from enrollment in the helper's state.
    SetDevice = "set-device" => RootRequired,
    /// Read or verify the audit chain.
    Audit = "audit" => RootRequired,
    /// Read the policy in force (`keyward.toml` with the escrow server's signed override).
    PolicyShow = "policy-show" => RootRequired,
    /// Create the service slot from a current holder's passphrase.
    Bootstrap = "bootstrap" => CredentialsRequired,
    /// Give a user a slot for their passphrase, opened by the service secret.
    Grant = "grant" => CredentialsRequired,
    /// Move a user's slot to a new passphrase.
    Rekey = "rekey" => CredentialsRequired,
    /// A login captured by PAM: grant or heal the user's slot.
    LoginCapture = "login-capture" => CredentialsRequired,
    /// A password change captured by PAM.
    PasswordChange = "password-change" => CredentialsRequired,
    /// Prove that every secret the helper holds still opens its slot.
    Verify = "verify" => CredentialsRequired,
    /// Start a recovery-key rotation (returns only ciphertext for the escrow server). Named as
    /// its request, `Request::RecoveryEscrowBegin`; its audit name stays `recovery-begin`.
    RecoveryEscrowBegin = "recovery-begin" => CredentialsRequired,
    /// Commit a recovery-key rotation on a signed escrow receipt (`Request::RecoveryEscrowCommit`;
    /// audit name `recovery-commit`).
    RecoveryEscrowCommit = "recovery-commit" => CredentialsRequired,
    /// Standalone rotation: make a pending recovery key and show it to the admin
    /// (`Request::RecoveryBegin`; its audit name stays `recovery-show`, which the audit trail
    /// and the allow-list tests have always used).
    RecoveryBegin = "recovery-show" => CredentialsRequired,
    /// Standalone rotation: commit after the admin typed the key's last group back
    /// (`Request::RecoveryCommit`; audit name `recovery-confirm`).
    RecoveryCommit = "recovery-confirm" => CredentialsRequired,
    /// Rotate the service secret.
    ServiceRotate = "service-rotate" => CredentialsRequired,
    /// Run a command signed by the escrow server's pinned key, for this device, once.
    RunCommand = "run-command" => CredentialsRequired,
    /// Replace a drifted service slot, proving a current holder's passphrase.
    ServiceRepair = "service-repair" => CredentialsRequired,
}

impl Operation {
    /// False for the operations that only read (status, the audit chain, the policy in force).
    /// The helper refuses every other one when it could not record it in the audit log, and
    /// folds an agent's repeated reads into one audit record a minute.
    pub fn changes_state(self) -> bool {
        !matches!(
            self,
            Operation::Status | Operation::Audit | Operation::PolicyShow
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn every_operation_has_a_class_and_a_unique_name() {
        let mut names = HashSet::new();
        for op in Operation::ALL {
            let _class = op.class();
            assert!(names.insert(op.name()), "duplicate name {}", op.name());
        }
        // Each class is used, and the helper-side ones dominate.
        let count = |c| Operation::ALL.iter().filter(|o| o.class() == c).count();
        assert!(count(PrivilegeClass::RootNotRequired) > 0);
        assert!(count(PrivilegeClass::RootRequired) > 0);
        assert!(count(PrivilegeClass::CredentialsRequired) > 0);
    }

    #[test]
    fn secret_bearing_operations_need_credentials() {
        for op in [
            Operation::Grant,
            Operation::Bootstrap,
            Operation::ServiceRotate,
        ] {
            assert_eq!(op.class(), PrivilegeClass::CredentialsRequired);
        }
        assert_eq!(
            Operation::EscrowUpload.class(),
            PrivilegeClass::RootNotRequired
        );
    }
}
