//! The whole HTTP surface in one router: the device API (`api.rs`, `checkin.rs`), the admin
//! API (`admin_api.rs`), the web UI (`ui/`) and `/metrics`, under the layers every request
//! passes (metrics, the NUL guard and body deadline, the body limit). The top of the server's module graph:
//! nothing below it names it.

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;

use crate::app_state::AppState;

/// The router; a request's body must arrive within `body_deadline`.
pub fn router(state: Arc<AppState>, body_deadline: std::time::Duration) -> Router {
    Router::new()
        .merge(crate::api::routes())
        .route(
            "/v1/devices/{device}/checkin",
            post(crate::checkin::checkin),
        )
        .route("/metrics", get(crate::metrics::http::metrics))
        .merge(crate::ui::router())
        .merge(crate::admin_api::router())
        .layer(axum::middleware::from_fn(
            move |req: axum::extract::Request, next: axum::middleware::Next| {
                crate::nul_guard::refuse_nul(req, next, body_deadline)
            },
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::metrics::http::track,
        ))
        .layer(DefaultBodyLimit::max(crate::nul_guard::MAX_BODY))
        .with_state(state)
}
