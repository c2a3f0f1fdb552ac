//! `sysadminctl` output. It logs through NSLog, so everything arrives on stderr with a date
//! and pid prefix, and it exits 0 even when it refuses:
//!
//! * `Secure token is ENABLED for user Jane Appleseed` — status, naming the **RealName**, so
//!   the line cannot be matched to the short name asked about; one query per account;
//! * `Operation is not permitted without secure token unlock.` — refusal, exit 0;
//! * `DS Error: -14090 (eDSAuthFailed)` — a wrong password, exit 0;
//! * ` - Done!` — printed also when the grant did not happen; never trusted.

use crate::command::Purpose;
use crate::error::MacError;
use crate::parse::{all_text, ds_auth_failed, strip_nslog, unrecognized, Unverified};
use crate::runner::Output;

/// One account's Secure Token status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenStatus {
    /// True if the account holds a Secure Token.
    pub enabled: bool,
    /// The name sysadminctl printed (the account's RealName, not its short name).
    pub shown_as: String,
}

const ENABLED: &str = "Secure token is ENABLED for user ";
const DISABLED: &str = "Secure token is DISABLED for user ";
const NOT_PERMITTED: &str = "Operation is not permitted without secure token unlock";

/// `-secureTokenStatus`: exactly one status line, on either stream, whatever the exit status.
pub fn token_status(out: &Output) -> Result<TokenStatus, MacError> {
    let text = all_text(out);
    let mut found = Vec::new();
    for line in text.lines().map(strip_nslog) {
        if let Some(name) = line.strip_prefix(ENABLED) {
            found.push(TokenStatus {
                enabled: true,
                shown_as: name.trim().to_owned(),
            });
        } else if let Some(name) = line.strip_prefix(DISABLED) {
            found.push(TokenStatus {
                enabled: false,
                shown_as: name.trim().to_owned(),
            });
        }
    }
    match found.as_slice() {
        [one] => Ok(one.clone()),
        _ => Err(unrecognized(Purpose::TokenStatus, out, false)),
    }
}

/// `-secureTokenOn` / `-secureTokenOff` / `-deleteUser`: the refusals it is known to print,
/// else a claim to verify. A non-zero exit without a known refusal is unrecognised.
pub fn claimed_change(purpose: Purpose, out: &Output) -> Result<Unverified, MacError> {
    let text = all_text(out);
    if text.contains(NOT_PERMITTED) {
        return Err(MacError::NeedsTokenUnlock(purpose));
    }
    if ds_auth_failed(&text) {
        return Err(MacError::AuthenticationFailed(purpose));
    }
    if text.contains("DS Error") || !out.exit.success() {
        return Err(unrecognized(purpose, out, true));
    }
    Ok(Unverified::claimed())
}
