//! The HTTP API: enrollment with a single-use token, and escrow of a recovery key's ciphertext
//! by an enrolled device, answered with a receipt signed by the server's Ed25519 key. Every
//! device request is signed by the device key, with a timestamp (±5 min) and a nonce the
//! database refuses to see twice with that timestamp (the signature covers both, so a replay
//! repeats both). Handlers check what they can in memory (signature, time, body) and hand the
//! writes to the writer (`writer.rs`), which records the nonce and the write in one
//! transaction.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use base64::Engine;
use ed25519_dalek::{Signature, Signer, VerifyingKey};
use keyward_core::enrollment::EnrollmentAnswer;
use keyward_core::escrow::{request_message, Receipt};
use keyward_core::VolumeName;
use serde::Deserialize;
use sha2::Digest;

use crate::identity::Identity;
use crate::store::Store;
use crate::writer::{NewEscrow, Nonce, Outcome, Unit};

/// Shared by the handlers.
pub struct AppState {
    /// The database.
    pub store: Store,
    /// Where the device API's writes go.
    pub writer: crate::writer::Writer,
    /// Enrolled devices' public keys.
    pub device_keys: crate::device_keys::DeviceKeys,
    /// The server identity.
    pub identity: Identity,
    /// This instance's request counters.
    pub counters: crate::metrics::Counters,
    /// The fleet gauges, refreshed in the background.
    pub gauges: crate::fleet_gauges::Gauges,
    /// The bearer token `/metrics` requires, if any.
    pub metrics_token: Option<crate::metrics::MetricsToken>,
    /// Log every request (otherwise only 5xx).
    pub log_requests: bool,
    /// The admin web UI's settings.
    pub ui: crate::ui::Settings,
    /// `[reveal]` of the config file: who may see a key, and how.
    pub reveal: crate::config::RevealConfig,
    /// `[oidc]` of the config file: single sign-on to the web UI, if set.
    pub sso: Option<Arc<crate::oidc::Sso>>,
    /// The `[notify]` webhook's sender, if one is configured (for `/metrics`).
    pub notifier: Option<Arc<crate::notify::Notifier>>,
}

/// How far a request's timestamp may be from the server's clock.
pub const MAX_SKEW_SECS: u64 = 300;

/// The OpenAPI document, served at `/v1/openapi.json`.
pub const OPENAPI: &str = include_str!("../openapi.json");

/// The router.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v1/enroll", post(enroll))
        .route("/v1/devices/{device}/escrow/{volume}", put(escrow))
        .route(
            "/v1/devices/{device}/checkin",
            post(crate::checkin::checkin),
        )
        .route(
            "/v1/openapi.json",
            get(|| async { ([("content-type", "application/json")], OPENAPI) }),
        )
        .route("/metrics", get(crate::metrics::metrics))
        .merge(crate::ui::router())
        .merge(crate::admin_api::router())
        .layer(axum::middleware::from_fn(crate::nul_guard::refuse_nul))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::metrics::track,
        ))
        .layer(DefaultBodyLimit::max(crate::nul_guard::MAX_BODY))
        .with_state(state)
}

/// An error answer: a status and a message, never a secret.
pub struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(serde_json::json!({ "error": self.1 }))).into_response()
    }
}

pub(crate) fn bad(msg: &str) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, msg.into())
}

fn unauthorized(msg: &str) -> ApiError {
    ApiError(StatusCode::UNAUTHORIZED, msg.into())
}

pub(crate) fn internal(e: impl std::fmt::Display) -> ApiError {
    crate::log::error("internal error", &[("error", e.to_string().into())]);
    ApiError(StatusCode::INTERNAL_SERVER_ERROR, "internal error".into())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn random_id(prefix: &str) -> Result<String, ApiError> {
    let mut b = [0u8; 12];
    getrandom::fill(&mut b).map_err(internal)?;
    Ok(format!("{prefix}-{}", hex(&b)))
}

/// A new escrow id: the time in microseconds (fixed-width hex), then 64 random bits. Ids in
/// time order land at the end of the escrows' primary-key index, not on a random page each.
fn escrow_id() -> Result<String, ApiError> {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).map_err(internal)?;
    let micros = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros());
    Ok(format!("esc-{micros:014x}{}", hex(&b)))
}

