//! Logging in and out. A login form carries a token that must match its cookie (there is no
//! session yet to hold one). Five failed logins for a name within 15 minutes lock that name
//! for 15 minutes from the fifth; failures are rows, so every instance counts them, and they
//! are counted for unknown names too, so a lock-out says nothing about which names exist.
//! Every attempt — success, failure, locked — is audited.

use std::sync::Arc;

use axum::extract::{Form, State};
use axum::http::header::SET_COOKIE;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use maud::{html, Markup};
use serde::Deserialize;
use zeroize::Zeroizing;

use super::password::{self, Slot};
use super::session::{self, Admin, LOGIN_COOKIE, SESSION_COOKIE};
use super::{db, layout, UiError};
use crate::api::AppState;
use crate::store::AuditRecord;

/// Failed logins that lock a name out...
pub const MAX_FAILURES: usize = 5;
/// ...when they fall within this long; and how long the lock-out lasts after the last of them.
pub const LOCKOUT_SECS: i64 = 15 * 60;

/// Whether a name is locked at `now`, given its latest failures (Unix seconds, newest first).
pub fn locked(now: i64, latest_failures: &[i64]) -> bool {
    match (
        latest_failures.first(),
        latest_failures.get(MAX_FAILURES - 1),
    ) {
        (Some(&newest), Some(&fifth)) => {
            newest - fifth <= LOCKOUT_SECS && now < newest + LOCKOUT_SECS
        }
        _ => false,
    }
}
/// Longest name kept from a login attempt (names are at most 64 characters).
const MAX_NAME: usize = 64;

/// The login form's fields.
#[derive(Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    password: String,
}

/// The logout form's field.
#[derive(Deserialize)]
pub struct LogoutForm {
    #[serde(default)]
    csrf: String,
}

fn login_page(token: &str, name: &str, problem: Option<&str>) -> Markup {
    let body = html! {
        section.login {
            h1 { "Sign in" }
            p.muted { "Escrowed recovery keys. Every key shown is audited and then replaced." }
            @if let Some(problem) = problem {
                p.notice.bad role="alert" { (problem) }
            }
            form method="post" action="/ui/login" {
                input type="hidden" name="csrf" value=(token);
                label for="name" { "Admin name" }
                input #name type="text" name="name" value=(name) autocomplete="username"
                    autocapitalize="none" spellcheck="false" required autofocus[name.is_empty()];
                label for="password" { "Password" }
                input #password type="password" name="password" autocomplete="current-password"
                    required autofocus[!name.is_empty()];
                button.primary type="submit" { "Sign in" }
            }
        }
    };
    layout::page("Sign in", None, body)
}

/// `GET /ui/login`. A form token the browser already holds is kept, so a second tab's login
/// page does not spoil the first one's form.
pub async fn form(headers: HeaderMap) -> Result<Response, UiError> {
    let token = match session::cookie_value(&headers, LOGIN_COOKIE) {
        Some(t) if session::token_ok(t) => t.to_owned(),
        _ => session::random_token()?,
    };
    Ok((
        [(
            SET_COOKIE,
            session::set_cookie(LOGIN_COOKIE, &token, session::IDLE_SECS),
        )],
        Html(login_page(&token, "", None).into_string()),
    )
        .into_response())
}

async fn audit(s: &AppState, who: &str, action: &str, reason: &str) -> Result<(), UiError> {
    s.store
        .audit(&AuditRecord {
            at: crate::store::now(),
            who: who.to_owned(),
            action: action.to_owned(),
            device: None,
            volume: None,
            reason: Some(reason.to_owned()),
        })
        .await?;
    Ok(())
}

/// `POST /ui/login`.
pub async fn submit(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    Form(f): Form<LoginForm>,
) -> Result<Response, UiError> {
    let password = Zeroizing::new(f.password);
    let cookie = session::cookie_value(&headers, LOGIN_COOKIE).unwrap_or("");
    if !session::same_origin(&headers)
        || cookie.is_empty()
        || !session::tokens_match(cookie, &f.csrf)
    {
        return Err(UiError::Forbidden(
            "the login form expired or came from elsewhere; reload it and sign in again",
        ));
    }
    let name: String = f.name.trim().chars().take(MAX_NAME).collect();
    let pool = s.store.pool();
    let now = session::unix_now();
    let limit = i64::try_from(MAX_FAILURES).unwrap_or(i64::MAX);
    let locked = locked(now, &db::latest_failures(pool, &name, limit).await?);
    let stored = if locked || !super::admin::name_ok(&name) {
        None
    } else {
        db::admin_hash(pool, &name).await?
    };
    // Locked or not, known or not: one hash of the same cost.
    let slot = Slot::take().ok_or(UiError::Busy)?;
    let matched = tokio::task::spawn_blocking(move || {
        let _slot = slot;
        password::verify(password.as_bytes(), stored.as_deref())
    })
    .await
    .map_err(|e| UiError::Internal(e.to_string()))?;
    let again = |status: StatusCode, problem: &str| {
        (
            status,
            Html(login_page(&f.csrf, &name, Some(problem)).into_string()),
        )
            .into_response()
    };
    if locked {
        audit(
            &s,
            &name,
            "ui-login-locked",
            "refused: too many failed logins",
        )
        .await?;
        return Ok(again(
            StatusCode::TOO_MANY_REQUESTS,
            "Too many failed sign-ins for this name: it is locked for 15 minutes.",
        ));
    }
    if !matched {
        // Older failures can no longer lock anything (see `locked`).
        db::add_failure(pool, &name, now, now - 2 * LOCKOUT_SECS).await?;
        audit(&s, &name, "ui-login-failed", "wrong name or password").await?;
        return Ok(again(StatusCode::UNAUTHORIZED, "Wrong name or password."));
    }
    db::clear_failures(pool, &name).await?;
    let cookie = session::begin(&s, &name).await?;
    audit(&s, &name, "ui-login", "signed in to the web UI").await?;
    let mut response = Redirect::to("/ui/devices").into_response();
    let h = response.headers_mut();
    h.append(SET_COOKIE, cookie);
    h.append(SET_COOKIE, session::set_cookie(LOGIN_COOKIE, "", 0));
    Ok(response)
}

/// `POST /ui/logout`.
pub async fn logout(
    State(s): State<Arc<AppState>>,
    admin: Admin,
    Form(f): Form<LogoutForm>,
) -> Result<Response, UiError> {
    admin.check_csrf(&f.csrf)?;
    admin.end(&s).await?;
    audit(&s, &admin.name, "ui-logout", "signed out of the web UI").await?;
    Ok((
        [(SET_COOKIE, session::set_cookie(SESSION_COOKIE, "", 0))],
        Redirect::to("/ui/login"),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60;

    #[test]
    fn five_failures_within_15_minutes_lock_for_15_minutes_from_the_fifth() {
        let t = 1_000_000;
        // Newest first: 0, 1, 2, 3, 4 minutes before t.
        let five: Vec<i64> = (0..5).map(|i| t - i * MIN).collect();
        assert!(locked(t, &five));
        assert!(locked(t + 15 * MIN - 1, &five));
        assert!(
            !locked(t + 15 * MIN, &five),
            "over 15 minutes after the fifth"
        );
        assert!(!locked(t, &five[..4]), "four are not enough");
        // Five spread over more than 15 minutes lock nothing.
        let spread: Vec<i64> = (0..5).map(|i| t - i * 4 * MIN).collect();
        assert!(!locked(t, &spread));
        assert!(!locked(t, &[]));
    }
}
