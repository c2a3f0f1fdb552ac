//! Logging in and out. A login form carries a token that must match its cookie (there is no
//! session yet to hold one). Failed logins are throttled per address and per name from that
//! address, and only delayed per name (`throttle.rs`), so nobody can lock an admin out from
//! another address; failures are rows, so every instance counts them, and they are counted for
//! unknown names too, so a lock-out says nothing about which names exist. An account with
//! TOTP also needs its current code (`second_factor.rs`); a missing or wrong code is a failed
//! login like a wrong password, with the same message. Every attempt — success, failure,
//! refused — is audited with the address it came from; refusals, which anyone can send, once a
//! minute per address, counting the rest (`refusal_fold.rs`).

use std::sync::Arc;

use axum::extract::{ConnectInfo, Form, State};
use axum::http::header::{RETRY_AFTER, SET_COOKIE};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use maud::{html, Markup};
use serde::Deserialize;
use zeroize::Zeroizing;

use super::db::FailuresOf;
use super::password::{self, Slot};
use super::refusal_fold::{Fold, Folder};
use super::second_factor;
use super::session::{self, Admin, LOGIN_COOKIE, SESSION_COOKIE};
use super::throttle::{self, Failures, Verdict, LOCKOUT_SECS};
use super::{db, layout, UiError};
use crate::app_state::AppState;
use crate::store::AuditRecord;

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
    /// The TOTP code; ignored for accounts without TOTP.
    #[serde(default)]
    code: String,
}

/// The logout form's field.
#[derive(Deserialize)]
pub struct LogoutForm {
    #[serde(default)]
    csrf: String,
}

/// The sign-in page: the password form, and "Sign in with SSO" where `[oidc]` is set.
pub(super) fn login_page(token: &str, name: &str, problem: Option<&str>, sso: bool) -> Markup {
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
                label for="code" { "Authentication code" }
                input #code type="text" name="code" inputmode="numeric" autocomplete="one-time-code"
                    maxlength="16" spellcheck="false" aria-describedby="code-hint";
                p.muted #code-hint { "From your authenticator app, if your account has one." }
                button.primary type="submit" { "Sign in" }
            }
            @if sso {
                p.sso { a.button #sso href="/ui/sso" { "Sign in with SSO" } }
            }
        }
    };
    layout::page("Sign in", None, body)
}

/// `GET /ui/login`. A form token the browser already holds is kept, so a second tab's login
/// page does not spoil the first one's form.
pub async fn form(State(s): State<Arc<AppState>>, headers: HeaderMap) -> Result<Response, UiError> {
    let token = match session::cookie_value(&headers, LOGIN_COOKIE) {
        Some(t) if session::token_ok(t) => t.to_owned(),
        _ => session::random_token()?,
    };
    Ok((
        [(
            SET_COOKIE,
            session::set_cookie(LOGIN_COOKIE, &token, session::IDLE_SECS),
        )],
        Html(login_page(&token, "", None, s.sso.is_some()).into_string()),
    )
        .into_response())
}

/// Audit a sign-in step (no device, no volume).
pub(super) async fn audit(
    s: &AppState,
    who: &str,
    action: &str,
    reason: &str,
) -> Result<(), UiError> {
    s.store
        .audit(&AuditRecord {
            at: crate::clock::now(),
            who: who.to_owned(),
            action: action.to_owned(),
            device: None,
            volume: None,
            reason: Some(reason.to_owned()),
        })
        .await?;
    Ok(())
}

/// Refused sign-ins recorded and counted (`refusal_fold.rs`), for this instance.
static REFUSALS: std::sync::LazyLock<std::sync::Mutex<Folder>> =
    std::sync::LazyLock::new(Default::default);

