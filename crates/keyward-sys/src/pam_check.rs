//! Asking the system's own PAM stack whether a password is a user's: `pam_authenticate` then
//! `pam_acct_mgmt` on the `keyward` PAM service (`/etc/pam.d/keyward`, which includes the
//! system's auth and account stacks). This is how a directory user's password (sssd: LDAP,
//! Active Directory, FreeIPA; or its cached credentials when offline) is vouched for before it
//! reaches a keyslot: by the same modules that let the user log in.
//!
//! Four libpam calls, written here rather than taken from the `pam-client` crate, which would
//! bring a second bindgen and syn 1 into the root helper's build for them (docs/ARCHITECTURE.md).
//! The conversation answers exactly one hidden prompt with the password and refuses anything
//! else (a second password, an OTP, a user-name prompt), so a stack that asks for more than the
//! password fails closed. The helper runs this in a child process with a deadline ([`child`]),
//! so a module that hangs or crashes cannot take the helper with it.

use std::ffi::{c_char, c_int, c_void, CStr, CString};

use keyward_core::{Secret, UserName};

pub mod child;
pub use child::{ask, child_main, AskError, CHILD_FLAG};

const PAM_SUCCESS: c_int = 0;
const PAM_BUF_ERR: c_int = 5;
const PAM_CONV_ERR: c_int = 19;
const PAM_NEW_AUTHTOK_REQD: c_int = 12;
const PAM_PROMPT_ECHO_OFF: c_int = 1;
const PAM_ERROR_MSG: c_int = 3;
const PAM_TEXT_INFO: c_int = 4;
const PAM_SILENT: c_int = 0x8000;
const PAM_DISALLOW_NULL_AUTHTOK: c_int = 0x0001;

/// The PAM service keyward checks passwords with.
pub const SERVICE: &str = "keyward";
/// Its file: a missing one would make libpam fall back to `other`, whatever that allows.
pub const SERVICE_FILE: &str = "/etc/pam.d/keyward";

#[repr(C)]
struct PamMessage {
    msg_style: c_int,
    msg: *const c_char,
}

#[repr(C)]
struct PamResponse {
    resp: *mut c_char,
    resp_retcode: c_int,
}

type ConvFn = unsafe extern "C" fn(
    num_msg: c_int,
    msg: *mut *const PamMessage,
    resp: *mut *mut PamResponse,
    appdata: *mut c_void,
) -> c_int;

#[repr(C)]
struct PamConv {
    conv: Option<ConvFn>,
    appdata_ptr: *mut c_void,
}

#[link(name = "pam")]
unsafe extern "C" {
    fn pam_start(
        service: *const c_char,
        user: *const c_char,
        conv: *const PamConv,
        pamh: *mut *mut c_void,
    ) -> c_int;
    fn pam_authenticate(pamh: *mut c_void, flags: c_int) -> c_int;
    fn pam_acct_mgmt(pamh: *mut c_void, flags: c_int) -> c_int;
    fn pam_end(pamh: *mut c_void, status: c_int) -> c_int;
    fn pam_strerror(pamh: *mut c_void, errnum: c_int) -> *const c_char;
}

unsafe extern "C" {
    fn calloc(n: usize, size: usize) -> *mut c_void;
}

/// What the stack said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// `pam_authenticate` and `pam_acct_mgmt` succeeded (or the account only needs a new
    /// password, which the same login goes on to set).
    Accepted,
    /// The stack refused; PAM's own words for why (no secret in them).
    Refused(String),
}

/// The conversation's state: the password, given once.
struct Answer<'a> {
    password: &'a [u8],
    given: bool,
}

