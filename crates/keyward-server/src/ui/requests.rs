//! The two-person reveal in the web UI: the help desk requests a key on a device's page (with a
//! reason) and follows it under "My requests", where an approved request has its one "Reveal"
//! button; approvers work the "Requests" queue — other people's pending requests, each with
//! Approve and Deny — beside the recently decided ones. Every form carries the session's form
//! token; every step is `crate::reveals`, which checks the role and the request's state and
//! audits it.

use std::sync::Arc;

use axum::extract::{Form, Path, State};
use axum::response::{Html, IntoResponse, Redirect, Response};
use maud::{html, Markup};
use serde::Deserialize;

use super::layout::{self, badge, device_href, when_unix};
use super::session::Admin;
use super::UiError;
use crate::app_state::AppState;
use crate::reveal_flow::{Request, State as ReqState};
use crate::reveal_requests::{self as db, Listing};
use crate::roles::Right;

/// Requests on one list.
const SHOWN: i64 = 200;

/// A form with only the form token.
#[derive(Deserialize)]
pub struct TokenForm {
    #[serde(default)]
    csrf: String,
}

/// The request form's fields.
#[derive(Deserialize)]
pub struct RequestForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    volume: String,
    #[serde(default)]
    reason: String,
}

fn state_badge(r: &Request) -> Markup {
    use super::health::Tone;
    let tone = match r.state {
        ReqState::Pending => Tone::Busy,
        ReqState::Approved => Tone::Good,
        ReqState::Denied | ReqState::Expired => Tone::Bad,
        _ => Tone::Quiet,
    };
    badge(r.state.as_str(), tone, r.state.as_str())
}

fn decided(r: &Request) -> Markup {
    html! {
        @if let Some(by) = &r.decided_by { code { (by) } }
        @else if r.state == ReqState::Approved { span.muted { "no approval required" } }
    }
}

/// `POST /ui/devices/{device}/request`: ask for a key, with a reason.
pub async fn create(
    State(s): State<Arc<AppState>>,
    admin: Admin,
    Path(device): Path<String>,
    Form(f): Form<RequestForm>,
) -> Result<Response, UiError> {
    admin.check_csrf(&f.csrf)?;
    admin.require(Right::RequestReveal)?;
    crate::reveals::request(&s, &admin.actor(), &device, &f.volume, &f.reason).await?;
    Ok(Redirect::to("/ui/requests/mine").into_response())
}

/// `POST /ui/requests/{id}/approve`.
pub async fn approve(
    State(s): State<Arc<AppState>>,
    admin: Admin,
    Path(id): Path<String>,
    Form(f): Form<TokenForm>,
) -> Result<Response, UiError> {
    decide(&s, &admin, &id, &f.csrf, true).await
}

/// `POST /ui/requests/{id}/deny`.
pub async fn deny(
    State(s): State<Arc<AppState>>,
    admin: Admin,
    Path(id): Path<String>,
    Form(f): Form<TokenForm>,
) -> Result<Response, UiError> {
    decide(&s, &admin, &id, &f.csrf, false).await
}

async fn decide(
    s: &AppState,
    admin: &Admin,
    id: &str,
    csrf: &str,
    approve: bool,
) -> Result<Response, UiError> {
    admin.check_csrf(csrf)?;
    admin.require(Right::Decide)?;
    crate::reveals::decide(s, &admin.actor(), id, approve).await?;
    Ok(Redirect::to("/ui/requests").into_response())
}

/// `POST /ui/requests/{id}/reveal`: the requester sees the approved key, once.
pub async fn reveal(
    State(s): State<Arc<AppState>>,
    admin: Admin,
    Path(id): Path<String>,
    Form(f): Form<TokenForm>,
) -> Result<Html<String>, UiError> {
    admin.check_csrf(&f.csrf)?;
    admin.require(Right::RequestReveal)?;
    let (req, revealed) = crate::reveals::reveal(&s, &admin.actor(), &id).await?;
    Ok(super::reveal::key_page(
        &admin,
        &req.device,
        &req.volume,
        &revealed,
        Some(&req.id),
    ))
}