pub(crate) fn token_ok(s: &str, min: usize) -> bool {
    (min..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Hex SHA-256 of an enrollment token (only the digest is stored).
pub fn token_hash(token: &str) -> String {
    hex(&sha2::Sha256::digest(token.trim().as_bytes()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EnrollRequest {
    token: String,
    device_key: String,
}

/// Enroll a device key. The answer is signed over (device id, device key) with the server's
/// key, so a device enrolls only with the server its config pins (`keyward_core::enrollment`).
async fn enroll(
    State(s): State<Arc<AppState>>,
    body: Bytes,
) -> Result<Json<EnrollmentAnswer>, ApiError> {
    let req: EnrollRequest =
        serde_json::from_slice(&body).map_err(|_| bad("malformed enrollment request"))?;
    let key = base64::engine::general_purpose::STANDARD
        .decode(req.device_key.trim())
        .ok()
        .and_then(|k| <[u8; 32]>::try_from(k).ok())
        .and_then(|k| VerifyingKey::from_bytes(&k).ok())
        .ok_or_else(|| bad("device_key is not a base64 Ed25519 public key"))?;
    // Single use: the token is spent in the transaction that enrolls the device, if it has
    // neither expired nor been revoked.
    let device_id = random_id("dev")?;
    let key_b64 = base64::engine::general_purpose::STANDARD.encode(key.to_bytes());
    let enrolled = s
        .writer
        .submit(Unit::Enroll {
            token_hash: token_hash(&req.token),
            device: device_id.clone(),
            key_b64,
        })
        .await
        .map_err(internal)?;
    match enrolled {
        Outcome::Enrolled(Ok(())) => {}
        Outcome::Enrolled(Err(why)) => return Err(unauthorized(&why.to_string())),
        other => return Err(internal(format!("enrollment answered {other:?}"))),
    }
    s.device_keys.remember(&device_id, key);
    Ok(Json(EnrollmentAnswer::sign(
        &device_id,
        &key.to_bytes(),
        &s.identity.signing,
    )))
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EscrowRequest {
    rotation_id: String,
    ciphertext: String,
    sha256: String,
}

async fn escrow(
    State(s): State<Arc<AppState>>,
    Path((device, volume)): Path<(String, String)>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Receipt>, ApiError> {
    let nonce = verify(&s, &device, "PUT", uri.path(), &headers, &body).await?;
    let (volume, req, ciphertext) = match parse_escrow(&volume, &body, &s.identity.age) {
        Ok(parsed) => parsed,
        Err(why) => return Err(refuse(&s, nonce, why).await),
    };
    // Idempotent: a retried upload of the same rotation gets the same receipt. Two instances
    // racing on one rotation: one insert wins, the other reads the winner back.
    let written = s
        .writer
        .submit(Unit::Escrow(
            nonce,
            NewEscrow {
                id: escrow_id()?,
                volume: volume.as_str().to_owned(),
                rotation_id: req.rotation_id.clone(),
                sha256: req.sha256.clone(),
                ciphertext,
            },
        ))
        .await
        .map_err(internal)?;
    let escrow_id = match written {
        Outcome::Escrowed(Some((id, sha))) if sha == req.sha256 => id,
        Outcome::Escrowed(Some(_)) => {
            return Err(ApiError(
                StatusCode::CONFLICT,
                "this rotation was escrowed with another ciphertext".into(),
            ))
        }
        Outcome::Escrowed(None) => return Err(internal("escrow vanished after insert")),
        Outcome::Replayed => return Err(replayed()),
        Outcome::Revoked => return Err(revoked()),
        other => return Err(internal(format!("escrow answered {other:?}"))),
    };
    let msg = Receipt::message(&device, &volume, &req.rotation_id, &req.sha256, &escrow_id);
    let signature = s.identity.signing.sign(&msg).to_bytes().to_vec();
    Ok(Json(Receipt {
        device,
        volume,
        rotation_id: req.rotation_id,
        sha256: req.sha256,
        escrow_id,
        signature,
    }))
}

/// An escrow request's volume and body, checked: (volume, request, ciphertext).
fn parse_escrow(
    volume: &str,
    body: &[u8],
    identity: &age::x25519::Identity,
) -> Result<(VolumeName, EscrowRequest, Vec<u8>), ApiError> {
    let volume = VolumeName::parse(volume).map_err(|_| bad("bad volume name"))?;
    let req: EscrowRequest =
        serde_json::from_slice(body).map_err(|_| bad("malformed escrow request"))?;
    if !token_ok(&req.rotation_id, 1) {
        return Err(bad("bad rotation_id"));
    }
    let ciphertext = base64::engine::general_purpose::STANDARD
        .decode(&req.ciphertext)
        .map_err(|_| bad("ciphertext is not base64"))?;
    if hex(&sha2::Sha256::digest(&ciphertext)) != req.sha256 {
        return Err(bad("sha256 does not match the ciphertext"));
    }
    if let Some(why) = crate::age_check::refuse_reason(&ciphertext, identity) {
        return Err(bad(why));
    }
    Ok((volume, req, ciphertext))
}