/// Check `password` for `user` with the `keyward` PAM service. Runs the modules in this
/// process: call it in a child that may be killed ([`child_main`]; the helper [`ask`]s it).
pub fn check(user: &UserName, password: &Secret) -> Result<Verdict, String> {
    let service = CString::new(SERVICE).map_err(|e| e.to_string())?;
    let name = CString::new(user.as_str()).map_err(|e| e.to_string())?;
    if password.expose().contains(&0) {
        return Ok(Verdict::Refused("the password holds a NUL byte".into()));
    }
    let mut answer = Answer {
        password: password.expose(),
        given: false,
    };
    let conv = PamConv {
        conv: Some(converse),
        appdata_ptr: (&raw mut answer).cast(),
    };
    let mut pamh: *mut c_void = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call: the C strings and `conv` (and `answer`,
    // which `conv` points to) outlive the handle, which `pam_end` below releases before they
    // are dropped; `pamh` is an out-pointer to a local.
    let rc = unsafe { pam_start(service.as_ptr(), name.as_ptr(), &conv, &mut pamh) };
    if rc != PAM_SUCCESS || pamh.is_null() {
        return Err(format!("pam_start failed ({rc})"));
    }
    let flags = PAM_SILENT | PAM_DISALLOW_NULL_AUTHTOK;
    // SAFETY: `pamh` is the live handle pam_start returned.
    let mut rc = unsafe { pam_authenticate(pamh, flags) };
    let mut stage = "auth";
    if rc == PAM_SUCCESS {
        stage = "account";
        // SAFETY: as above.
        rc = unsafe { pam_acct_mgmt(pamh, PAM_SILENT) };
        if rc == PAM_NEW_AUTHTOK_REQD {
            rc = PAM_SUCCESS;
        }
    }
    let verdict = if rc == PAM_SUCCESS {
        Verdict::Accepted
    } else {
        Verdict::Refused(format!("{stage}: {}", strerror(pamh, rc)))
    };
    // SAFETY: the handle is live and not used after this.
    unsafe { pam_end(pamh, rc) };
    Ok(verdict)
}

fn strerror(pamh: *mut c_void, rc: c_int) -> String {
    // SAFETY: `pamh` is live; pam_strerror returns a static string (or NULL).
    let p = unsafe { pam_strerror(pamh, rc) };
    if p.is_null() {
        return format!("PAM error {rc}");
    }
    // SAFETY: non-null, NUL-terminated, static.
    let text = unsafe { CStr::from_ptr(p) }.to_string_lossy();
    format!("{text} ({rc})")
}

/// The conversation function libpam calls. Linux-PAM passes `msg` as an array of `num_msg`
/// pointers and frees the response array and each `resp` with `free`.
unsafe extern "C" fn converse(
    num_msg: c_int,
    msg: *mut *const PamMessage,
    resp: *mut *mut PamResponse,
    appdata: *mut c_void,
) -> c_int {
    let result = std::panic::catch_unwind(|| {
        let Ok(n) = usize::try_from(num_msg) else {
            return PAM_CONV_ERR;
        };
        if n == 0 || msg.is_null() || resp.is_null() || appdata.is_null() {
            return PAM_CONV_ERR;
        }
        // SAFETY: appdata is the `Answer` that `check` set, alive for the whole transaction,
        // and libpam calls the conversation from the thread that called into it.
        let answer = unsafe { &mut *appdata.cast::<Answer>() };
        // Decide on every message before allocating anything.
        let mut wants_password = None;
        for i in 0..n {
            // SAFETY: libpam gives an array of `n` message pointers.
            let p = unsafe { *msg.add(i) };
            if p.is_null() {
                return PAM_CONV_ERR;
            }
            // SAFETY: non-null, pointing at libpam's message for this call.
            let m = unsafe { &*p };
            match m.msg_style {
                PAM_PROMPT_ECHO_OFF if wants_password.is_none() && !answer.given => {
                    wants_password = Some(i);
                }
                PAM_ERROR_MSG | PAM_TEXT_INFO => {}
                _ => return PAM_CONV_ERR,
            }
        }
        // SAFETY: calloc of n zeroed responses; libpam frees the array.
        let out = unsafe { calloc(n, size_of::<PamResponse>()) }.cast::<PamResponse>();
        if out.is_null() {
            return PAM_BUF_ERR;
        }
        if let Some(i) = wants_password {
            let len = answer.password.len();
            // SAFETY: a zeroed buffer one byte longer than the password: NUL-terminated.
            let buf = unsafe { calloc(len + 1, 1) }.cast::<u8>();
            if buf.is_null() {
                // SAFETY: `out` came from calloc above and holds no strings yet.
                unsafe { free(out.cast()) };
                return PAM_BUF_ERR;
            }
            // SAFETY: `buf` has room for `len` bytes; the source is the password.
            unsafe { std::ptr::copy_nonoverlapping(answer.password.as_ptr(), buf, len) };
            // SAFETY: `i < n`, inside the array.
            unsafe { (*out.add(i)).resp = buf.cast() };
            answer.given = true;
        }
        // SAFETY: `resp` is libpam's out-pointer.
        unsafe { *resp = out };
        PAM_SUCCESS
    });
    result.unwrap_or(PAM_CONV_ERR)
}

unsafe extern "C" {
    fn free(p: *mut c_void);
}
