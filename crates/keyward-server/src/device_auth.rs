//! Who a device request is from: its Ed25519 signature over method, path, timestamp, nonce and
//! body by an enrolled device's key, within [`MAX_SKEW_SECS`] of this server's clock; and the
//! device API's error answers. Shared by enrollment and escrow (`api.rs`) and check-in
//! (`checkin.rs`); the nonce is recorded by the writer with the request's write, or by
//! [`refuse`] when the request has none.

use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine;
use ed25519_dalek::Signature;
use keyward_core::escrow::request_message;

use crate::app_state::AppState;
use crate::writer::{Nonce, Outcome, Unit};

/// How far a request's timestamp may be from the server's clock.
pub const MAX_SKEW_SECS: u64 = 300;

/// An error answer: a status and a message, never a secret.
pub struct ApiError(pub StatusCode, pub String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(serde_json::json!({ "error": self.1 }))).into_response()
    }
}

pub(crate) fn bad(msg: &str) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, msg.into())
}

pub(crate) fn unauthorized(msg: &str) -> ApiError {
    ApiError(StatusCode::UNAUTHORIZED, msg.into())
}

pub(crate) fn internal(e: impl std::fmt::Display) -> ApiError {
    crate::log::error("internal error", &[("error", e.to_string().into())]);
    ApiError(StatusCode::INTERNAL_SERVER_ERROR, "internal error".into())
}

pub(crate) fn token_ok(s: &str, min: usize) -> bool {
    (min..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> Result<&'a str, ApiError> {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| unauthorized("unsigned request"))
}

/// Check a device request's signature and time (not its nonce: that is recorded with the
/// request's write, or by [`refuse`] if it has none). The nonce, for the writer.
pub(crate) async fn verify(
    s: &AppState,
    device: &str,
    method: &str,
    path: &str,
    h: &HeaderMap,
    body: &[u8],
) -> Result<Nonce, ApiError> {
    let ts: u64 = header(h, "x-keyward-timestamp")?
        .parse()
        .map_err(|_| unauthorized("bad timestamp"))?;
    let nonce = header(h, "x-keyward-nonce")?;
    if !token_ok(nonce, 16) {
        return Err(unauthorized("bad nonce"));
    }
    let sig = base64::engine::general_purpose::STANDARD
        .decode(header(h, "x-keyward-signature")?)
        .ok()
        .and_then(|b| <[u8; 64]>::try_from(b).ok())
        .ok_or_else(|| unauthorized("bad signature"))?;
    let key = s
        .device_keys
        .get(&s.store, device)
        .await
        .map_err(internal)?
        .ok_or_else(|| unauthorized("unknown device"))?;
    let msg = request_message(method, path, ts, nonce, body);
    key.verify_strict(&msg, &Signature::from_bytes(&sig))
        .map_err(|_| unauthorized("bad signature"))?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    if now.abs_diff(ts) > MAX_SKEW_SECS {
        return Err(unauthorized("stale request"));
    }
    Ok(Nonce {
        device: device.to_owned(),
        value: nonce.to_owned(),
        ts: i64::try_from(ts).unwrap_or(i64::MAX),
    })
}

/// A verified request refused for its content: its nonce is still spent, and a replayed one
/// is refused as a replay first, as if the nonce had been checked before the body.
pub(crate) async fn refuse(s: &AppState, nonce: Nonce, why: ApiError) -> ApiError {
    match s.writer.submit(Unit::Nonce(nonce)).await {
        Ok(Outcome::NonceFresh(true)) => why,
        Ok(Outcome::NonceFresh(false)) => unauthorized("replayed request"),
        Ok(Outcome::Revoked) => revoked(),
        Ok(other) => internal(format!("nonce answered {other:?}")),
        Err(e) => internal(e),
    }
}

/// The answer to a write whose nonce was replayed.
pub(crate) fn replayed() -> ApiError {
    unauthorized("replayed request")
}

/// The answer to every request of a revoked device.
pub(crate) fn revoked() -> ApiError {
    unauthorized("device revoked")
}
