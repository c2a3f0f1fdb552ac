//! The C glue against a fake engine with C-ABI callbacks (state in a thread-local, so tests run
//! in parallel): creation, both mechanism kinds, deactivation, odd values. The helper socket of
//! a real Mac is absent here, so a capture ends in "helper unavailable" — and still allows.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::ffi::{c_char, c_void, CStr};

use super::types::*;
use super::*;

#[derive(Default)]
struct FakeEngine {
    /// Context values; `None` data with a length is a malformed value.
    context: BTreeMap<Vec<u8>, (usize, Option<Vec<u8>>)>,
    results: Vec<u32>,
    deactivated: u32,
    /// Storage the engine hands out (kept alive for the call). Boxed: each value's address is
    /// handed to the plugin, so it must not move when the vector grows.
    #[allow(clippy::vec_box)]
    handed_out: Vec<Box<AuthorizationValue>>,
}

thread_local! {
    static ENGINE: RefCell<FakeEngine> = RefCell::new(FakeEngine::default());
}

unsafe extern "C" fn fake_set_result(_e: AuthorizationEngineRef, r: u32) -> OsStatus {
    ENGINE.with(|e| e.borrow_mut().results.push(r));
    0
}

unsafe extern "C" fn fake_did_deactivate(_e: AuthorizationEngineRef) -> OsStatus {
    ENGINE.with(|e| e.borrow_mut().deactivated += 1);
    0
}

unsafe extern "C" fn fake_get_context(
    _e: AuthorizationEngineRef,
    key: *const c_char,
    _flags: *mut AuthorizationContextFlags,
    out: *mut *const AuthorizationValue,
) -> OsStatus {
    // SAFETY: the plugin passes a static C string.
    let key = unsafe { CStr::from_ptr(key) }.to_bytes().to_vec();
    ENGINE.with(|e| {
        let mut e = e.borrow_mut();
        let Some((length, data)) = e.context.get(&key).cloned() else {
            return -60010; // errAuthorizationDenied-like: "not set"
        };
        let data = match data {
            Some(bytes) => Box::leak(bytes.into_boxed_slice())
                .as_mut_ptr()
                .cast::<c_void>(),
            None => ptr::null_mut(),
        };
        let value = Box::new(AuthorizationValue { length, data });
        // SAFETY: `out` is the plugin's live out-pointer.
        unsafe { out.write(&*value) };
        e.handed_out.push(value);
        0
    })
}

fn callbacks() -> AuthorizationCallbacks {
    AuthorizationCallbacks {
        version: 1,
        set_result: Some(fake_set_result),
        request_interrupt: None,
        did_deactivate: Some(fake_did_deactivate),
        get_context_value: Some(fake_get_context),
        set_context_value: None,
        get_hint_value: None,
        set_hint_value: None,
        get_arguments: None,
        get_session_id: None,
        get_immutable_hint_value: None,
    }
}

fn set_context(key: &str, value: &[u8]) {
    ENGINE.with(|e| {
        e.borrow_mut()
            .context
            .insert(key.as_bytes().to_vec(), (value.len(), Some(value.to_vec())))
    });
}

