//! Security.framework's authorization plug-in ABI, written by hand from Apple's published
//! header `AuthorizationPlugin.h` (Security project, `OSX/libsecurity_authorization/lib/`,
//! "Copyright (c) 2001-2002,2004,2011-2012,2014 Apple Inc.", APSL 2.0; the same declarations
//! ship in the macOS SDK at `Security.framework/Headers/AuthorizationPlugin.h`). Only the
//! layout is taken from it; no code is copied. Field order is the header's; names are Rust's.
//!
//! Why by hand and not bindgen or a crate: the ABI is two structs of function pointers and a
//! handful of integer typedefs, frozen since 2001 apart from fields appended at the end of
//! `AuthorizationCallbacks`; bindgen would need the macOS SDK (and libclang) on every Linux
//! build to produce these few lines, and no maintained crate wraps this API.

use std::ffi::{c_char, c_void};

/// `OSStatus` (`MacTypes.h`: `SInt32`).
pub type OsStatus = i32;
/// `errAuthorizationSuccess` (`Authorization.h`).
pub const ERR_AUTHORIZATION_SUCCESS: OsStatus = 0;
/// `errAuthorizationInternal` (`Authorization.h`): "an unrecognized internal error".
pub const ERR_AUTHORIZATION_INTERNAL: OsStatus = -60008;

/// `AuthorizationString` (`Authorization.h`): a NUL-terminated C string.
pub type AuthorizationString = *const c_char;

/// `AuthorizationValue`: `{ size_t length; void *data; }`. The engine owns `data` for values it
/// returns ("AuthorizationValue does not own data").
#[repr(C)]
#[derive(Debug)]
pub struct AuthorizationValue {
    /// Bytes at `data`.
    pub length: usize,
    /// The bytes.
    pub data: *mut c_void,
}

/// `AuthorizationValueVector`: `{ UInt32 count; AuthorizationValue *values; }` (the mechanism's
/// arguments).
#[repr(C)]
#[derive(Debug)]
pub struct AuthorizationValueVector {
    /// Number of values.
    pub count: u32,
    /// The values.
    pub values: *mut AuthorizationValue,
}

/// `AuthorizationContextFlags` (`UInt32` options: extractable 1, volatile 2, sticky 4).
pub type AuthorizationContextFlags = u32;

/// `AuthorizationMechanismId`: the mechanism part of `plugin:mechanism,privileged`.
pub type AuthorizationMechanismId = AuthorizationString;
/// `AuthorizationPluginRef`: the plugin's own handle, returned by `AuthorizationPluginCreate`.
pub type AuthorizationPluginRef = *mut c_void;
/// `AuthorizationMechanismRef`: a mechanism instance's own handle.
pub type AuthorizationMechanismRef = *mut c_void;
/// `AuthorizationSessionId`.
pub type AuthorizationSessionId = *mut c_void;

/// `struct __OpaqueAuthorizationEngine`: only ever behind a pointer.
#[repr(C)]
#[derive(Debug)]
pub struct OpaqueAuthorizationEngine {
    _private: [u8; 0],
}
/// `AuthorizationEngineRef`: the engine's handle for one mechanism instance.
pub type AuthorizationEngineRef = *mut OpaqueAuthorizationEngine;

/// `AuthorizationResult` (`UInt32`).
pub type AuthorizationResult = u32;
/// `kAuthorizationResultAllow`: the first enumerator.
pub const K_AUTHORIZATION_RESULT_ALLOW: AuthorizationResult = 0;

/// `kAuthorizationPluginInterfaceVersion`.
pub const K_AUTHORIZATION_PLUGIN_INTERFACE_VERSION: u32 = 0;

type EngineFn = unsafe extern "C" fn(AuthorizationEngineRef) -> OsStatus;
type GetValueFn = unsafe extern "C" fn(
    AuthorizationEngineRef,
    AuthorizationString,
    *mut *const AuthorizationValue,
) -> OsStatus;
type SetValueFn = unsafe extern "C" fn(
    AuthorizationEngineRef,
    AuthorizationString,
    *const AuthorizationValue,
) -> OsStatus;

