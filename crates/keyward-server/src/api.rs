//! The HTTP API: enrollment with a single-use token, and escrow of a recovery key's ciphertext
//! by an enrolled device, answered with a receipt signed by the server's Ed25519 key. Every
//! device request is signed by the device key, with a timestamp (±5 min) and a nonce the
//! database refuses to see twice with that timestamp (the signature covers both, so a replay
//! repeats both). Handlers check what they can in memory (signature, time, body) and hand the
//! writes to the writer (`writer.rs`), which records the nonce and the write in one
//! transaction.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use base64::Engine;
use ed25519_dalek::{Signer, VerifyingKey};
use keyward_core::enrollment::EnrollmentAnswer;
use keyward_core::escrow::Receipt;
use keyward_core::VolumeName;
use serde::Deserialize;

use crate::app_state::AppState;
use crate::device_auth::{
    bad, internal, refuse, replayed, revoked, token_ok, unauthorized, verify, ApiError,
};
use crate::tokens::token_hash;
use crate::writer::{NewEscrow, Outcome, Unit};

/// The OpenAPI document, served at `/v1/openapi.json`.
pub const OPENAPI: &str = include_str!("../openapi.json");

/// Enrollment, escrow and the OpenAPI document (check-in is `checkin.rs`'s).
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/enroll", post(enroll))
        .route("/v1/devices/{device}/escrow/{volume}", put(escrow))
        .route(
            "/v1/openapi.json",
            get(|| async { ([("content-type", "application/json")], OPENAPI) }),
        )
}

fn random_id(prefix: &str) -> Result<String, ApiError> {
    let mut b = [0u8; 12];
    getrandom::fill(&mut b).map_err(internal)?;
    Ok(format!("{prefix}-{}", keyward_core::hex::encode(&b)))
}

/// A new escrow id: the time in microseconds (fixed-width hex), then 64 random bits. Ids in
/// time order land at the end of the escrows' primary-key index, not on a random page each.
fn escrow_id() -> Result<String, ApiError> {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).map_err(internal)?;
    let micros = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros());
    Ok(format!(
        "esc-{micros:014x}{}",
        keyward_core::hex::encode(&b)
    ))
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
    let (volume, req, ciphertext) = match parse_escrow(&volume, &body, &s.identity.unwrapper) {
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
        Outcome::TooManyVolumes => {
            return Err(ApiError(
                StatusCode::CONFLICT,
                format!(
                    "this device already has escrows of {} volumes",
                    crate::writer::batch::MAX_VOLUMES_PER_DEVICE
                ),
            ))
        }
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
    identity: &dyn age::Identity,
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
    if keyward_core::hex::sha256(&ciphertext) != req.sha256 {
        return Err(bad("sha256 does not match the ciphertext"));
    }
    if let Some(why) = crate::age_check::refuse_reason(&ciphertext, identity) {
        return Err(bad(why));
    }
    Ok((volume, req, ciphertext))
}
