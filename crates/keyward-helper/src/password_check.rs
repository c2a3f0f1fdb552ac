//! Is this the password the system accepts for this user now? Asked before a captured password
//! reaches a keyslot (docs/THREAT-MODEL.md, "Who vouches for a password").
//!
//! - A local account with a password hash in /etc/shadow: that hash decides, as pam_unix would
//!   (libcrypt; no module runs, nothing is counted against the account).
//! - Anyone else — a directory user through sssd (LDAP, AD, FreeIPA), with no shadow entry —:
//!   the system's own PAM stack decides, through the `keyward` PAM service
//!   (`/etc/pam.d/keyward`: the auth and account stacks). It runs in a child process
//!   (`keyward-helper --check-password`) that gets the name and password over a socket pair and
//!   is killed at a deadline, so a module that hangs or crashes (sssd unreachable, say) never
//!   takes the helper or a login with it. No service file: directory users are refused, never
//!   checked against libpam's `other` fallback.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use keyward_core::{Secret, UserName};
use keyward_sys::{pam_check, shadow};
use zeroize::Zeroizing;

use crate::accounts;

/// How long the PAM stack may take (sssd's own offline detection is shorter).
const PAM_DEADLINE: Duration = Duration::from_secs(30);
/// The most the child reads: a user name, a newline and a password.
const MAX_INPUT: usize = 8 * 1024;
/// The argument that makes the helper binary this child.
pub const CHILD_FLAG: &str = "--check-password";

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
        match run_child(user, password)? {
            Ok(()) => return Ok(()),
            Err(refused) => why = refused,
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

/// Run `keyward-helper --check-password`; `Ok(Err(why))` when the stack refused.
fn run_child(user: &UserName, password: &Secret) -> Result<Result<(), String>, String> {
    let (mut ours, theirs) = UnixStream::pair().map_err(|e| format!("socketpair: {e}"))?;
    let mut child = Command::new("/proc/self/exe")
        .arg(CHILD_FLAG)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .stdin(Stdio::from(std::os::fd::OwnedFd::from(theirs)))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("starting the PAM check: {e}"))?;
    let mut input = Zeroizing::new(Vec::with_capacity(user.as_str().len() + 1 + password.len()));
    input.extend_from_slice(user.as_str().as_bytes());
    input.push(b'\n');
    input.extend_from_slice(password.expose());
    let sent = ours
        .write_all(&input)
        .and_then(|()| ours.shutdown(std::net::Shutdown::Write));
    drop(input);
    let deadline = Instant::now() + PAM_DEADLINE;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "the PAM stack did not answer within {} s",
                    PAM_DEADLINE.as_secs()
                ));
            }
            Err(e) => return Err(format!("waiting for the PAM check: {e}")),
        }
    };
    sent.map_err(|e| format!("sending to the PAM check: {e}"))?;
    let mut out = String::new();
    if let Some(s) = child.stdout.take() {
        s.take(4096)
            .read_to_string(&mut out)
            .map_err(|e| format!("reading the PAM check: {e}"))?;
    }
    let line = keyward_core::printable(out.trim_end());
    match (status.code(), line.strip_prefix("refused: ")) {
        (Some(0), _) if line == "accepted" => Ok(Ok(())),
        (Some(0), Some(why)) => Ok(Err(why.to_owned())),
        _ => Err(format!("the PAM check failed ({status}): {line}")),
    }
}

/// Read at most `MAX_INPUT + 1` bytes into one buffer allocated at that size up front: a
/// growing buffer would leave copies of the password in freed memory, unwiped.
fn read_input(from: impl Read) -> std::io::Result<Zeroizing<Vec<u8>>> {
    let mut input = Zeroizing::new(Vec::with_capacity(MAX_INPUT + 1));
    from.take(MAX_INPUT as u64 + 1).read_to_end(&mut input)?;
    Ok(input)
}

/// `keyward-helper --check-password`: read `USER\nPASSWORD` from stdin (a socket pair from the
/// helper), ask PAM, print `accepted` or `refused: WHY` (or `error: WHY`, failing).
pub fn child_main() -> ExitCode {
    match child() {
        Ok(verdict) => {
            println!("{verdict}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            println!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn child() -> Result<String, String> {
    keyward_sys::hardening::make_undumpable()
        .map_err(|e| format!("prctl(PR_SET_DUMPABLE): {e}"))?;
    let input = read_input(std::io::stdin().lock()).map_err(|e| format!("reading: {e}"))?;
    let split = input
        .iter()
        .position(|&b| b == b'\n')
        .ok_or("no user name")?;
    if input.len() > MAX_INPUT {
        return Err("input too long".into());
    }
    let user = std::str::from_utf8(&input[..split])
        .ok()
        .and_then(|n| UserName::parse(n).ok())
        .ok_or("not a user name")?;
    let password = Secret::copy_from(&input[split + 1..]);
    drop(input);
    Ok(
        match pam_check::check(&user, &password).map_err(|e| e.to_string())? {
            pam_check::Verdict::Accepted => "accepted".into(),
            pam_check::Verdict::Refused(why) => format!("refused: {why}"),
            other => format!("refused: {other:?}"),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_childs_input_buffer_never_grows_so_no_unwiped_copy_is_left() {
        for len in [0, 1, 100, MAX_INPUT, MAX_INPUT + 1, 3 * MAX_INPUT] {
            let data = vec![b'x'; len];
            let input = read_input(data.as_slice()).expect("reading a slice");
            assert_eq!(input.len(), len.min(MAX_INPUT + 1));
            assert_eq!(input.capacity(), MAX_INPUT + 1, "input of {len} bytes");
        }
    }
}
