//! The accounts page, for admins only: every web UI account with its role and every API token
//! (name and role; a token itself is never stored, so never shown). Read-only: accounts and
//! tokens are made and changed with `keyward-server admin` and `api-token` at the server,
//! where each change is audited.

use std::sync::Arc;

use axum::extract::State;
use axum::response::Html;
use maud::html;
use sqlx::Row;

use super::session::Admin;
use super::{db, layout, UiError};
use crate::app_state::AppState;
use crate::roles::Right;

/// `GET /ui/accounts`.
pub async fn page(State(s): State<Arc<AppState>>, admin: Admin) -> Result<Html<String>, UiError> {
    admin.require(Right::Administer)?;
    let accounts = db::admins(s.store.pool()).await?;
    let tokens: Vec<(String, String)> =
        sqlx::query("SELECT name, role FROM api_tokens ORDER BY name")
            .fetch_all(s.store.pool())
            .await
            .map_err(crate::store::StoreError::from)?
            .iter()
            .map(|r| Ok((r.try_get("name")?, r.try_get("role")?)))
            .collect::<Result<_, sqlx::Error>>()
            .map_err(crate::store::StoreError::from)?;
    let body = html! {
        div.heading { h1 { "Accounts" } }
        p.summary { "Change them at the server: " code { "keyward-server admin add|set-role|reset-totp|remove" }
            " and " code { "keyward-server api-token add|revoke" } " (each change is audited)." }
        h2 { "Web UI accounts" }
        table.accounts {
            thead { tr { th { "Name" } th { "Role" } th { "TOTP" } } }
            tbody { @for a in &accounts { tr {
                td { code { (a.name) } } td { (a.role) } td { @if a.totp { "yes" } @else { "no" } }
            } } }
        }
        h2 { "API tokens" }
        @if tokens.is_empty() {
            p.empty { "No API tokens." }
        } @else {
            table.accounts {
                thead { tr { th { "Name" } th { "Role" } } }
                tbody { @for (name, role) in &tokens { tr { td { code { (name) } } td { (role) } } } }
            }
        }
    };
    Ok(Html(
        layout::page("Accounts", Some(&admin), body).into_string(),
    ))
}
