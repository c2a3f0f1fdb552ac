//! Who is asking: admin sessions and the checks every form submission passes. A session id is
//! 256 random bits, given to the browser in a `__Host-` cookie (HttpOnly, Secure,
//! SameSite=Strict, Path=/) and stored only as its SHA-256, so a database dump opens nothing
//! and every instance on the database knows every session. Sessions end after 30 idle minutes
//! or 8 hours, whichever comes first. Every POST must come from this origin (see
//! [`same_origin`]) and carry the session's form token.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::header::{COOKIE, HOST, ORIGIN, REFERER};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method};
use base64::Engine;

use super::{db, UiError};
use crate::app_state::AppState;
use crate::roles::{Right, Role};

/// The session cookie. `__Host-`: the browser takes it only with Secure, Path=/ and no Domain.
pub const SESSION_COOKIE: &str = "__Host-keyward-session";
/// The login form's token, before there is a session (double-submit).
pub const LOGIN_COOKIE: &str = "__Host-keyward-login";
/// A session ends after this long unused.
pub const IDLE_SECS: i64 = 30 * 60;
/// A session ends this long after login, used or not.
pub const ABSOLUTE_SECS: i64 = 8 * 3600;

/// 256 random bits, URL-safe base64.
pub fn random_token() -> Result<String, UiError> {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).map_err(|e| UiError::Internal(e.to_string()))?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b))
}

/// Whether `t` looks like a [`random_token`] (so it may be echoed into a page).
pub fn token_ok(t: &str) -> bool {
    t.len() == 43
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// What the database keeps of a session id: hex SHA-256.
pub fn hash_token(token: &str) -> String {
    keyward_core::hex::sha256(token.as_bytes())
}

/// Equal, in time that depends on the lengths only.
pub fn tokens_match(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// A `Set-Cookie` value with every flag the UI's cookies carry.
pub fn set_cookie(name: &str, value: &str, max_age_secs: i64) -> HeaderValue {
    cookie(name, value, max_age_secs, "Strict")
}

/// The same, but sent on a top-level navigation from another site too: only for the single
/// sign-on's `state`, which the provider's redirect back must carry.
pub fn set_cookie_lax(name: &str, value: &str, max_age_secs: i64) -> HeaderValue {
    cookie(name, value, max_age_secs, "Lax")
}

fn cookie(name: &str, value: &str, max_age_secs: i64, same_site: &str) -> HeaderValue {
    let cookie = format!(
        "{name}={value}; Path=/; Max-Age={max_age_secs}; HttpOnly; Secure; SameSite={same_site}"
    );
    // Names are constants and values URL-safe base64 (or empty): always a valid header.
    HeaderValue::from_str(&cookie).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// A cookie's value from the request.
pub fn cookie_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// `scheme://authority/...` → `authority`; `None` for anything else (including `null`).
fn authority(url: &str) -> Option<&str> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))?;
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    Some(&rest[..end])
}

/// Whether a state-changing request comes from a page of this server. A real Origin must name
/// the host the request was sent to. The UI's `Referrer-Policy: no-referrer` makes browsers
/// send `Origin: null` and no Referer on its own form posts, so then `Sec-Fetch-Site:
/// same-origin` (a header no page can forge) vouches instead; failing that, a Referer naming
/// this host. Any other Sec-Fetch-Site, or no evidence at all: refused.
pub fn same_origin(headers: &HeaderMap) -> bool {
    let text = |name| {
        headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
    };
    let Some(host) = text(HOST) else {
        return false;
    };
    let site = text(HeaderName::from_static("sec-fetch-site"));
    if site.is_some_and(|site| site != "same-origin") {
        return false;
    }
    match text(ORIGIN) {
        Some(origin) if origin != "null" => authority(origin) == Some(host),
        _ if site == Some("same-origin") => true,
        _ => text(REFERER).is_some_and(|referer| authority(referer) == Some(host)),
    }
}

/// A signed-in person (any role), from the session cookie. As an extractor it also refuses a
/// state-changing request from another origin; the handler checks the form token and, with
/// [`Admin::require`], the role.
#[derive(Debug, Clone)]
pub struct Admin {
    /// The account's name.
    pub name: String,
    /// The account's role, as of this request.
    pub role: Role,
    /// This session's form token.
    pub csrf: String,
    id_hash: String,
}

impl Admin {
    /// Refuse unless `token` is this session's form token.
    pub fn check_csrf(&self, token: &str) -> Result<(), UiError> {
        if tokens_match(token, &self.csrf) {
            Ok(())
        } else {
            Err(UiError::Forbidden(
                "the form token is missing or wrong; reload the page and try again",
            ))
        }
    }

    /// How the audit trail names this person.
    pub fn who(&self) -> String {
        format!("web:{}", self.name)
    }

    /// Refuse unless this person's role carries `right`.
    pub fn require(&self, right: Right) -> Result<(), UiError> {
        if self.role.may(right) {
            Ok(())
        } else {
            Err(UiError::Forbidden("your role does not allow this"))
        }
    }

    /// This person as the reveal flow sees them.
    pub fn actor(&self) -> crate::reveals::Actor {
        crate::reveals::Actor {
            who: self.who(),
            role: self.role,
        }
    }

    /// End this session.
    pub async fn end(&self, state: &AppState) -> Result<(), UiError> {
        db::end_session(state.store.pool(), &self.id_hash).await?;
        Ok(())
    }
}

