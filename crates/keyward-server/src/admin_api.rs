//! The JSON admin API for automation, under `/v1/admin/`, authenticated by an API token
//! (`Authorization: Bearer TOKEN`, `api_tokens.rs`): no or an unknown token is 401, a token
//! whose role lacks the right is 403. Devices and the audit trail for every role; the
//! two-person reveal (`reveals.rs`) for the roles it allows. The audit names a token's caller
//! `api:NAME`. Described in `openapi.json`.

use std::sync::Arc;

use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use crate::app_state::AppState;
use crate::reveal_flow::{Refusal, Request};
use crate::reveals::{self, Actor, FlowError};
use crate::roles::Right;

/// Devices in one answer at most.
/// The most devices one `GET /v1/admin/devices` page holds (and the default page).
const MAX_DEVICES: i64 = 1000;
/// Audit records in one answer at most (and by default).
const MAX_AUDIT: i64 = 1_000;

/// The admin API's routes (the state comes from the API router).
pub fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/admin/devices", get(devices))
        .route("/v1/admin/audit", get(audit))
        .route("/v1/admin/reveal-requests", post(create_request))
        .route("/v1/admin/reveal-requests/{id}/approve", post(approve))
        .route("/v1/admin/reveal-requests/{id}/deny", post(deny))
        .route("/v1/admin/reveal-requests/{id}/reveal", post(reveal))
}

/// A refusal or failure: a status and `{"error": MESSAGE}`.
#[derive(Debug)]
#[non_exhaustive]
pub enum AdminApiError {
    /// No token, or not a live one.
    Unauthenticated,
    /// The token's role lacks the right, or the request belongs to someone else.
    Forbidden(String),
    /// No such thing.
    NotFound(String),
    /// The request's state forbids the step (decided, denied, used, expired).
    Conflict(String),
    /// The body or a field is wrong.
    BadRequest(String),
    /// Something broke; the message is for the log.
    Internal(String),
}

impl IntoResponse for AdminApiError {
    fn into_response(self) -> Response {
        let (status, message) = match self {
            AdminApiError::Unauthenticated => {
                let body = Json(serde_json::json!({
                    "error": "an API token is required: Authorization: Bearer TOKEN"
                }));
                return (
                    StatusCode::UNAUTHORIZED,
                    [(WWW_AUTHENTICATE, "Bearer")],
                    body,
                )
                    .into_response();
            }
            AdminApiError::Forbidden(m) => (StatusCode::FORBIDDEN, m),
            AdminApiError::NotFound(m) => (StatusCode::NOT_FOUND, m),
            AdminApiError::Conflict(m) => (StatusCode::CONFLICT, m),
            AdminApiError::BadRequest(m) => (StatusCode::BAD_REQUEST, m),
            AdminApiError::Internal(e) => {
                crate::log::error("admin API", &[("error", e.into())]);
                (StatusCode::INTERNAL_SERVER_ERROR, "internal error".into())
            }
        };
        (status, Json(serde_json::json!({ "error": message }))).into_response()
    }
}

impl From<FlowError> for AdminApiError {
    fn from(e: FlowError) -> Self {
        let message = e.to_string();
        match e {
            FlowError::Refused(
                Refusal::RoleLacks(_) | Refusal::OwnRequest | Refusal::NotRequester,
            ) => AdminApiError::Forbidden(message),
            FlowError::Refused(_) => AdminApiError::Conflict(message),
            FlowError::BadInput(_) => AdminApiError::BadRequest(message),
            FlowError::NoRequest | FlowError::NoDevice | FlowError::NoEscrow => {
                AdminApiError::NotFound(message)
            }
            _ => AdminApiError::Internal(message),
        }
    }
}

impl From<crate::store::StoreError> for AdminApiError {
    fn from(e: crate::store::StoreError) -> Self {
        AdminApiError::Internal(e.to_string())
    }
}

/// The caller, from its bearer token.
#[derive(Debug, Clone)]
pub struct Caller(Actor);

impl Caller {
    fn require(&self, right: Right) -> Result<(), AdminApiError> {
        if self.0.role.may(right) {
            Ok(())
        } else {
            Err(AdminApiError::Forbidden(format!(
                "this token's role ({}) may not do this",
                self.0.role
            )))
        }
    }
}

impl FromRequestParts<Arc<AppState>> for Caller {
    type Rejection = AdminApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let token = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim())
            .ok_or(AdminApiError::Unauthenticated)?;
        let holder = crate::api_tokens::holder(state.store.pool(), token)
            .await?
            .ok_or(AdminApiError::Unauthenticated)?;
        Ok(Caller(Actor {
            who: format!("api:{}", holder.name),
            role: holder.role,
        }))
    }
}

#[derive(Serialize)]
struct DeviceVolume {
    volume: String,
    recovery: serde_json::Value,
    escrow_id: Option<String>,
}

#[derive(Serialize)]
struct DeviceEntry {
    id: String,
    enrolled: String,
    last_checkin: Option<String>,
    revoked: bool,
    volumes: Vec<DeviceVolume>,
}