fn table(rows: &[Request], now: u64, actions: impl Fn(&Request) -> Markup) -> Markup {
    html! {
        table.requests {
            thead { tr {
                th { "Requested" } th { "Request" } th { "By" } th { "Device" } th { "Volume" }
                th { "Reason" } th { "State" } th { "Decided by" } th { "" }
            } }
            tbody {
                @for r in rows {
                    tr data-request=(r.id) {
                        td.nowrap { (when_unix(r.created, now)) }
                        td { code.request-id { (r.id) } }
                        td { code { (r.requester) } }
                        td { a href=(device_href(&r.device)) { code { (r.device) } } }
                        td { code { (r.volume) } }
                        td.reason { (r.reason) }
                        td { (state_badge(r)) }
                        td { (decided(r)) }
                        td.actions { (actions(r)) }
                    }
                }
            }
        }
    }
}

fn post_button(admin: &Admin, action: &str, class: &str, label: &str) -> Markup {
    html! {
        form.inline method="post" action=(action) {
            input type="hidden" name="csrf" value=(admin.csrf);
            button class=(class) type="submit" { (label) }
        }
    }
}

/// `GET /ui/requests`: the approver's queue.
pub async fn queue(State(s): State<Arc<AppState>>, admin: Admin) -> Result<Html<String>, UiError> {
    admin.require(Right::Decide)?;
    let pool = s.store.pool();
    db::expire_due(pool, crate::clock::unix_now(), 100).await?;
    let me = admin.who();
    let pending = db::list(pool, Listing::PendingFor(&me), SHOWN).await?;
    let decided = db::list(pool, Listing::Decided, 50).await?;
    let now = crate::clock::unix_secs();
    let hours = s.reveal.approval_hours;
    let body = html! {
        div.heading { h1 { "Reveal requests" } }
        p.summary { "Requests for a recovery key wait here for a second person. An approval lets "
            "the requester see the key once, within " (hours) " hours. Your own requests are "
            "decided by someone else." }
        h2 { "Waiting for a decision" }
        @if pending.is_empty() {
            p.empty #queue-empty { "Nothing waiting." }
        } @else {
            (table(&pending, now, |r| {
                let base = format!("/ui/requests/{}", r.id);
                html! {
                    (post_button(&admin, &format!("{base}/approve"), "primary approve", "Approve"))
                    (post_button(&admin, &format!("{base}/deny"), "danger deny", "Deny"))
                }
            }))
        }
        h2 { "Recently decided" }
        @if decided.is_empty() {
            p.empty { "Nothing yet." }
        } @else {
            (table(&decided, now, |_| html! {}))
        }
    };
    Ok(Html(
        layout::page("Reveal requests", Some(&admin), body).into_string(),
    ))
}

/// `GET /ui/requests/mine`: the requester's own requests, with a Reveal button once approved.
pub async fn mine(State(s): State<Arc<AppState>>, admin: Admin) -> Result<Html<String>, UiError> {
    admin.require(Right::RequestReveal)?;
    let pool = s.store.pool();
    db::expire_due(pool, crate::clock::unix_now(), 100).await?;
    let me = admin.who();
    let rows = db::list(pool, Listing::MadeBy(&me), SHOWN).await?;
    let now = crate::clock::unix_secs();
    let body = html! {
        div.heading { h1 { "My requests" } }
        p.summary { "Request a key on a device's page. Once approved you may reveal it once, "
            "before the approval expires; denied, expired and used requests reveal nothing." }
        @if rows.is_empty() {
            p.empty { "You have made no requests." }
        } @else {
            (table(&rows, now, |r| html! {
                @if r.state == ReqState::Approved {
                    (post_button(&admin, &format!("/ui/requests/{}/reveal", r.id), "danger reveal", "Reveal key"))
                    div.muted { "until " (when_unix(r.expires, now)) }
                }
            }))
        }
    };
    Ok(Html(
        layout::page("My requests", Some(&admin), body).into_string(),
    ))
}
