//! The bundle's C face: `AuthorizationPluginCreate`, the plugin interface the engine calls, and
//! [`CallbackEngine`], which implements [`Engine`] over the engine's callbacks. Compiled for
//! macOS, and for Linux test builds so the glue runs against a fake engine in C calling
//! convention; no Apple library is linked (the engine hands its functions over in a table).
//!
//! Every entry point runs inside `catch_unwind` and answers `errAuthorizationSuccess` whenever
//! it can: a mechanism that fails to load or be created would fail the login. Every `unsafe`
//! block says why it is sound.

pub mod types;

use std::ffi::{c_void, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::ptr;

use zeroize::Zeroizing;

use crate::capture;
use crate::engine::{ContextKey, Engine, EngineError, MAX_VALUE_LEN};
use types::{
    AuthorizationCallbacks, AuthorizationContextFlags, AuthorizationEngineRef,
    AuthorizationMechanismId, AuthorizationMechanismRef, AuthorizationPluginInterface,
    AuthorizationPluginRef, AuthorizationValue, OsStatus, ERR_AUTHORIZATION_INTERNAL,
    ERR_AUTHORIZATION_SUCCESS, K_AUTHORIZATION_PLUGIN_INTERFACE_VERSION,
    K_AUTHORIZATION_RESULT_ALLOW,
};

/// The engine functions the plugin uses, copied out of the engine's table at creation.
#[derive(Clone, Copy, Debug)]
struct Callbacks {
    set_result: Option<unsafe extern "C" fn(AuthorizationEngineRef, u32) -> OsStatus>,
    did_deactivate: Option<unsafe extern "C" fn(AuthorizationEngineRef) -> OsStatus>,
    get_context_value: Option<
        unsafe extern "C" fn(
            AuthorizationEngineRef,
            types::AuthorizationString,
            *mut AuthorizationContextFlags,
            *mut *const AuthorizationValue,
        ) -> OsStatus,
    >,
}

/// What `AuthorizationPluginRef` points at.
#[derive(Debug)]
struct Plugin {
    callbacks: Callbacks,
}

/// What `AuthorizationMechanismRef` points at.
#[derive(Debug)]
struct Mechanism {
    engine: AuthorizationEngineRef,
    callbacks: Callbacks,
    /// `keyward:capture`; any other mechanism name only allows.
    capture: bool,
}

/// The plugin's interface; static, so it stays valid until (and after) `PluginDestroy`.
static INTERFACE: AuthorizationPluginInterface = AuthorizationPluginInterface {
    version: K_AUTHORIZATION_PLUGIN_INTERFACE_VERSION,
    plugin_destroy: Some(plugin_destroy),
    mechanism_create: Some(mechanism_create),
    mechanism_invoke: Some(mechanism_invoke),
    mechanism_deactivate: Some(mechanism_deactivate),
    mechanism_destroy: Some(mechanism_destroy),
};

/// Run an entry point; a panic becomes `errAuthorizationInternal` instead of unwinding into
/// the engine (which would abort authorizationhost, and the login with it).
fn guard(f: impl FnOnce() -> OsStatus) -> OsStatus {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or(ERR_AUTHORIZATION_INTERNAL)
}

/// The helper's socket. Test builds use a path that never exists, so a test can never hand a
/// login to a keyward helper that happens to run on the test machine.
#[cfg(not(test))]
const SOCKET: &str = crate::HELPER_SOCKET;
#[cfg(test)]
const SOCKET: &str = "/nonexistent/keyward-authplugin-test/helper.sock";

/// One line to syslog (never a secret: [`capture::Report`] carries none). Silent in tests.
fn log(severity: u8, line: &str) {
    #[cfg(not(test))]
    keyward_sys::syslog::send(crate::LOG_IDENT, severity, line);
    #[cfg(test)]
    let _ = (severity, line);
}

/// The plug-in's entry point, called once by the engine after loading the bundle.
///
/// # Safety
///
/// Called by the authorization engine as `AuthorizationPlugin.h` specifies: `callbacks` points
/// at the engine's callback table, valid for the plugin's lifetime; `out_plugin` and
/// `out_interface` point at writable storage. Null pointers are refused.
#[no_mangle]
#[allow(non_snake_case)]
pub unsafe extern "C" fn AuthorizationPluginCreate(
    callbacks: *const AuthorizationCallbacks,
    out_plugin: *mut AuthorizationPluginRef,
    out_interface: *mut *const AuthorizationPluginInterface,
) -> OsStatus {
    guard(|| {
        if callbacks.is_null() || out_plugin.is_null() || out_interface.is_null() {
            return ERR_AUTHORIZATION_INTERNAL;
        }
        // SAFETY: `callbacks` is non-null and points at the engine's table (the caller's
        // contract). Each field is read on its own through the raw pointer — no reference to
        // the whole struct is made — and these three exist in every version of the table.
        let callbacks = unsafe {
            Callbacks {
                set_result: (*callbacks).set_result,
                did_deactivate: (*callbacks).did_deactivate,
                get_context_value: (*callbacks).get_context_value,
            }
        };
        let plugin = Box::into_raw(Box::new(Plugin { callbacks }));
        // SAFETY: both out-pointers are non-null and writable (the caller's contract). The
        // plugin Box is taken back once, by `plugin_destroy`; the interface is a static.
        unsafe {
            out_plugin.write(plugin.cast::<c_void>());
            out_interface.write(&INTERFACE);
        }
        ERR_AUTHORIZATION_SUCCESS
    })
}

/// `PluginDestroy`: after every mechanism is destroyed.
unsafe extern "C" fn plugin_destroy(plugin: AuthorizationPluginRef) -> OsStatus {
    guard(|| {
        if !plugin.is_null() {
            // SAFETY: `plugin` is the Box `AuthorizationPluginCreate` leaked; the engine calls
            // PluginDestroy once, last.
            drop(unsafe { Box::from_raw(plugin.cast::<Plugin>()) });
        }
        ERR_AUTHORIZATION_SUCCESS
    })
}

/// `MechanismCreate`: one instance per evaluation of the right.
unsafe extern "C" fn mechanism_create(
    plugin: AuthorizationPluginRef,
    engine: AuthorizationEngineRef,
    mechanism_id: AuthorizationMechanismId,
    out_mechanism: *mut AuthorizationMechanismRef,
) -> OsStatus {
    guard(|| {
        if plugin.is_null() || out_mechanism.is_null() {
            return ERR_AUTHORIZATION_INTERNAL;
        }
        // SAFETY: `plugin` is the live Box from `AuthorizationPluginCreate` (the engine
        // destroys the plugin only after its mechanisms); read-only here.
        let callbacks = unsafe { &*plugin.cast::<Plugin>() }.callbacks;
        let capture = !mechanism_id.is_null()
            // SAFETY: a non-null mechanism id is a NUL-terminated string the engine owns for
            // the duration of this call.
            && unsafe { CStr::from_ptr(mechanism_id) }.to_bytes()
                == crate::CAPTURE_MECHANISM.as_bytes();
        let mechanism = Box::into_raw(Box::new(Mechanism {
            engine,
            callbacks,
            capture,
        }));
        // SAFETY: `out_mechanism` is non-null and writable; the Box is taken back once, by
        // `mechanism_destroy`.
        unsafe { out_mechanism.write(mechanism.cast::<c_void>()) };
        ERR_AUTHORIZATION_SUCCESS
    })
}

/// `MechanismInvoke`: capture (if this is `capture`), then allow — whatever happened.
unsafe extern "C" fn mechanism_invoke(mechanism: AuthorizationMechanismRef) -> OsStatus {
    guard(|| {
        if mechanism.is_null() {
            return ERR_AUTHORIZATION_INTERNAL;
        }
        // SAFETY: the live Box from `mechanism_create`; the engine does not destroy a
        // mechanism while invoking it.
        let m = unsafe { &*mechanism.cast::<Mechanism>() };
        let mut engine = CallbackEngine {
            engine: m.engine,
            callbacks: m.callbacks,
        };
        if m.capture {
            let report = capture::invoke(&mut engine, Path::new(SOCKET));
            log(report.severity(), &report.to_string());
        } else if let Err(e) = engine.set_result_allow() {
            log(4, &format!("unknown mechanism: could not allow: {e}"));
        }
        ERR_AUTHORIZATION_SUCCESS
    })
}

/// `MechanismDeactivate`: answered at once with `DidDeactivate` (invoke never outlives its
/// call, so there is nothing to stop).
unsafe extern "C" fn mechanism_deactivate(mechanism: AuthorizationMechanismRef) -> OsStatus {
    guard(|| {
        if mechanism.is_null() {
            return ERR_AUTHORIZATION_INTERNAL;
        }
        // SAFETY: as in `mechanism_invoke`.
        let m = unsafe { &*mechanism.cast::<Mechanism>() };
        match m.callbacks.did_deactivate {
            // SAFETY: the engine's own DidDeactivate, with the engine handle it gave this
            // mechanism.
            Some(did_deactivate) => unsafe { did_deactivate(m.engine) },
            None => ERR_AUTHORIZATION_INTERNAL,
        }
    })
}

/// `MechanismDestroy`.
unsafe extern "C" fn mechanism_destroy(mechanism: AuthorizationMechanismRef) -> OsStatus {
    guard(|| {
        if !mechanism.is_null() {
            // SAFETY: the Box `mechanism_create` leaked; the engine destroys a mechanism once.
            drop(unsafe { Box::from_raw(mechanism.cast::<Mechanism>()) });
        }
        ERR_AUTHORIZATION_SUCCESS
    })
}

/// [`Engine`] over the engine's callbacks, for one invocation.
#[derive(Debug)]
pub struct CallbackEngine {
    engine: AuthorizationEngineRef,
    callbacks: Callbacks,
}

impl Engine for CallbackEngine {
    fn context_value(&self, key: ContextKey) -> Result<Option<Zeroizing<Vec<u8>>>, EngineError> {
        let get = self
            .callbacks
            .get_context_value
            .ok_or(EngineError::MissingCallback("GetContextValue"))?;
        let mut flags: AuthorizationContextFlags = 0;
        let mut value: *const AuthorizationValue = ptr::null();
        // SAFETY: the engine's GetContextValue with the handle it gave this mechanism (valid
        // during the invocation), a static NUL-terminated key, and two live out-pointers.
        let status = unsafe { get(self.engine, key.c_name().as_ptr(), &mut flags, &mut value) };
        if status != ERR_AUTHORIZATION_SUCCESS {
            return Err(EngineError::Status {
                callback: "GetContextValue",
                status,
            });
        }
        if value.is_null() {
            return Ok(None);
        }
        // SAFETY: a non-null value the engine returned; it stays the engine's and valid while
        // the context is not changed, which nothing does during this call. Fields are copied.
        let (length, data) = unsafe { ((*value).length, (*value).data) };
        copy_value(length, data.cast_const())
    }

    fn set_result_allow(&mut self) -> Result<(), EngineError> {
        let set = self
            .callbacks
            .set_result
            .ok_or(EngineError::MissingCallback("SetResult"))?;
        // SAFETY: the engine's SetResult with the handle it gave this mechanism.
        let status = unsafe { set(self.engine, K_AUTHORIZATION_RESULT_ALLOW) };
        if status == ERR_AUTHORIZATION_SUCCESS {
            Ok(())
        } else {
            Err(EngineError::Status {
                callback: "SetResult",
                status,
            })
        }
    }
}

/// Copy an engine-owned value into a buffer wiped on drop.
fn copy_value(
    length: usize,
    data: *const c_void,
) -> Result<Option<Zeroizing<Vec<u8>>>, EngineError> {
    if length > MAX_VALUE_LEN {
        return Err(EngineError::TooLong(length));
    }
    let mut out = Zeroizing::new(Vec::with_capacity(length));
    if length == 0 {
        return Ok(Some(out));
    }
    if data.is_null() {
        return Err(EngineError::NullData(length));
    }
    // SAFETY: `data` is non-null and, per AuthorizationValue's contract, points at `length`
    // readable bytes the engine owns for the duration of this call.
    out.extend_from_slice(unsafe { std::slice::from_raw_parts(data.cast::<u8>(), length) });
    Ok(Some(out))
}

#[cfg(test)]
mod tests;
