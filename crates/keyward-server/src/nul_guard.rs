//! A middleware that refuses, with 400, any request carrying a NUL character in its path, its
//! query or its body (raw, percent-encoded as in a URL or a form, or escaped as in JSON), and
//! with 408 a body that does not arrive whole within the serve's `--body-read-timeout` (it
//! reads every body first, so it is where a body's deadline is kept: hyper's own timer ends
//! with the header, and the idle timeout is reset by every byte, so a body sent a byte at a
//! time held its connection for as long as its sender liked).
//!
//! No keyward input has a use for NUL, and PostgreSQL refuses a NUL in a text value outright:
//! without this guard, a NUL in any id, name or search term reached the database and came back
//! as a 500 on PostgreSQL (SQLite stored it). Checking at the edge, once, covers every route
//! and every handler written later, instead of one check per field.

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;

/// The largest body read (the same as the router's body limit).
pub const MAX_BODY: usize = 64 * 1024;

/// How a body encodes its characters.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Encoding {
    /// A URL's path and query, or an `application/x-www-form-urlencoded` body.
    Percent,
    /// A JSON body.
    Json,
    /// Anything else, labelled or not: JSON's escape counts too, because the device API
    /// (`api.rs`, `checkin.rs`) parses its body as JSON whatever its `Content-Type`.
    Other,
}

/// Whether `bytes` holds a NUL, raw or escaped as `encoding` escapes one.
fn holds_nul(bytes: &[u8], encoding: Encoding) -> bool {
    bytes.contains(&0)
        || match encoding {
            Encoding::Percent => bytes.windows(3).any(|w| w == b"%00"),
            Encoding::Json | Encoding::Other => {
                bytes.windows(6).any(|w| w.eq_ignore_ascii_case(b"\\u0000"))
            }
        }
}

fn body_encoding(parts: &axum::http::request::Parts) -> Encoding {
    let content_type = parts
        .headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    if content_type.starts_with("application/x-www-form-urlencoded") {
        Encoding::Percent
    } else if content_type.contains("json") {
        Encoding::Json
    } else {
        Encoding::Other
    }
}

fn refuse(status: StatusCode, message: &str) -> Response {
    (status, Json(serde_json::json!({ "error": message }))).into_response()
}

/// The middleware; `deadline` is how long the whole body may take to arrive.
pub async fn refuse_nul(req: Request, next: Next, deadline: std::time::Duration) -> Response {
    let in_uri = req
        .uri()
        .path_and_query()
        .is_some_and(|pq| holds_nul(pq.as_str().as_bytes(), Encoding::Percent));
    if in_uri {
        return refuse(
            StatusCode::BAD_REQUEST,
            "a NUL character is never valid input",
        );
    }
    let (parts, body) = req.into_parts();
    let bytes: Bytes =
        match tokio::time::timeout(deadline, axum::body::to_bytes(body, MAX_BODY)).await {
            Ok(Ok(b)) => b,
            Ok(Err(_)) => return refuse(StatusCode::PAYLOAD_TOO_LARGE, "request body too large"),
            Err(_) => {
                return refuse(
                    StatusCode::REQUEST_TIMEOUT,
                    "the request body did not arrive in time",
                )
            }
        };
    if holds_nul(&bytes, body_encoding(&parts)) {
        return refuse(
            StatusCode::BAD_REQUEST,
            "a NUL character is never valid input",
        );
    }
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

#[cfg(test)]
mod tests {
    use super::{holds_nul, Encoding};

    #[test]
    fn nul_is_found_in_every_encoding() {
        for e in [Encoding::Percent, Encoding::Json, Encoding::Other] {
            assert!(holds_nul(b"a\0b", e));
        }
        assert!(holds_nul(
            b"/v1/admin/devices?after=%C3%80%00%F1",
            Encoding::Percent
        ));
        assert!(holds_nul(b"name=a%00b&password=x", Encoding::Percent));
        assert!(holds_nul(br#"{"device":"dev\u0000"}"#, Encoding::Json));
        assert!(holds_nul(br#"{"device":"dev\U0000"}"#, Encoding::Json));
    }

    #[test]
    fn ordinary_input_passes() {
        let p = Encoding::Percent;
        assert!(!holds_nul(b"/v1/admin/devices?after=dev-00a0&limit=100", p));
        assert!(!holds_nul(b"name=admin&password=%0A%01%2500", p));
        assert!(!holds_nul(
            br#"{"reason":"desk \u00e9, 100%00"}"#,
            Encoding::Json
        ));
        // A body not labelled JSON may still be read as JSON (the device API's are).
        assert!(holds_nul(br#"{"detail":"a\u0000"}"#, Encoding::Other));
        assert!(!holds_nul(b"%00", Encoding::Other));
        assert!(!holds_nul(b"", p));
    }
}