#[derive(Deserialize)]
struct DevicesQuery {
    limit: Option<i64>,
    after: Option<String>,
}

/// `GET /v1/admin/devices[?limit=N][&after=ID]`: devices in id order, a page at a time (at most
/// [`MAX_DEVICES`]), each with its last check-in and each volume's escrow state; `next` is the
/// `after` of the following page, null on the last one. Paging by id, not by offset, so a
/// device enrolled while a client walks the fleet shifts nothing.
async fn devices(
    State(s): State<Arc<AppState>>,
    caller: Caller,
    Query(query): Query<DevicesQuery>,
) -> Result<Json<serde_json::Value>, AdminApiError> {
    caller.require(Right::View)?;
    let limit = query.limit.unwrap_or(MAX_DEVICES).clamp(1, MAX_DEVICES);
    let after = query.after.unwrap_or_default();
    let devices = s.store.devices_after(&after, limit).await?;
    let next = (i64::try_from(devices.len()).unwrap_or(i64::MAX) == limit)
        .then(|| devices.last().map(|d| d.id.clone()))
        .flatten();
    let entries: Vec<DeviceEntry> = devices
        .iter()
        .map(|d| {
            let volumes = d
                .report()
                .map(|(_, report)| {
                    report
                        .volumes
                        .into_iter()
                        .map(|v| DeviceVolume {
                            volume: v.volume.as_str().to_owned(),
                            recovery: serde_json::to_value(v.recovery)
                                .unwrap_or(serde_json::Value::Null),
                            escrow_id: v.escrow_id,
                        })
                        .collect()
                })
                .unwrap_or_default();
            DeviceEntry {
                id: d.id.clone(),
                enrolled: d.created.clone(),
                last_checkin: d.checkin.as_ref().map(|(at, _)| at.clone()),
                revoked: d.revoked.is_some(),
                volumes,
            }
        })
        .collect();
    Ok(Json(
        serde_json::json!({ "devices": entries, "next": next }),
    ))
}

#[derive(Deserialize)]
struct AuditQuery {
    limit: Option<i64>,
}

/// `GET /v1/admin/audit[?limit=N]`: the newest records, oldest first.
async fn audit(
    State(s): State<Arc<AppState>>,
    caller: Caller,
    Query(query): Query<AuditQuery>,
) -> Result<Json<serde_json::Value>, AdminApiError> {
    caller.require(Right::View)?;
    let limit = query.limit.unwrap_or(MAX_AUDIT).clamp(1, MAX_AUDIT);
    let records: Vec<serde_json::Value> = s
        .store
        .audit_trail(limit)
        .await?
        .into_iter()
        .map(|r| {
            serde_json::json!({ "at": r.at, "who": r.who, "action": r.action,
                "device": r.device, "volume": r.volume, "reason": r.reason })
        })
        .collect();
    Ok(Json(serde_json::json!({ "records": records })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewRequest {
    device: String,
    volume: String,
    reason: String,
}

fn request_json(r: &Request) -> serde_json::Value {
    serde_json::json!({ "id": r.id, "state": r.state.as_str(), "device": r.device,
        "volume": r.volume, "expires": r.expires })
}

/// `POST /v1/admin/reveal-requests` `{"device", "volume", "reason"}` → `{"id", ...}`.
async fn create_request(
    State(s): State<Arc<AppState>>,
    caller: Caller,
    body: axum::body::Bytes,
) -> Result<Json<serde_json::Value>, AdminApiError> {
    caller.require(Right::RequestReveal)?;
    let new: NewRequest = serde_json::from_slice(&body).map_err(|_| {
        AdminApiError::BadRequest(
            "the body must be {\"device\": ID, \"volume\": NAME, \"reason\": TEXT}".into(),
        )
    })?;
    let req = reveals::request(&s, &caller.0, &new.device, &new.volume, &new.reason).await?;
    Ok(Json(request_json(&req)))
}

/// `POST /v1/admin/reveal-requests/{id}/approve`.
async fn approve(
    State(s): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, AdminApiError> {
    caller.require(Right::Decide)?;
    let req = reveals::decide(&s, &caller.0, &id, true).await?;
    Ok(Json(request_json(&req)))
}

/// `POST /v1/admin/reveal-requests/{id}/deny`.
async fn deny(
    State(s): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, AdminApiError> {
    caller.require(Right::Decide)?;
    let req = reveals::decide(&s, &caller.0, &id, false).await?;
    Ok(Json(request_json(&req)))
}

/// `POST /v1/admin/reveal-requests/{id}/reveal` → `{"recovery_key", "escrow_id"}`, once.
async fn reveal(
    State(s): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, AdminApiError> {
    caller.require(Right::RequestReveal)?;
    let (_, revealed) = reveals::reveal(&s, &caller.0, &id).await?;
    let key = zeroize::Zeroizing::new(String::from_utf8_lossy(&revealed.key).into_owned());
    let body = serde_json::json!({ "recovery_key": key.as_str(), "escrow_id": revealed.escrow_id });
    Ok((
        [(axum::http::header::CACHE_CONTROL, "no-store")],
        Json(body),
    )
        .into_response())
}
