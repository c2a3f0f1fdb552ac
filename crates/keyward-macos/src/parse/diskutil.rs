//! `diskutil apfs unlockVolume … -verify` output. The refusal is text ("The given passphrase
//! is incorrect (-69557)", "Passphrase incorrect or user does not exist"); only an exit 0
//! without an error line counts as "this password unlocks the volume".

use crate::command::Purpose;
use crate::error::MacError;
use crate::parse::{all_text, unrecognized};
use crate::runner::Output;

/// True if the password unlocks the volume for the user, false if diskutil says it does not.
pub fn verify(out: &Output) -> Result<bool, MacError> {
    let text = all_text(out);
    let lower = text.to_ascii_lowercase();
    if lower.contains("passphrase is incorrect")
        || lower.contains("passphrase incorrect")
        || text.contains("-69557")
    {
        return Ok(false);
    }
    if lower.contains("error") || !out.exit.success() {
        return Err(unrecognized(Purpose::VerifyUnlock, out, true));
    }
    Ok(true)
}
