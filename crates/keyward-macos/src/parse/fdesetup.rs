//! `fdesetup` output: `status` lines, `list` as `short,UUID`, `true`/`false` answers, and the
//! `-outputplist` of `changerecovery`. Failures are exit statuses with text: 11 "User could not
//! be authenticated", 136 "Unable to change key".

use keyward_core::Secret;
use zeroize::Zeroize;

use crate::command::Purpose;
use crate::error::MacError;
use crate::names::{GeneratedUid, ShortName};
use crate::parse::{all_text, unrecognized, Unverified};
use crate::runner::{Exit, Output};

/// FileVault's state, from the first line of `fdesetup status`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FileVaultState {
    /// "FileVault is On."
    On,
    /// "FileVault is Off."
    Off,
    /// "Encryption in progress: …"
    Encrypting,
    /// "Decryption in progress: …"
    Decrypting,
}

/// `fdesetup status`.
pub fn status(out: &Output) -> Result<FileVaultState, MacError> {
    let text = out.stdout_text();
    let first = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("");
    Ok(match first {
        "FileVault is On." => FileVaultState::On,
        "FileVault is Off." => FileVaultState::Off,
        l if l.starts_with("Encryption in progress") => FileVaultState::Encrypting,
        l if l.starts_with("Decryption in progress") => FileVaultState::Decrypting,
        _ => return Err(unrecognized(Purpose::FileVaultStatus, out, false)),
    })
}

/// `fdesetup list`: FileVault users with their crypto user UUIDs. Lines that are not
/// `short,UUID` are skipped (fdesetup prints nothing else there); a failed run is an error.
pub fn list(out: &Output) -> Result<Vec<(ShortName, GeneratedUid)>, MacError> {
    if !out.exit.success() {
        return Err(unrecognized(Purpose::FileVaultList, out, false));
    }
    Ok(out
        .stdout_text()
        .lines()
        .filter_map(|l| {
            let (name, uuid) = l.trim().split_once(',')?;
            Some((
                ShortName::parse(name).ok()?,
                GeneratedUid::parse(uuid).ok()?,
            ))
        })
        .collect())
}

fn true_or_false(purpose: Purpose, out: &Output) -> Result<bool, MacError> {
    match out.stdout_text().trim() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(auth_or_unrecognized(purpose, out)),
    }
}

/// `fdesetup haspersonalrecoverykey`.
pub fn has_personal_recovery_key(out: &Output) -> Result<bool, MacError> {
    true_or_false(Purpose::HasRecoveryKey, out)
}

/// `fdesetup validaterecovery`: true only for "true".
pub fn validate_recovery(out: &Output) -> Result<bool, MacError> {
    true_or_false(Purpose::ValidateRecovery, out)
}

fn auth_or_unrecognized(purpose: Purpose, out: &Output) -> MacError {
    let text = all_text(out);
    if out.exit == Exit::Code(11) || text.contains("could not be authenticated") {
        MacError::AuthenticationFailed(purpose)
    } else if out.exit == Exit::Code(136) || text.contains("Unable to change key") {
        MacError::UnableToChangeKey
    } else if text.contains("FileVault is Off") {
        MacError::FileVaultNotOn("FileVault is Off".into())
    } else {
        unrecognized(purpose, out, true)
    }
}

/// True for FileVault's personal recovery key form: six groups of four of `A-Z0-9`.
pub fn is_recovery_key_form(key: &[u8]) -> bool {
    key.len() == 29
        && key.split(|b| *b == b'-').count() == 6
        && key.split(|b| *b == b'-').all(|g| {
            g.len() == 4
                && g.iter()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
        })
}

/// `fdesetup changerecovery -personal -outputplist`: the new key from the `RecoveryKey` of the
/// property list on stdout. A key in that form is returned whatever the exit status (the Mac
/// may already have it; the caller validates it); no key means the failure the text names.
pub fn change_recovery(out: &Output) -> Result<Secret, MacError> {
    if let Ok(mut value) = plist::Value::from_reader_xml(&out.stdout[..]) {
        let key = value
            .as_dictionary()
            .and_then(|d| d.get("RecoveryKey"))
            .and_then(plist::Value::as_string)
            .filter(|k| is_recovery_key_form(k.as_bytes()))
            .map(|k| Secret::copy_from(k.as_bytes()));
        if let Some(d) = value.as_dictionary_mut() {
            for (_, v) in d.iter_mut() {
                if let plist::Value::String(s) = v {
                    s.zeroize();
                }
            }
        }
        if let Some(k) = key {
            return Ok(k);
        }
    }
    Err(auth_or_unrecognized(Purpose::ChangeRecovery, out))
}

/// `fdesetup removerecovery -personal`: known refusals, else a claim to verify with
/// `haspersonalrecoverykey`.
pub fn remove_recovery(out: &Output) -> Result<Unverified, MacError> {
    if out.exit.success() && !all_text(out).contains("Error") {
        Ok(Unverified::claimed())
    } else {
        Err(auth_or_unrecognized(Purpose::RemoveRecovery, out))
    }
}
