//! A directory user's password change (pam_sss, or any module that is not pam_unix).
//!
//! Debian's libpam-sss profile ends the password stack with `sufficient pam_sss.so use_authtok`
//! before the *Additional* block, so the `pam_keyward.so` line there never runs for a directory
//! user. The `keyward-directory` profile puts `pam_keyward.so stash` in the *Primary* block,
//! after pam_unix (priority 256) and before pam_sss (128), as libpam-pwquality sits before
//! both: for a user who is not in /etc/passwd it takes the new password (asking for it, as
//! pam_unix would have, if no module did yet), hands it on to pam_sss through `PAM_AUTHTOK`,
//! and keeps a copy with `pam_set_data`. libpam calls the copy's cleanup at `pam_end` with the
//! status the application ends with: only `PAM_SUCCESS` (the change was committed) sends it to
//! the helper, which then checks it with the PAM stack before it touches a keyslot. A failed
//! change, a forked child's `pam_end(PAM_DATA_SILENT)` and the Additional line's own send
//! (which replaces the copy) send nothing.

use std::ffi::{c_char, c_int, c_void, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;

use keyward_core::ipc::{Request, WireSecret};
use keyward_core::{Secret, UserName};
use pam::constants::PamResultCode;
use pam::module::PamHandle;

const PAM_SUCCESS: c_int = 0;
const PAM_AUTHTOK: c_int = 6;
/// The key the copy is kept under.
const KEY: &CStr = c"keyward-password-change";

#[link(name = "pam")]
unsafe extern "C" {
    fn pam_get_authtok(
        pamh: *mut PamHandle,
        item: c_int,
        authtok: *mut *const c_char,
        prompt: *const c_char,
    ) -> c_int;
    fn pam_set_data(
        pamh: *mut PamHandle,
        name: *const c_char,
        data: *mut c_void,
        cleanup: Option<unsafe extern "C" fn(*mut PamHandle, *mut c_void, c_int)>,
    ) -> c_int;
}

/// What is sent at `pam_end`.
struct Change {
    socket: PathBuf,
    user: UserName,
    new: Secret,
    old: Option<Secret>,
}

/// Is the user in the local /etc/passwd (pam_unix's own test of whether it owns an account)?
pub fn is_local(user: &UserName) -> bool {
    std::fs::read("/etc/passwd").is_ok_and(|text| {
        text.split(|&b| b == b'\n').any(|line| {
            line.strip_prefix(user.as_str().as_bytes())
                .is_some_and(|r| r.first() == Some(&b':'))
        })
    })
}

/// The `stash` line, in the update pass: get the new password (asking if no module did), keep a
/// copy for `pam_end`. Returns the code to give libpam.
pub fn stash(
    pamh: &mut PamHandle,
    socket: PathBuf,
    user: UserName,
    old: Option<Secret>,
) -> Result<PamResultCode, String> {
    let raw: *mut PamHandle = pamh;
    let mut tok: *const c_char = std::ptr::null();
    // SAFETY: `raw` is the live handle libpam gave this call; `tok` is an out-pointer; a NULL
    // prompt asks libpam for its own "New password:" / "Retype new password:" prompts.
    let rc = unsafe { pam_get_authtok(raw, PAM_AUTHTOK, &mut tok, std::ptr::null()) };
    if rc != PAM_SUCCESS {
        // No new password (the user gave up, or typed two different ones): the module that
        // follows would fail for the same reason.
        return Ok(PamResultCode::PAM_AUTHTOK_ERR);
    }
    if tok.is_null() {
        return Err("no new password".into());
    }
    // SAFETY: libpam returned a NUL-terminated string it owns, valid while the handle is.
    let new = Secret::copy_from(unsafe { CStr::from_ptr(tok) }.to_bytes());
    let data = Box::into_raw(Box::new(Change {
        socket,
        user,
        new,
        old,
    }));
    // SAFETY: `KEY` is a static C string; `data` is a leaked Box that `send_at_end` takes back
    // exactly once (libpam calls the cleanup once: at pam_end, or when the key is replaced).
    let rc = unsafe { pam_set_data(raw, KEY.as_ptr(), data.cast(), Some(send_at_end)) };
    if rc != PAM_SUCCESS {
        // SAFETY: libpam did not take it: this is still the only owner.
        drop(unsafe { Box::from_raw(data) });
        return Err(format!("pam_set_data failed ({rc})"));
    }
    Ok(PamResultCode::PAM_IGNORE)
}

/// The Additional line sent the change itself: drop the copy unsent.
pub fn forget(pamh: &mut PamHandle) {
    let raw: *mut PamHandle = pamh;
    // SAFETY: replacing the key with no data: libpam runs the old cleanup with
    // PAM_DATA_REPLACE (which sends nothing) and keeps nothing new.
    unsafe { pam_set_data(raw, KEY.as_ptr(), std::ptr::null_mut(), None) };
}

/// libpam's cleanup for the copy. `status` is what the application passed to `pam_end`, with
/// `PAM_DATA_SILENT` or `PAM_DATA_REPLACE` set where it is not the end of this transaction.
unsafe extern "C" fn send_at_end(_pamh: *mut PamHandle, data: *mut c_void, status: c_int) {
    if data.is_null() {
        return;
    }
    // SAFETY: `data` is the Box `stash` leaked, handed back once.
    let change = unsafe { Box::from_raw(data.cast::<Change>()) };
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        if status != PAM_SUCCESS {
            return Ok(());
        }
        let req = Request::PasswordChange {
            user: change.user.clone(),
            new: WireSecret::from_secret(&change.new),
            old: change.old.as_ref().map(WireSecret::from_secret),
        };
        crate::send_to(&change.socket, req)
    }));
    crate::log_outcome("password (at pam_end)", outcome);
    drop(change);
}