/// The failures that bear on a login for `name` from `source`, and the verdict at `now`.
async fn judge(
    pool: &sqlx::AnyPool,
    name: &str,
    source: &str,
    now: i64,
) -> Result<Verdict, UiError> {
    let limit = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
    let name_here = db::latest_failures(
        pool,
        FailuresOf::NameFrom(name, source),
        limit(throttle::MAX_FAILURES),
    )
    .await?;
    let from_source = db::latest_failures(
        pool,
        FailuresOf::Source(source),
        limit(throttle::MAX_SOURCE_FAILURES),
    )
    .await?;
    let everywhere = db::latest_failures(
        pool,
        FailuresOf::Name(name),
        limit(throttle::NAME_FAILURES_READ),
    )
    .await?;
    Ok(throttle::judge(
        now,
        Failures {
            name_here: &name_here,
            source: &from_source,
            name: &everywhere,
        },
    ))
}

/// `POST /ui/login`.
pub async fn submit(
    State(s): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
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
    let source = throttle::source_key(peer.ip());
    let pool = s.store.pool();
    let now = crate::clock::unix_now();
    let verdict = judge(pool, &name, &source, now).await?;
    let again = |status: StatusCode, problem: &str| {
        (
            status,
            Html(login_page(&f.csrf, &name, Some(problem), s.sso.is_some()).into_string()),
        )
            .into_response()
    };
    let refused = match verdict {
        Verdict::Try => None,
        Verdict::SourceLocked => Some((
            "ui-login-locked",
            "refused: too many failed logins from this address".to_owned(),
            "Too many failed sign-ins from your address: it is locked for 15 minutes.".to_owned(),
            LOCKOUT_SECS,
        )),
        Verdict::NameLockedHere => Some((
            "ui-login-locked",
            "refused: too many failed logins for this name from this address".to_owned(),
            "Too many failed sign-ins for this name from your address: it is locked for 15 minutes."
                .to_owned(),
            LOCKOUT_SECS,
        )),
        Verdict::Wait { secs } => Some((
            "ui-login-delayed",
            format!("refused: failed logins for this name; {secs} s to wait"),
            format!("Too many failed sign-ins for this name: try again in {secs} s."),
            secs,
        )),
    };
    if let Some((action, why, problem, retry_after)) = refused {
        // Anyone can send these: recorded once a minute per address, the rest counted.
        let fold = REFUSALS
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .note(action, &source, now);
        if let Fold::Record { folded } = fold {
            let why = match folded {
                0 => format!("{why} (from {source})"),
                n => format!("{why} (from {source}; {n} more from there since the last record)"),
            };
            audit(&s, &name, action, &why).await?;
        }
        let mut r = again(StatusCode::TOO_MANY_REQUESTS, &problem);
        r.headers_mut().insert(RETRY_AFTER, retry_after.into());
        return Ok(r);
    }
    let stored = if !super::admin::name_ok(&name) {
        None
    } else {
        db::admin_hash(pool, &name).await?
    };
    let second = if stored.is_some() {
        second_factor::load(&s, &name).await?
    } else {
        None
    };
    // Known or not: one hash of the same cost. A refused sign-in (above) hashes nothing: its
    // 429 says it was refused anyway, and hashing for it let a locked-out sender keep the
    // hashing slots full.
    let slot = Slot::take().ok_or(UiError::Busy)?;
    let matched = tokio::task::spawn_blocking(move || {
        let _slot = slot;
        password::verify(password.as_bytes(), stored.as_deref())
    })
    .await
    .map_err(|e| UiError::Internal(e.to_string()))?;
    // The code after the password, and spent only with the right one.
    let matched =
        matched && second_factor::passes(&s, &name, second.as_ref(), &f.code, now).await?;
    if !matched {
        // Older failures can no longer lock or delay anything (see `throttle.rs`).
        db::add_failure(pool, &name, &source, now, now - 2 * LOCKOUT_SECS).await?;
        let why = format!("wrong name, password or code (from {source})");
        audit(&s, &name, "ui-login-failed", &why).await?;
        return Ok(again(
            StatusCode::UNAUTHORIZED,
            "Wrong name, password or code.",
        ));
    }
    db::clear_failures(pool, &name, &source).await?;
    let cookie = session::begin(&s, &name).await?;
    let why = format!("signed in to the web UI (from {source})");
    audit(&s, &name, "ui-login", &why).await?;
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
