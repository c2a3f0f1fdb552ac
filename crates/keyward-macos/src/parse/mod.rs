//! Parsers for what Apple's tools print, judged by text and never by exit status alone:
//! `sysadminctl` exits 0 while refusing ("phantom success"), `dscl` in interactive mode exits 0
//! whatever its commands did. Each parser knows the recorded forms in `fixtures/`; anything
//! else is [`MacError::Unrecognized`], and no change is assumed to have happened.
//!
//! A parser that accepts a *claimed* change returns [`Unverified`]: the caller must then prove
//! the change with a read (`-secureTokenStatus`, `diskutil -verify`, `validaterecovery`).

pub mod diskutil;
pub mod dscl;
pub mod fdesetup;
pub mod sysadminctl;

use keyward_core::quote;

use crate::command::Purpose;
use crate::error::MacError;
use crate::runner::Output;

/// A tool claimed a change and printed no refusal. Not proof: see the module doc.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "a claimed change must be verified by reading the state back"]
pub struct Unverified(());

impl Unverified {
    pub(crate) fn claimed() -> Self {
        Unverified(())
    }
}

/// Both streams, for marker searches (tools are inconsistent about which one they use).
pub(crate) fn all_text(out: &Output) -> String {
    let mut s = String::with_capacity(out.stdout.len() + out.stderr.len() + 1);
    s.push_str(out.stdout_text());
    s.push('\n');
    s.push_str(out.stderr_text());
    s
}

/// Strip the `2026-05-22 10:23:38.123 sysadminctl[1234:5678] ` prefix NSLog puts on a line.
pub(crate) fn strip_nslog(line: &str) -> &str {
    match line.find("] ") {
        Some(i) if line[..i].contains('[') && line[..i].contains(' ') => &line[i + 2..],
        _ => line,
    }
}

/// The "unrecognised" error, with an excerpt of stderr only when the command read no secret.
pub(crate) fn unrecognized(purpose: Purpose, out: &Output, secret_stdin: bool) -> MacError {
    let excerpt = (!secret_stdin)
        .then(|| out.stderr_text().trim())
        .filter(|s| !s.is_empty())
        .map(quote);
    MacError::Unrecognized {
        purpose,
        exit: out.exit.to_string(),
        excerpt,
    }
}

/// Directory Services' refusals, wherever they appear: `eDSAuthFailed` is a wrong password.
pub(crate) fn ds_auth_failed(text: &str) -> bool {
    text.contains("eDSAuthFailed") || text.contains("-14090")
}
