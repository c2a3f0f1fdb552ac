//! Is this the password the system accepts for this user now? Asked before a captured password
//! reaches a keyslot (docs/THREAT-MODEL.md, "Who vouches for a password").
//!
//! - A local account with a password hash in /etc/shadow: that hash decides, as pam_unix would
//!   (libcrypt; no module runs, nothing is counted against the account).
//! - Anyone else — a directory user through sssd (LDAP, AD, FreeIPA), with no shadow entry —:
//!   the system's own PAM stack decides, through the `keyward` PAM service
//!   (`/etc/pam.d/keyward`: the auth and account stacks). It runs in a child process
//!   (`keyward-helper --check-password`, [`keyward_sys::pam_check::child`]) that is killed at a
//!   deadline, so a module that hangs or crashes (sssd unreachable, say) never takes the helper
//!   or a login with it. No service file: directory users are refused, never checked against
//!   libpam's `other` fallback.

use std::time::Duration;

use keyward_core::{Secret, UserName};
use keyward_sys::pam_check::{self, Verdict};
use keyward_sys::shadow;

use crate::accounts;

/// Check `password` for `user`. After a password change the new hash may land a moment after
/// the change is reported, so a change waits for it briefly.
pub fn verify(user: &UserName, password: &Secret, after_change: bool) -> Result<(), String> {
    match local_hash(user)? {
        Some(_) => check_shadow(user, password, after_change),
        None => check_pam(user, password, after_change),
    }
}

/// The user's password hash in /etc/shadow, if they have one there (an entry of only `*`, `!`
/// or `x` is no password: such a user signs in some other way).
fn local_hash(user: &UserName) -> Result<Option<String>, String> {
    let hash = shadow::hash_of(std::path::Path::new(accounts::SHADOW), user)
        .map_err(|e| format!("shadow: {e}"))?;
    Ok(hash.filter(|h| !matches!(h.trim_start_matches('!'), "" | "*" | "x")))
}

fn check_shadow(user: &UserName, password: &Secret, after_change: bool) -> Result<(), String> {
    let tries = if after_change { 20 } else { 1 };
    for attempt in 0..tries {
        if local_hash(user)?.is_some_and(|h| shadow::matches(password, &h)) {
            return Ok(());
        }
        if attempt + 1 < tries {
            std::thread::sleep(Duration::from_millis(250));
        }
    }
    Err("the password does not match the user's /etc/shadow entry; nothing enrolled".into())
}

fn check_pam(user: &UserName, password: &Secret, after_change: bool) -> Result<(), String> {
    if std::fs::symlink_metadata(pam_check::SERVICE_FILE).is_err() {
        return Err(format!(
            "{} has no /etc/shadow password and {} is missing (run `keyward install`): \
             nothing enrolled",
            user,
            pam_check::SERVICE_FILE
        ));
    }
    // A change is reported once the stack has committed it; one more try covers a directory
    // that takes a moment to answer for the new password.
    let tries = if after_change { 2 } else { 1 };
    let mut why = String::new();
    for attempt in 0..tries {
        match pam_check::ask(user, password).map_err(|e| e.to_string())? {
            Verdict::Accepted => return Ok(()),
            Verdict::Refused(refused) => why = refused,
        }
        if attempt + 1 < tries {
            std::thread::sleep(Duration::from_secs(1));
        }
    }
    Err(format!(
        "the PAM service `{}` refused the password ({why}); nothing enrolled",
        pam_check::SERVICE
    ))
}
