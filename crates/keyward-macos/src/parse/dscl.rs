//! `dscl` output: `-list` as `name value` columns, `-read` as `Key: value` (or `Key:` then
//! indented values), `DS Error: -14136 (eDSRecordNotFound)` for a missing record, and, in
//! interactive mode, errors only as text (the exit status is dscl's, not the command's).

use crate::command::Purpose;
use crate::error::MacError;
use crate::names::{AccountId, GeneratedUid, ShortName};
use crate::parse::{all_text, ds_auth_failed, unrecognized, Unverified};
use crate::runner::Output;

/// One account as `dscl . -read` showed it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AccountRecord {
    /// `UniqueID`.
    pub unique_id: Option<AccountId>,
    /// `GeneratedUID`.
    pub generated_uid: Option<GeneratedUid>,
    /// `AuthenticationAuthority` values.
    pub authentication_authority: Vec<String>,
    /// `IsHidden` is 1.
    pub hidden: bool,
}

impl AccountRecord {
    /// True if the account carries `;DisabledTags;SecureToken`.
    pub fn token_disabled_tag(&self) -> bool {
        self.authentication_authority
            .iter()
            .any(|a| a == crate::build::dscl::DISABLED_TOKEN_TAG)
    }
}

fn not_found(text: &str) -> bool {
    text.contains("eDSRecordNotFound") || text.contains("-14136")
}

/// `dscl . -list /Users ATTR`: `(name, value)` pairs. Accounts whose names are not valid
/// short names are skipped (they are never scanned, never touched).
pub fn list(out: &Output) -> Result<Vec<(ShortName, String)>, MacError> {
    if !out.exit.success() || all_text(out).contains("DS Error") {
        return Err(unrecognized(Purpose::DirectoryList, out, false));
    }
    Ok(out
        .stdout_text()
        .lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            let name = ShortName::parse(words.next()?).ok()?;
            let value = words.collect::<Vec<_>>().join(" ");
            Some((name, value))
        })
        .collect())
}

/// `dscl . -list /Users UniqueID`, typed.
pub fn list_unique_ids(out: &Output) -> Result<Vec<(ShortName, AccountId)>, MacError> {
    Ok(list(out)?
        .into_iter()
        .filter_map(|(n, v)| Some((n, AccountId::parse(&v).ok()?)))
        .collect())
}

/// `dscl . -list /Users GeneratedUID`, typed.
pub fn list_generated_uids(out: &Output) -> Result<Vec<(ShortName, GeneratedUid)>, MacError> {
    Ok(list(out)?
        .into_iter()
        .filter_map(|(n, v)| Some((n, GeneratedUid::parse(&v).ok()?)))
        .collect())
}

/// `dscl . -read /Users/NAME …`: `None` if there is no such record.
pub fn read_account(out: &Output) -> Result<Option<AccountRecord>, MacError> {
    let text = all_text(out);
    if not_found(&text) {
        return Ok(None);
    }
    // Asking for an attribute the record lacks prints "No such key: …" (and may set the exit
    // status); the attributes that are there are still listed.
    if (!out.exit.success() && !text.contains("No such key")) || text.contains("DS Error") {
        return Err(unrecognized(Purpose::DirectoryRead, out, false));
    }
    let mut rec = AccountRecord::default();
    let mut key = String::new();
    for line in out.stdout_text().lines() {
        if line.starts_with("No such key") {
            continue;
        }
        let values = if line.starts_with(' ') {
            line.trim()
        } else if let Some((k, v)) = line.split_once(':') {
            key = k.trim().to_owned();
            v.trim()
        } else {
            continue;
        };
        for v in values.split_whitespace() {
            match key.as_str() {
                "UniqueID" => rec.unique_id = AccountId::parse(v).ok(),
                "GeneratedUID" => rec.generated_uid = GeneratedUid::parse(v).ok(),
                "AuthenticationAuthority" => rec.authentication_authority.push(v.to_owned()),
                "IsHidden" => rec.hidden = v == "1",
                _ => {}
            }
        }
    }
    Ok(Some(rec))
}

/// `dscl . -create/-append/-delete`: silent on success.
pub fn write(out: &Output) -> Result<Unverified, MacError> {
    let text = all_text(out);
    if out.exit.success() && !text.contains("DS Error") && text.trim().is_empty() {
        Ok(Unverified::claimed())
    } else {
        Err(unrecognized(Purpose::DirectoryWrite, out, false))
    }
}

/// Interactive `passwd`: `eDSAuthFailed` is a wrong old password; any other error text is
/// unrecognised; silence is a claim.
pub fn passwd(purpose: Purpose, out: &Output) -> Result<Unverified, MacError> {
    let text = all_text(out);
    if ds_auth_failed(&text) {
        return Err(MacError::AuthenticationFailed(purpose));
    }
    let lower = text.to_ascii_lowercase();
    if lower.contains("error") || lower.contains("invalid") || !out.exit.success() {
        return Err(unrecognized(purpose, out, true));
    }
    Ok(Unverified::claimed())
}
