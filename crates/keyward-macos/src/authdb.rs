//! Install and uninstall keyward's login capture in the authorization database: read
//! `system.login.console`, edit it ([`crate::login_right`]), write it back, and read it again
//! to prove the change is there — `security` is judged by what the database then says, not by
//! its exit status alone. For `keyward install`/`uninstall` on a Mac (root).

use crate::build::security;
use crate::command::{Invocation, Purpose};
use crate::error::MacError;
use crate::login_right::{self, Edit, LoginRightError};
use crate::runner::{Output, Runner};

/// What an install or uninstall did. Exhaustive on purpose: the CLI says what happened for
/// each case, and must be told when there is a new one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoginRightChange {
    /// The right was already as wanted.
    Unchanged,
    /// The right was written and read back; on install, the mechanism that now follows
    /// keyward's (kept where it was).
    Written {
        /// The mechanism after keyward's, if any (install only).
        kept_after: Option<String>,
    },
}

/// Put `keyward:capture,privileged` right after `builtin:authenticate,privileged`.
/// Refuses (changing nothing) a right keyward does not understand.
pub fn install_login_capture(runner: &mut impl Runner) -> Result<LoginRightChange, MacError> {
    apply(runner, login_right::insert_capture)
}

/// Take keyward's mechanism out of the right, leaving the rest as it is.
pub fn uninstall_login_capture(runner: &mut impl Runner) -> Result<LoginRightChange, MacError> {
    apply(runner, login_right::remove_capture)
}

fn apply(
    runner: &mut impl Runner,
    edit: fn(&[u8]) -> Result<Edit, LoginRightError>,
) -> Result<LoginRightChange, MacError> {
    let current = run_ok(runner, &security::read_login_right())?;
    let before = login_right::mechanisms(&current.stdout)?;
    let (plist, kept_after) = match edit(&current.stdout)? {
        Edit::Unchanged => return Ok(LoginRightChange::Unchanged),
        Edit::Changed { plist, kept_after } => (plist, kept_after),
    };
    let wanted = login_right::mechanisms(&plist)?;
    if let Err(failed) = run_ok(runner, &security::write_login_right(plist)) {
        // Say whether the database still holds the right as it was: a refused write should
        // have changed nothing, and the administrator must know if it did.
        let unchanged = run_ok(runner, &security::read_login_right())
            .ok()
            .and_then(|back| login_right::mechanisms(&back.stdout).ok())
            .map(|now| now == before);
        let reason = match failed {
            MacError::Unrecognized { exit, excerpt, .. } => match excerpt {
                Some(said) => format!("{exit}: {said}"),
                None => exit,
            },
            other => other.to_string(),
        };
        return Err(MacError::LoginRightNotWritten { reason, unchanged });
    }
    let back = run_ok(runner, &security::read_login_right())?;
    let now = login_right::mechanisms(&back.stdout)?;
    if now != wanted {
        return Err(MacError::PhantomSuccess {
            purpose: Purpose::WriteLoginRight,
            detail: "the right read back does not have the mechanisms written".into(),
        });
    }
    Ok(LoginRightChange::Written { kept_after })
}

/// Run a `security` command that must succeed: exit 0 and no `NO (status)` line (the tool's
/// verdict on stderr; Apple's SecurityTool/authz.c prints it and returns -1 on a refusal).
fn run_ok(runner: &mut impl Runner, inv: &Invocation) -> Result<Output, MacError> {
    let out = runner.run(inv)?;
    let refused = out.stderr_text().lines().any(|l| l.starts_with("NO ("));
    if out.exit.success() && !refused {
        return Ok(out);
    }
    let excerpt: String = out.stderr_text().trim().chars().take(200).collect();
    Err(MacError::Unrecognized {
        purpose: inv.purpose,
        exit: out.exit.to_string(),
        excerpt: (!excerpt.is_empty()).then(|| format!("{excerpt:?}")),
    })
}