/// Begin a session for the account `admin`: its cookie.
pub async fn begin(state: &AppState, admin: &str) -> Result<HeaderValue, UiError> {
    begin_as(state, admin, None).await
}

/// Begin a session for `admin`, with `sso_role` for a person signed in through the identity
/// provider (whose role is not an account's): its cookie.
pub async fn begin_as(
    state: &AppState,
    admin: &str,
    sso_role: Option<Role>,
) -> Result<HeaderValue, UiError> {
    let id = random_token()?;
    let csrf = random_token()?;
    let now = crate::clock::unix_now();
    db::add_session(
        state.store.pool(),
        &db::NewSession {
            id_hash: &hash_token(&id),
            admin,
            csrf: &csrf,
            sso_role: sso_role.map(Role::as_str),
        },
        now,
        now - ABSOLUTE_SECS,
        now - IDLE_SECS,
    )
    .await?;
    Ok(set_cookie(SESSION_COOKIE, &id, ABSOLUTE_SECS))
}

impl FromRequestParts<Arc<AppState>> for Admin {
    type Rejection = UiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let changes_state = !matches!(parts.method, Method::GET | Method::HEAD);
        if changes_state && !same_origin(&parts.headers) {
            return Err(UiError::Forbidden(
                "refused: the request did not come from this server's pages",
            ));
        }
        let absent = || {
            if changes_state {
                UiError::Forbidden("not logged in, or the session ended; log in again")
            } else {
                UiError::LoginRequired
            }
        };
        let id = cookie_value(&parts.headers, SESSION_COOKIE).ok_or_else(absent)?;
        let id_hash = hash_token(id);
        let pool = state.store.pool();
        let row = db::session(pool, &id_hash).await?.ok_or_else(absent)?;
        let now = crate::clock::unix_now();
        if now - row.created >= ABSOLUTE_SECS || now - row.seen >= IDLE_SECS {
            db::end_session(pool, &id_hash).await?;
            return Err(absent());
        }
        let role = row
            .role
            .parse()
            .map_err(|e: crate::roles::UnknownRole| UiError::Internal(e.to_string()))?;
        db::touch_session(pool, &id_hash, now).await?;
        Ok(Admin {
            name: row.admin,
            role,
            csrf: row.csrf,
            id_hash,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn only_this_origin_may_post() {
        let host = ("host", "127.0.0.1:8443");
        assert!(same_origin(&headers(&[
            host,
            ("origin", "http://127.0.0.1:8443")
        ])));
        assert!(same_origin(&headers(&[
            host,
            ("origin", "https://127.0.0.1:8443")
        ])));
        assert!(same_origin(&headers(&[
            host,
            ("referer", "http://127.0.0.1:8443/ui/devices?q=x")
        ])));
        assert!(!same_origin(&headers(&[host])), "neither header");
        assert!(!same_origin(&headers(&[host, ("origin", "null")])));
        assert!(!same_origin(&headers(&[
            host,
            ("origin", "http://127.0.0.1:8444")
        ])));
        assert!(!same_origin(&headers(&[
            host,
            ("origin", "http://127.0.0.1:8443.evil.example")
        ])));
        // Origin decides when both are sent.
        assert!(!same_origin(&headers(&[
            host,
            ("origin", "http://evil.example"),
            ("referer", "http://127.0.0.1:8443/ui/")
        ])));
        assert!(!same_origin(&headers(&[
            host,
            ("origin", "http://127.0.0.1:8443"),
            ("sec-fetch-site", "cross-site")
        ])));
        assert!(!same_origin(&headers(&[(
            "origin",
            "http://127.0.0.1:8443"
        )])));
        // The UI's own posts under no-referrer: Origin null, vouched for by Sec-Fetch-Site.
        assert!(same_origin(&headers(&[
            host,
            ("origin", "null"),
            ("sec-fetch-site", "same-origin")
        ])));
        assert!(!same_origin(&headers(&[
            host,
            ("origin", "null"),
            ("sec-fetch-site", "cross-site")
        ])));
        assert!(!same_origin(&headers(&[
            host,
            ("origin", "null"),
            ("referer", "http://evil.example/")
        ])));
    }

    #[test]
    fn cookies_are_found_by_exact_name() {
        let h = headers(&[
            ("cookie", "a=1; __Host-keyward-session=abc"),
            (
                "cookie",
                "x__Host-keyward-login=no; __Host-keyward-login=yes",
            ),
        ]);
        assert_eq!(cookie_value(&h, SESSION_COOKIE), Some("abc"));
        assert_eq!(cookie_value(&h, LOGIN_COOKIE), Some("yes"));
        assert_eq!(cookie_value(&h, "b"), None);
    }

    #[test]
    fn tokens_are_random_and_compared_whole() {
        let (a, b) = (random_token().ok(), random_token().ok());
        assert_ne!(a, b);
        let a = a.unwrap_or_default();
        assert_eq!(a.len(), 43);
        assert!(token_ok(&a));
        assert!(!token_ok("\"><script>") && !token_ok(&a[1..]));
        assert!(tokens_match(&a, &a.clone()));
        assert!(!tokens_match(&a, &a[..42]));
        assert!(!tokens_match(&a, ""));
        assert_eq!(hash_token("x").len(), 64);
        let c = set_cookie(SESSION_COOKIE, &a, 60);
        let c = c.to_str().unwrap_or_default();
        for flag in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/"] {
            assert!(c.contains(flag), "{c}");
        }
    }
}