/// Create the plugin and one mechanism named `id`, invoke and deactivate it, destroy both.
/// Returns the invoke status and the results the engine saw.
fn run_mechanism(id: &CStr) -> (OsStatus, Vec<u32>, u32) {
    let table = callbacks();
    let mut plugin: AuthorizationPluginRef = ptr::null_mut();
    let mut interface: *const AuthorizationPluginInterface = ptr::null();
    // SAFETY: a live table and two live out-pointers, as the engine would pass.
    let rc = unsafe { AuthorizationPluginCreate(&table, &mut plugin, &mut interface) };
    assert_eq!(rc, 0);
    assert!(!interface.is_null());
    // SAFETY: the plugin returned its static interface.
    let interface = unsafe { &*interface };
    assert_eq!(interface.version, 0);
    let mut mechanism: AuthorizationMechanismRef = ptr::null_mut();
    let engine = 0x1000 as AuthorizationEngineRef;
    let create = interface.mechanism_create.expect("create");
    // SAFETY: as the engine calls it: the live plugin, a static id, a live out-pointer.
    let rc = unsafe { create(plugin, engine, id.as_ptr(), &mut mechanism) };
    assert_eq!(rc, 0);
    let invoke = interface.mechanism_invoke.expect("invoke");
    // SAFETY: the mechanism just created.
    let status = unsafe { invoke(mechanism) };
    let deactivate = interface.mechanism_deactivate.expect("deactivate");
    // SAFETY: likewise.
    assert_eq!(unsafe { deactivate(mechanism) }, 0);
    // SAFETY: destroyed once each, mechanism first, as the engine does.
    unsafe {
        assert_eq!(interface.mechanism_destroy.expect("destroy")(mechanism), 0);
        assert_eq!(interface.plugin_destroy.expect("destroy")(plugin), 0);
    }
    let (results, deactivated) =
        ENGINE.with(|e| (e.borrow().results.clone(), e.borrow().deactivated));
    (status, results, deactivated)
}

#[test]
fn capture_with_no_helper_listening_still_allows_once() {
    set_context("username", b"alice\0");
    set_context("password", b"correct horse\0");
    let (status, results, deactivated) = run_mechanism(c"capture");
    assert_eq!(status, 0);
    assert_eq!(results, vec![K_AUTHORIZATION_RESULT_ALLOW]);
    assert_eq!(deactivated, 1);
}

#[test]
fn an_unknown_mechanism_name_only_allows() {
    let (status, results, _) = run_mechanism(c"something-else");
    assert_eq!(status, 0);
    assert_eq!(results, vec![K_AUTHORIZATION_RESULT_ALLOW]);
}

#[test]
fn absent_and_malformed_context_values_still_allow() {
    // No username at all; then a password whose data pointer is null.
    let (_, results, _) = run_mechanism(c"capture");
    assert_eq!(results, vec![K_AUTHORIZATION_RESULT_ALLOW]);
    set_context("username", b"alice");
    ENGINE.with(|e| {
        e.borrow_mut()
            .context
            .insert(b"password".to_vec(), (12, None))
    });
    let (_, results, _) = run_mechanism(c"capture");
    assert_eq!(results, vec![K_AUTHORIZATION_RESULT_ALLOW; 2]);
}

#[test]
fn the_adapter_copies_values_and_refuses_odd_ones() {
    let engine = CallbackEngine {
        engine: ptr::null_mut(),
        callbacks: Callbacks {
            set_result: Some(fake_set_result),
            did_deactivate: None,
            get_context_value: Some(fake_get_context),
        },
    };
    set_context("username", b"bob");
    let got = engine.context_value(ContextKey::Username).expect("ok");
    assert_eq!(got.as_deref().map(|v| &v[..]), Some(&b"bob"[..]));
    assert!(matches!(
        engine.context_value(ContextKey::Password),
        Err(EngineError::Status { .. })
    ));
    assert!(matches!(
        copy_value(MAX_VALUE_LEN + 1, ptr::null()),
        Err(EngineError::TooLong(_))
    ));
    assert!(matches!(
        copy_value(3, ptr::null()),
        Err(EngineError::NullData(3))
    ));
    assert_eq!(
        copy_value(0, ptr::null()).expect("empty").map(|v| v.len()),
        Some(0)
    );
}

#[test]
fn null_pointers_at_creation_are_refused_not_followed() {
    let mut plugin: AuthorizationPluginRef = ptr::null_mut();
    let mut interface: *const AuthorizationPluginInterface = ptr::null();
    // SAFETY: null callbacks are refused before anything is read.
    let rc = unsafe { AuthorizationPluginCreate(ptr::null(), &mut plugin, &mut interface) };
    assert_eq!(rc, ERR_AUTHORIZATION_INTERNAL);
    assert!(plugin.is_null());
}
