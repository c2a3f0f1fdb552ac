//! The audit log page: the newest records first — key retrievals from the CLI, the web and the
//! API, reveal requests and their approval, denial and expiry, sign-ins, failed and refused
//! sign-ins, sign-outs. Read-only; every role may see it.

use std::sync::Arc;

use axum::extract::State;
use axum::response::Html;
use maud::html;

use super::health::Tone;
use super::layout::{self, badge, device_href, when};
use super::session::Admin;
use super::UiError;
use crate::app_state::AppState;

/// Records on the page.
const SHOWN: i64 = 500;

fn tone(action: &str) -> Tone {
    match action {
        "key-show" | "reveal-request" => Tone::Busy,
        "reveal-approve" => Tone::Good,
        "ui-login-failed" | "ui-login-locked" | "reveal-deny" | "reveal-expire" => Tone::Bad,
        _ => Tone::Quiet,
    }
}

/// `GET /ui/audit`.
pub async fn page(State(s): State<Arc<AppState>>, admin: Admin) -> Result<Html<String>, UiError> {
    let mut records = s.store.audit_trail(SHOWN).await?;
    records.reverse();
    let now = crate::clock::unix_secs();
    let body = html! {
        div.heading { h1 { "Audit log" } }
        p.summary { "The newest " (records.len()) " records, newest first. "
            span.muted { "All of them: " code { "keyward-server audit" } } }
        @if records.is_empty() {
            p.empty { "Nothing recorded yet." }
        } @else {
            table.audit {
                thead { tr { th { "When" } th { "Who" } th { "Action" } th { "Device" } th { "Volume" } th { "Reason" } } }
                tbody {
                    @for r in &records {
                        tr {
                            td.nowrap { (when(&r.at, now)) }
                            td { code { (r.who) } }
                            td { (badge(&r.action, tone(&r.action), &r.action)) }
                            td { @if let Some(d) = &r.device { a href=(device_href(d)) { code { (d) } } } }
                            td { @if let Some(v) = &r.volume { code { (v) } } }
                            td.reason { @if let Some(why) = &r.reason { (why) } }
                        }
                    }
                }
            }
        }
    };
    Ok(Html(
        layout::page("Audit log", Some(&admin), body).into_string(),
    ))
}
