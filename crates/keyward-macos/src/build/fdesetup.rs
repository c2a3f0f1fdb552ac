//! `fdesetup` builders. Authentication goes in an `-inputplist` on stdin (`{Password: …}`,
//! a FileVault user's password or the personal recovery key, as fdesetup(8) describes).

use keyward_core::Secret;

use crate::build::password_plist;
use crate::command::{Arg, Invocation, Program, Purpose};
use crate::error::MacError;

/// `fdesetup status`.
pub fn status() -> Invocation {
    Invocation::new(
        Purpose::FileVaultStatus,
        Program::Fdesetup,
        vec![Arg::fixed("status")],
    )
}

/// `fdesetup list`: FileVault-enabled users as `short,UUID` (root only). Not the set of
/// Secure Token holders: it is used only to find a holder's crypto user UUID.
pub fn list() -> Invocation {
    Invocation::new(
        Purpose::FileVaultList,
        Program::Fdesetup,
        vec![Arg::fixed("list")],
    )
}

/// `fdesetup haspersonalrecoverykey`: `true` or `false`.
pub fn has_personal_recovery_key() -> Invocation {
    Invocation::new(
        Purpose::HasRecoveryKey,
        Program::Fdesetup,
        vec![Arg::fixed("haspersonalrecoverykey")],
    )
}

/// `fdesetup changerecovery -personal -inputplist -outputplist`: a new personal recovery key,
/// printed as a property list on stdout (`RecoveryKey`). The old key stops working at once.
pub fn change_recovery(authority: &Secret) -> Result<Invocation, MacError> {
    Ok(Invocation::new(
        Purpose::ChangeRecovery,
        Program::Fdesetup,
        vec![
            Arg::fixed("changerecovery"),
            Arg::fixed("-personal"),
            Arg::fixed("-inputplist"),
            Arg::fixed("-outputplist"),
        ],
    )
    .with_stdin(password_plist(authority)?))
}

/// `fdesetup validaterecovery -inputplist`: `true` if the key in the plist is the current
/// personal recovery key.
pub fn validate_recovery(key: &Secret) -> Result<Invocation, MacError> {
    Ok(Invocation::new(
        Purpose::ValidateRecovery,
        Program::Fdesetup,
        vec![Arg::fixed("validaterecovery"), Arg::fixed("-inputplist")],
    )
    .with_stdin(password_plist(key)?))
}

/// `fdesetup removerecovery -personal -inputplist`: remove the personal recovery key.
pub fn remove_recovery(authority: &Secret) -> Result<Invocation, MacError> {
    Ok(Invocation::new(
        Purpose::RemoveRecovery,
        Program::Fdesetup,
        vec![
            Arg::fixed("removerecovery"),
            Arg::fixed("-personal"),
            Arg::fixed("-inputplist"),
        ],
    )
    .with_stdin(password_plist(authority)?))
}
