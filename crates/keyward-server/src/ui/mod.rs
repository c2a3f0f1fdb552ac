//! The admin web UI, served by `keyward-server serve` under `/ui/`: sign in, the devices and
//! their escrow health, a device's volumes and escrows, the two-person reveal (request, the
//! approvers' queue, "my requests", the one reveal; `requests.rs`) or, where approval is not
//! required, showing a recovery key at once (with a reason; audited; the device rotates it
//! after use), the audit log. Each role sees and may do only what `crate::roles` gives it. Server-rendered HTML (maud, which
//! escapes every value), no JavaScript, no external resources; one stylesheet served here.
//! Every UI response carries a strict Content-Security-Policy and is never cached.
//!
//! This module owns its tables (`db.rs`) and its policy (sessions, CSRF, lock-out); it reveals
//! keys only through `crate::keys::reveal`, never by decrypting itself.

mod accounts;
pub mod admin;
mod audit;
mod db;
mod devices;
mod error;
mod health;
mod layout;
mod login;
mod password;
mod refusal_fold;
mod requests;
mod reveal;
mod second_factor;
mod session;
mod sso;
mod sso_cookie;
mod throttle;
mod totp;

use std::sync::Arc;

use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS,
    X_FRAME_OPTIONS,
};
use axum::http::HeaderValue;
use axum::response::{Redirect, Response};
use axum::routing::{get, post};
use axum::Router;

pub use error::UiError;
pub use session::hash_token;

use crate::app_state::AppState;

/// The stylesheet and the icon, the UI's only static files.
const STYLE: &str = include_str!("style.css");
const ICON: &str = include_str!("favicon.svg");

/// No script, no frame, no plugin, nothing from elsewhere; forms post only here.
const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; \
                   frame-ancestors 'none'; base-uri 'none'";

/// `serve` options for the UI.
#[derive(clap::Args, Debug, Clone)]
pub struct ServeOptions {
    /// Show a device as stale when its last check-in is older than this (seconds; a few check-in intervals).
    #[arg(long, value_name = "SECS", default_value_t = 3 * 3600)]
    pub stale_after: u64,
}

impl ServeOptions {
    /// The settings these options make.
    pub fn settings(&self) -> crate::app_state::UiSettings {
        crate::app_state::UiSettings {
            stale_after_secs: self.stale_after,
        }
    }
}

/// The UI's routes, to be merged into the API router (which supplies the state).
pub fn router() -> Router<Arc<AppState>> {
    // The dummy hash for unknown names, made before the first login rather than during it.
    password::warm();
    Router::new()
        .route("/ui", get(|| async { Redirect::to("/ui/devices") }))
        .route("/ui/", get(|| async { Redirect::to("/ui/devices") }))
        .route(
            "/ui/style.css",
            get(|| asset(STYLE, "text/css; charset=utf-8")),
        )
        .route("/ui/favicon.svg", get(|| asset(ICON, "image/svg+xml")))
        .route("/ui/login", get(login::form).post(login::submit))
        .route("/ui/logout", post(login::logout))
        .route("/ui/sso", get(sso::start))
        .route("/ui/sso/callback", get(sso::callback))
        .route("/ui/devices", get(devices::list))
        .route("/ui/devices/{device}", get(devices::page))
        .route("/ui/devices/{device}/reveal", post(reveal::reveal))
        .route("/ui/devices/{device}/request", post(requests::create))
        .route("/ui/requests", get(requests::queue))
        .route("/ui/requests/mine", get(requests::mine))
        .route("/ui/requests/{id}/approve", post(requests::approve))
        .route("/ui/requests/{id}/deny", post(requests::deny))
        .route("/ui/requests/{id}/reveal", post(requests::reveal))
        .route("/ui/audit", get(audit::page))
        .route("/ui/accounts", get(accounts::page))
        .layer(axum::middleware::map_response(security_headers))
}

async fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut r = Response::new(body.into());
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("max-age=300"));
    r
}

/// The headers on every UI response. Pages are never cached: they show keys, names and the
/// audit trail.
async fn security_headers(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        "cross-origin-resource-policy",
        HeaderValue::from_static("same-origin"),
    );
    if !h.contains_key(CACHE_CONTROL) {
        h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    r
}
