//! Sign in with SSO (`[oidc]`): `GET /ui/sso` begins a sign-in and sends the browser to the
//! identity provider; `GET /ui/sso/callback` finishes it. The protocol is `crate::oidc`'s; this
//! file owns where a sign-in under way lives and what a finished one does.
//!
//! A sign-in under way lives only in the browser that began it: its `state`, nonce and PKCE
//! verifier sealed in a cookie (`sso_cookie`; SameSite=Lax, so the provider's redirect back
//! carries it) that opens only under this server's key, for the callback's `state`, within ten
//! minutes — so `GET /ui/sso` stores nothing a stranger could fill. Once the provider has
//! vouched, the state's hash is recorded as used (`sso_used`), so a callback signs in once,
//! across instances. A callback from another browser (login CSRF), a replayed one, a tampered
//! or expired state, or an ID token for another nonce signs nobody in.
//!
//! A person the provider vouched for gets a session as `sso:NAME` (no account name has a
//! colon) with the role their groups map to at this sign-in; no mapped group, no session. Every
//! sign-in and every refusal is audited with how the provider names them, their subject and
//! where they came from.

use std::sync::Arc;

use axum::extract::{ConnectInfo, Query, State};
use axum::http::header::{LOCATION, SET_COOKIE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use maud::html;
use serde::Deserialize;

use super::login::{audit, login_page};
use super::session::{self, LOGIN_COOKIE};
use super::sso_cookie::{self, CookieKey, UnderWay, FLOW_SECS};
use super::{db, layout, throttle, UiError};
use crate::app_state::AppState;
use crate::oidc::SsoError;

/// The cookie that holds a sign-in's `state` between `/ui/sso` and its callback.
pub const SSO_COOKIE: &str = "__Host-keyward-sso";
/// The most of a provider's error text (or of one group's name) kept.
const MAX_ERROR: usize = 200;
/// The most groups named in one audit record.
const MAX_GROUPS_SHOWN: usize = 20;

/// The callback's query: a code and the state, or the provider's error.
#[derive(Debug, Deserialize)]
pub struct Callback {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

fn sso_of(s: &AppState) -> Result<&crate::oidc::Sso, UiError> {
    s.sso.as_deref().ok_or(UiError::NotFound(
        "single sign-on is not configured ([oidc])",
    ))
}

/// The key this server (and every instance with its identity) seals sign-in cookies under.
fn cookie_key(s: &AppState) -> CookieKey {
    CookieKey::derive(&zeroize::Zeroizing::new(s.identity.signing.to_bytes()))
}

fn short(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_control())
        .take(MAX_ERROR)
        .collect()
}

/// The groups as the audit shows them: a directory user can be in hundreds, so the first
/// [`MAX_GROUPS_SHOWN`] (each cut to [`MAX_ERROR`] characters) and how many more.
fn groups_shown(groups: &[String]) -> String {
    let mut shown: Vec<String> = groups
        .iter()
        .take(MAX_GROUPS_SHOWN)
        .map(|g| short(g))
        .collect();
    if groups.len() > MAX_GROUPS_SHOWN {
        shown.push(format!("and {} more", groups.len() - MAX_GROUPS_SHOWN));
    }
    shown.join(", ")
}

/// `GET /ui/sso`: to the provider, the sign-in sealed in the browser's cookie.
pub async fn start(State(s): State<Arc<AppState>>) -> Result<Response, UiError> {
    let sso = sso_of(&s)?;
    let begun = match sso.begin().await {
        Ok(b) => b,
        Err(e) => {
            crate::log::error("single sign-on", &[("error", e.to_string().into())]);
            return Ok(unavailable());
        }
    };
    let under_way = UnderWay {
        state: begun.state.clone(),
        nonce: begun.nonce.clone(),
        verifier: begun.verifier.to_string(),
        created: crate::clock::unix_now(),
    };
    let mut nonce = [0u8; 12];
    getrandom::fill(&mut nonce).map_err(|e| UiError::Internal(e.to_string()))?;
    let sealed = sso_cookie::seal(&cookie_key(&s), &under_way, nonce).map_err(UiError::Internal)?;
    let location =
        HeaderValue::from_str(&begun.url).map_err(|e| UiError::Internal(e.to_string()))?;
    let mut r = StatusCode::SEE_OTHER.into_response();
    let h = r.headers_mut();
    h.insert(LOCATION, location);
    h.insert(
        SET_COOKIE,
        session::set_cookie_lax(SSO_COOKIE, &sealed, FLOW_SECS),
    );
    Ok(r)
}

/// The provider cannot be reached: say so (password sign-in still works).
fn unavailable() -> Response {
    let body = html! {
        section.notice.bad {
            h1 { "Single sign-on is unavailable" }
            p { "The identity provider could not be reached. Try again in a moment, or sign in with a password." }
            p { a href="/ui/login" { "Back to sign in" } }
        }
    };
    (
        StatusCode::BAD_GATEWAY,
        Html(layout::page("Single sign-on", None, body).into_string()),
    )
        .into_response()
}

/// `GET /ui/sso/callback`.
pub async fn callback(
    State(s): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    Query(q): Query<Callback>,
) -> Result<Response, UiError> {
    let sso = sso_of(&s)?;
    let source = throttle::source_key(peer.ip());
    let refused = |who: String, why: String| {
        let s = s.clone();
        let source = source.clone();
        async move {
            audit(
                &s,
                &who,
                "ui-sso-refused",
                &format!("{why} (from {source})"),
            )
            .await?;
            let token = session::random_token()?;
            let page = login_page(
                &token,
                "",
                Some("Single sign-on did not sign you in. Try again, or ask an admin."),
                true,
            );
            let mut r = (StatusCode::FORBIDDEN, Html(page.into_string())).into_response();
            let h = r.headers_mut();
            h.append(SET_COOKIE, session::set_cookie_lax(SSO_COOKIE, "", 0));
            h.append(
                SET_COOKIE,
                session::set_cookie(LOGIN_COOKIE, &token, session::IDLE_SECS),
            );
            Ok::<Response, UiError>(r)
        }
    };
    let nobody = || "sso:?".to_owned();
    if let Some(error) = &q.error {
        let detail = q.error_description.as_deref().unwrap_or("");
        let why = format!("the provider refused: {} {}", short(error), short(detail));
        return refused(nobody(), why.trim_end().to_owned()).await;
    }
    let (Some(code), Some(state)) = (&q.code, &q.state) else {
        return refused(nobody(), "a callback without a code and a state".to_owned()).await;
    };
    let cookie = session::cookie_value(&headers, SSO_COOKIE).unwrap_or("");
    let now = crate::clock::unix_now();
    let under_way = match sso_cookie::open(&cookie_key(&s), cookie, state, now) {
        Ok(u) => u,
        Err(why) => return refused(nobody(), why.to_string()).await,
    };
    let pool = s.store.pool();
    let state_hash = session::hash_token(state);
    if db::sso_used(pool, &state_hash).await? {
        let why = "this sign-in was used already";
        return refused(nobody(), why.to_owned()).await;
    }
    let verifier = zeroize::Zeroizing::new(under_way.verifier.clone());
    let person = match sso.finish(code, &verifier, &under_way.nonce).await {
        Ok(p) => p,
        Err(e @ SsoError::Token(_)) => return refused(nobody(), e.to_string()).await,
        Err(e) => {
            crate::log::error("single sign-on", &[("error", e.to_string().into())]);
            return refused(nobody(), e.to_string()).await;
        }
    };
    // Used once: the provider has vouched, so only real sign-ins are kept (ten minutes).
    if !db::mark_sso_used(pool, &state_hash, now, now - FLOW_SECS).await? {
        let why = "this sign-in was used already";
        return refused(nobody(), why.to_owned()).await;
    }
    let who = format!("sso:{}", person.name);
    let identity = format!(
        "issuer {}, subject {:?}, groups [{}]",
        sso.issuer(),
        person.subject,
        groups_shown(&person.groups)
    );
    let Some(role) = person.role else {
        let why = format!("no group maps to a role ({identity})");
        return refused(who, why).await;
    };
    let cookie = session::begin_as(&s, &who, Some(role)).await?;
    let why = format!("signed in to the web UI with SSO as {role} ({identity}) (from {source})");
    audit(&s, &who, "ui-login", &why).await?;
    // A page, not a redirect: the session cookie is SameSite=Strict, and a browser does not
    // send it on a redirect that a cross-site navigation (the provider's) began.
    let body = html! {
        meta http-equiv="refresh" content="0;url=/ui/devices";
        section.notice {
            h1 { "Signed in" }
            p { a href="/ui/devices" { "Continue to the devices" } }
        }
    };
    let mut r = Html(layout::page("Signed in", None, body).into_string()).into_response();
    let h = r.headers_mut();
    h.append(SET_COOKIE, cookie);
    h.append(SET_COOKIE, session::set_cookie_lax(SSO_COOKIE, "", 0));
    h.append(SET_COOKIE, session::set_cookie(LOGIN_COOKIE, "", 0));
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_audit_names_at_most_twenty_groups_and_counts_the_rest() {
        let few: Vec<String> = ["a", "b"].iter().map(|s| (*s).to_owned()).collect();
        assert_eq!(groups_shown(&few), "a, b");
        let many: Vec<String> = (0..250).map(|i| format!("g{i}")).collect();
        let shown = groups_shown(&many);
        assert!(shown.starts_with("g0, g1, "), "{shown}");
        assert!(shown.ends_with("g19, and 230 more"), "{shown}");
        let long = vec!["x".repeat(5000)];
        assert_eq!(groups_shown(&long).len(), MAX_ERROR);
    }
}
