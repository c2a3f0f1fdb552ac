//! Showing a recovery key: the page that shows it once (never cached: the UI sends `no-store`)
//! beside what the device last said about it, and the single-person reveal — a POST with the
//! session's form token and a reason, allowed only with `[reveal] require_approval = false` and
//! to a role that may request reveals. (The two-person reveal's forms are `requests.rs`.) The
//! work — decrypt, audit, mark for rotation after use — is `crate::keys::reveal`, the same call
//! the CLI's `key show` makes.

use std::sync::Arc;

use axum::extract::{Form, Path, State};
use axum::response::Html;
use keyward_core::VolumeName;
use maud::{html, Markup};
use serde::Deserialize;

use super::layout::{self, device_href};
use super::session::Admin;
use super::UiError;
use crate::app_state::AppState;
use crate::keys::{Retrieval, Revealed, MAX_REASON};
use crate::roles::Right;

/// The reveal form's fields.
#[derive(Deserialize)]
pub struct RevealForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    volume: String,
    /// An escrow id, or empty for the latest.
    #[serde(default)]
    escrow: String,
    #[serde(default)]
    reason: String,
}

/// `POST /ui/devices/{device}/reveal`.
pub async fn reveal(
    State(s): State<Arc<AppState>>,
    admin: Admin,
    Path(device): Path<String>,
    Form(f): Form<RevealForm>,
) -> Result<Html<String>, UiError> {
    admin.check_csrf(&f.csrf)?;
    admin.require(Right::RequestReveal)?;
    if s.reveal.require_approval {
        return Err(UiError::Forbidden(
            "a key is revealed only through an approved request here: request it on the device's page",
        ));
    }
    let reason = f.reason.trim();
    if reason.is_empty() {
        return Err(UiError::BadRequest(
            "a reason is required: say why the key is needed (it goes in the audit log)".into(),
        ));
    }
    if reason.chars().count() > MAX_REASON {
        return Err(UiError::BadRequest(format!(
            "the reason is longer than {MAX_REASON} characters"
        )));
    }
    let volume = VolumeName::parse(&f.volume)
        .map_err(|_| UiError::BadRequest("that is not a volume name".into()))?;
    if s.store.device(&device).await?.is_none() {
        return Err(UiError::NotFound("no device has that id"));
    }
    let escrow = Some(f.escrow.trim()).filter(|e| !e.is_empty());
    let who = admin.who();
    let what = Retrieval {
        device: &device,
        volume: volume.as_str(),
        escrow,
        who: &who,
        reason,
        request: None,
    };
    let revealed = crate::keys::reveal(&s.store, &s.identity, what)
        .await
        .map_err(|e| UiError::BadRequest(format!("the key was not revealed: {e}")))?;
    Ok(key_page(&admin, &device, volume.as_str(), &revealed, None))
}

/// The page that shows a revealed key once; `request` names the reveal request it spent.
pub fn key_page(
    admin: &Admin,
    device: &str,
    volume: &str,
    revealed: &Revealed,
    request: Option<&str>,
) -> Html<String> {
    let key = String::from_utf8_lossy(&revealed.key);
    let back = device_href(device);
    let who = admin.who();
    let body: Markup = html! {
        p.crumbs { a href=(back) { "← Device " code { (device) } } }
        section.revealed {
            h1 { "Recovery key" }
            p { "Device " code { (device) } ", volume " code { (volume) } ", escrow "
                code.escrow-id #escrow-id { (revealed.escrow_id) }
                @if let Some(id) = request { ", request " code #request-id { (id) } } }
            // Two halves that each stay on one line: four groups a line, as typed. The text
            // (and so a copy) is the key exactly.
            output #recovery-key .key aria-label="recovery key" {
                @for half in halves(&key) { span.half { (half) } }
            }
            p.standing #standing { (revealed.standing) }
            div.notice.busy {
                p { strong { "This key is shown once." } " The page is not stored by the browser; "
                    "copy the key now. Type it at the disk's passphrase prompt." }
                p { "Recorded in the audit log as " code { (who) } " with your reason. "
                    "If this is the device's active key, the device replaces it at its next "
                    "check-in; after that it no longer opens the disk." }
            }
            p { a.button href=(back) { "Done" } }
        }
    };
    Html(layout::page("Recovery key", Some(admin), body).into_string())
}

/// The key in two pieces split after the middle dash (the whole key if it has none).
fn halves(key: &str) -> Vec<&str> {
    let dashes: Vec<usize> = key.match_indices('-').map(|(i, _)| i).collect();
    match dashes.get(dashes.len() / 2) {
        Some(&at) => vec![&key[..=at], &key[at + 1..]],
        None => vec![key],
    }
}

#[cfg(test)]
mod tests {
    use super::halves;

    #[test]
    fn a_key_splits_into_two_lines_of_four_groups() {
        let key = "aaaaaaaa-bbbbbbbb-cccccccc-dddddddd-eeeeeeee-ffffffff-gggggggg-hhhhhhhh";
        assert_eq!(
            halves(key),
            [
                "aaaaaaaa-bbbbbbbb-cccccccc-dddddddd-",
                "eeeeeeee-ffffffff-gggggggg-hhhhhhhh"
            ]
        );
        assert_eq!(halves(key).concat(), key);
        assert_eq!(halves("nodashes"), ["nodashes"]);
        assert_eq!(halves("a-b").concat(), "a-b");
    }
}
