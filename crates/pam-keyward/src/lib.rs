//! `pam_keyward.so`: captures a login's password (auth phase, placed after pam_unix succeeded)
//! and a password change (password phase, `PAM_UPDATE_AUTHTOK`) and hands them to the keyward
//! helper over its socket, then returns `PAM_IGNORE`. It never blocks or fails a login or a
//! password change: every entry point is inside `catch_unwind`, every helper call has the
//! login-path budget (`helper_client::LOGIN_PATH_BUDGET`, 200 ms), and every outcome — helper down, slow, refusing, a panic — is logged to syslog and
//! ignored. It builds no path from the user name and sends no secret anywhere but the socket,
//! and there only once the kernel says root is listening on it (`keyward_sys::helper_client`).
//!
//! Module arguments: `socket=PATH` (default `/run/keyward/helper.sock`); `stash` for the
//! password line the `keyward-directory` profile places before pam_sss ([`stash`]).
//!
//! In the `keyward` PAM service — the helper's own check of a captured password, which includes
//! the system's auth stack and so this module — it does nothing, so a check never captures.

mod stash;

use std::ffi::CStr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;

use keyward_core::ipc::{Request, WireSecret};
use keyward_core::{Secret, UserName};
use keyward_sys::{helper_client, syslog};
use pam::constants::{PamFlag, PamResultCode};
use pam::items::{AuthTok, OldAuthTok, Service};
use pam::module::{PamHandle, PamHooks};

/// Linux-PAM's `PAM_UPDATE_AUTHTOK`: the second pass of a password change.
const PAM_UPDATE_AUTHTOK: PamFlag = 0x2000;
const IDENT: &str = "pam_keyward";

struct Keyward;
pam::pam_hooks!(Keyward);

impl PamHooks for Keyward {
    fn sm_authenticate(pamh: &mut PamHandle, args: Vec<&CStr>, _flags: PamFlag) -> PamResultCode {
        if !keywards_own_check(pamh) {
            guarded("auth", || capture_login(pamh, &args));
        }
        PamResultCode::PAM_IGNORE
    }

    fn sm_setcred(_pamh: &mut PamHandle, _args: Vec<&CStr>, _flags: PamFlag) -> PamResultCode {
        PamResultCode::PAM_IGNORE
    }

    fn sm_chauthtok(pamh: &mut PamHandle, args: Vec<&CStr>, flags: PamFlag) -> PamResultCode {
        if flags & PAM_UPDATE_AUTHTOK == 0 || keywards_own_check(pamh) {
            return PamResultCode::PAM_IGNORE;
        }
        if has_arg(&args, "stash") {
            let outcome = catch_unwind(AssertUnwindSafe(|| stash_change(pamh, &args)));
            return match outcome {
                Ok(Ok(code)) => code,
                other => {
                    log_outcome("password (stash)", other.map(|r| r.map(drop)));
                    PamResultCode::PAM_IGNORE
                }
            };
        }
        guarded("password", || capture_change(pamh, &args));
        PamResultCode::PAM_IGNORE
    }
}

/// Whether this is the `keyward` PAM service: the helper checking a password it was handed.
fn keywards_own_check(pamh: &PamHandle) -> bool {
    matches!(pamh.get_item::<Service>(), Ok(Some(s)) if s.to_bytes() == b"keyward")
}

fn has_arg(args: &[&CStr], name: &str) -> bool {
    args.iter().any(|a| a.to_bytes() == name.as_bytes())
}

/// Run `f`, logging (never propagating) an error or a panic.
fn guarded(phase: &str, f: impl FnOnce() -> Result<(), String>) {
    log_outcome(phase, catch_unwind(AssertUnwindSafe(f)));
}

/// Log an error or a panic (never propagated).
fn log_outcome(phase: &str, outcome: std::thread::Result<Result<(), String>>) {
    match outcome {
        Ok(Ok(())) => {}
        Ok(Err(why)) => syslog::send(IDENT, 5, &format!("{phase}: ignored: {why}")),
        Err(_) => syslog::send(
            IDENT,
            4,
            &format!("{phase}: ignored after an internal error"),
        ),
    }
}

fn socket(args: &[&CStr]) -> PathBuf {
    args.iter()
        .filter_map(|a| a.to_str().ok())
        .find_map(|a| a.strip_prefix("socket="))
        .map_or_else(|| PathBuf::from("/run/keyward/helper.sock"), PathBuf::from)
}

fn user(pamh: &mut PamHandle) -> Result<UserName, String> {
    let name = pamh.get_user(None).map_err(|e| format!("no user: {e:?}"))?;
    // Parsed, never used raw: no path, argument or log line is built from an unchecked name.
    UserName::parse(&name).map_err(|_| "user name is not one keyward manages".to_owned())
}

fn send(args: &[&CStr], req: Request) -> Result<(), String> {
    send_to(&socket(args), req)
}

fn send_to(socket: &std::path::Path, req: Request) -> Result<(), String> {
    helper_client::call_by(socket, req, helper_client::LOGIN_PATH_BUDGET)
        .map(drop)
        .map_err(|e| e.to_string())
}

fn capture_login(pamh: &mut PamHandle, args: &[&CStr]) -> Result<(), String> {
    let user = user(pamh)?;
    let password = match pamh.get_item::<AuthTok>() {
        Ok(Some(t)) => Secret::copy_from(t.as_bytes()),
        _ => return Err("no password in this conversation".into()),
    };
    helper_client::send_login_capture(&socket(args), user, &password).map_err(|e| e.to_string())
}

fn capture_change(pamh: &mut PamHandle, args: &[&CStr]) -> Result<(), String> {
    let user = user(pamh)?;
    let new = match pamh.get_item::<AuthTok>() {
        Ok(Some(t)) => WireSecret::from_secret(&Secret::copy_from(t.as_bytes())),
        _ => return Err("no new password in this conversation".into()),
    };
    let old = match pamh.get_item::<OldAuthTok>() {
        Ok(Some(t)) => Some(WireSecret::from_secret(&Secret::copy_from(t.as_bytes()))),
        _ => None,
    };
    // Sent here: a copy the `stash` line kept (a stack where pam_sss is not `sufficient`)
    // must not be sent again at pam_end.
    stash::forget(pamh);
    send(args, Request::PasswordChange { user, new, old })
}

fn stash_change(pamh: &mut PamHandle, args: &[&CStr]) -> Result<PamResultCode, String> {
    let user = user(pamh)?;
    if stash::is_local(&user) {
        // pam_unix's account: it asks and commits, and the Additional line sends.
        return Ok(PamResultCode::PAM_IGNORE);
    }
    let old = match pamh.get_item::<OldAuthTok>() {
        Ok(Some(t)) => Some(Secret::copy_from(t.as_bytes())),
        _ => None,
    };
    stash::stash(pamh, socket(args), user, old)
}