/// `AuthorizationCallbacks`: the engine's functions, in the header's order. The published
/// header (`kAuthorizationCallbacksVersion` 1) ends with `GetImmutableHintValue`; later SDKs
/// append more (`GetLAContext`, `GetTokenIdentities`, `GetTKTokenWatcher`, `RemoveHintValue`,
/// `RemoveContextValue`), which this plugin neither declares nor needs. The plugin reads only
/// `SetResult`, `DidDeactivate` and `GetContextValue`, which every version has had since 0,
/// field by field through the raw pointer: it never makes a reference to the whole struct, so
/// an engine whose struct is shorter or longer than this declaration is read correctly.
#[repr(C)]
#[derive(Debug)]
pub struct AuthorizationCallbacks {
    /// Engine callback version.
    pub version: u32,
    /// `SetResult(engine, result)`.
    pub set_result:
        Option<unsafe extern "C" fn(AuthorizationEngineRef, AuthorizationResult) -> OsStatus>,
    /// `RequestInterrupt(engine)`.
    pub request_interrupt: Option<EngineFn>,
    /// `DidDeactivate(engine)`: the answer to `MechanismDeactivate`.
    pub did_deactivate: Option<EngineFn>,
    /// `GetContextValue(engine, key, outFlags, outValue)`; the value stays the engine's.
    pub get_context_value: Option<
        unsafe extern "C" fn(
            AuthorizationEngineRef,
            AuthorizationString,
            *mut AuthorizationContextFlags,
            *mut *const AuthorizationValue,
        ) -> OsStatus,
    >,
    /// `SetContextValue(engine, key, flags, value)`.
    pub set_context_value: Option<
        unsafe extern "C" fn(
            AuthorizationEngineRef,
            AuthorizationString,
            AuthorizationContextFlags,
            *const AuthorizationValue,
        ) -> OsStatus,
    >,
    /// `GetHintValue(engine, key, outValue)`.
    pub get_hint_value: Option<GetValueFn>,
    /// `SetHintValue(engine, key, value)`.
    pub set_hint_value: Option<SetValueFn>,
    /// `GetArguments(engine, outArguments)`.
    pub get_arguments: Option<
        unsafe extern "C" fn(
            AuthorizationEngineRef,
            *mut *const AuthorizationValueVector,
        ) -> OsStatus,
    >,
    /// `GetSessionId(engine, outSessionId)`.
    pub get_session_id: Option<
        unsafe extern "C" fn(AuthorizationEngineRef, *mut AuthorizationSessionId) -> OsStatus,
    >,
    /// `GetImmutableHintValue(engine, key, outValue)`.
    pub get_immutable_hint_value: Option<GetValueFn>,
}

/// `AuthorizationPluginInterface`: the plugin's functions, in the header's order.
#[repr(C)]
#[derive(Debug)]
pub struct AuthorizationPluginInterface {
    /// `kAuthorizationPluginInterfaceVersion`.
    pub version: u32,
    /// `PluginDestroy(plugin)`.
    pub plugin_destroy: Option<unsafe extern "C" fn(AuthorizationPluginRef) -> OsStatus>,
    /// `MechanismCreate(plugin, engine, mechanismId, outMechanism)`.
    pub mechanism_create: Option<
        unsafe extern "C" fn(
            AuthorizationPluginRef,
            AuthorizationEngineRef,
            AuthorizationMechanismId,
            *mut AuthorizationMechanismRef,
        ) -> OsStatus,
    >,
    /// `MechanismInvoke(mechanism)`: must call `SetResult` during or after.
    pub mechanism_invoke: Option<unsafe extern "C" fn(AuthorizationMechanismRef) -> OsStatus>,
    /// `MechanismDeactivate(mechanism)`: must answer with `DidDeactivate`.
    pub mechanism_deactivate: Option<unsafe extern "C" fn(AuthorizationMechanismRef) -> OsStatus>,
    /// `MechanismDestroy(mechanism)`.
    pub mechanism_destroy: Option<unsafe extern "C" fn(AuthorizationMechanismRef) -> OsStatus>,
}
