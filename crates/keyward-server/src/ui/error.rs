//! The UI's refusals and failures, each with its status and an HTML page that says what to do.
//! Internal errors are logged and shown as a bare "internal error": database messages stay in
//! the server's log.

use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use maud::html;

use super::layout;
use crate::store::StoreError;

/// Why a UI request was not served.
#[derive(Debug)]
#[non_exhaustive]
pub enum UiError {
    /// No session (a page was asked for): to the login page.
    LoginRequired,
    /// A state-changing request without a session, a form token or this server's origin.
    Forbidden(&'static str),
    /// The form was filled in wrongly; the message says how.
    BadRequest(String),
    /// The person's role, or whose request it is, forbids the step; the message says why.
    NotAllowed(String),
    /// The request's state forbids the step (decided, denied, used, expired).
    Conflict(String),
    /// No such device.
    NotFound(&'static str),
    /// Too many password hashes running.
    Busy,
    /// Something broke; the message is for the log.
    Internal(String),
}

impl From<StoreError> for UiError {
    fn from(e: StoreError) -> Self {
        UiError::Internal(e.to_string())
    }
}

impl From<crate::reveals::FlowError> for UiError {
    fn from(e: crate::reveals::FlowError) -> Self {
        use crate::reveal_flow::Refusal;
        use crate::reveals::FlowError;
        let message = e.to_string();
        match e {
            FlowError::Refused(
                Refusal::RoleLacks(_) | Refusal::OwnRequest | Refusal::NotRequester,
            ) => UiError::NotAllowed(message),
            FlowError::Refused(_) => UiError::Conflict(message),
            FlowError::BadInput(_) | FlowError::NoEscrow => UiError::BadRequest(message),
            FlowError::NoRequest => UiError::NotFound("no reveal request has that id"),
            FlowError::NoDevice => UiError::NotFound("no device has that id"),
            _ => UiError::Internal(message),
        }
    }
}

impl IntoResponse for UiError {
    fn into_response(self) -> Response {
        let (status, title, message) = match self {
            UiError::LoginRequired => return Redirect::to("/ui/login").into_response(),
            UiError::Forbidden(m) => (StatusCode::FORBIDDEN, "Refused", m.to_owned()),
            UiError::BadRequest(m) => (StatusCode::BAD_REQUEST, "Check the form", m),
            UiError::NotAllowed(m) => (StatusCode::FORBIDDEN, "Not allowed", m),
            UiError::Conflict(m) => (StatusCode::CONFLICT, "Not possible", m),
            UiError::NotFound(m) => (StatusCode::NOT_FOUND, "Not found", m.to_owned()),
            UiError::Busy => (
                StatusCode::SERVICE_UNAVAILABLE,
                "Busy",
                "too many logins at once; try again in a moment".to_owned(),
            ),
            UiError::Internal(e) => {
                crate::log::error("admin UI", &[("error", e.into())]);
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Internal error",
                    "internal error; the server's log has the details".to_owned(),
                )
            }
        };
        let body = html! {
            section.notice.bad {
                h1 { (title) }
                p { (message) }
                p { a href="/ui/devices" { "Back to the devices" } }
            }
        };
        (status, Html(layout::page(title, None, body).into_string())).into_response()
    }
}
