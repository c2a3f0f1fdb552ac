//! Operability: a middleware that counts and logs every request (route template, status,
//! latency; never a body), and `/metrics` in the Prometheus text format: this instance's
//! request counters, latency sums and write batches, plus the fleet gauges (devices, escrows,
//! keys waiting for rotation after use, volumes by escrow state, rotation lag) from the
//! snapshot `fleet_gauges.rs` refreshes in the background. A scrape reads memory only.
//! Request counters are per instance, as Prometheus expects; gauges are the same everywhere.
//!
//! `/metrics` is open unless `serve --metrics-token-file FILE` names a bearer token (a private
//! file, `private_file.rs`); then a scrape without `Authorization: Bearer TOKEN` gets 401. The
//! token is compared as SHA-256 digests, in constant time.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use axum::http::header::AUTHORIZATION;
use axum::http::HeaderMap;
use sha2::Digest;

pub mod http;

/// `serve` options for `/metrics`.
#[derive(clap::Args, Debug, Clone)]
pub struct Options {
    /// Recompute the fleet gauges (a walk over every device) this often; scrapes read the last result.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = humantime::parse_duration)]
    pub metrics_refresh: Duration,
    /// Require `Authorization: Bearer TOKEN` on /metrics, TOKEN read from this file (one line,
    /// at least 16 characters; owned by this user, mode 0600 or stricter). Without it /metrics is open.
    #[arg(long, value_name = "FILE")]
    pub metrics_token_file: Option<PathBuf>,
}

/// The bearer token `/metrics` requires, as its SHA-256.
#[derive(Clone)]
pub struct MetricsToken([u8; 32]);

impl std::fmt::Debug for MetricsToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MetricsToken(..)")
    }
}

/// Shortest token accepted.
const MIN_TOKEN: usize = 16;

impl Options {
    /// The token from `--metrics-token-file`, if given; an error if the file is readable by
    /// others, or the token too short.
    pub fn token(&self) -> Result<Option<MetricsToken>, String> {
        let Some(path) = &self.metrics_token_file else {
            return Ok(None);
        };
        let token = zeroize::Zeroizing::new(
            crate::private_file::read_line(path)
                .map_err(|e| format!("--metrics-token-file {e}"))?,
        );
        if token.chars().count() < MIN_TOKEN {
            return Err(format!(
                "--metrics-token-file: the token must have at least {MIN_TOKEN} characters"
            ));
        }
        Ok(Some(MetricsToken(
            sha2::Sha256::digest(token.as_bytes()).into(),
        )))
    }
}

/// Whether the request carries the token (digests compared in constant time).
fn authorized(expected: &MetricsToken, headers: &HeaderMap) -> bool {
    let given = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    let given: [u8; 32] = sha2::Sha256::digest(given.trim().as_bytes()).into();
    given
        .iter()
        .zip(expected.0.iter())
        .fold(0u8, |acc, (a, b)| acc | (a ^ b))
        == 0
}

/// Per-route request counts and latency sums, by status.
#[derive(Debug, Default)]
pub struct Counters {
    by_route: Mutex<BTreeMap<(String, u16), (u64, f64)>>,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn only_the_whole_token_as_a_bearer_is_authorized() {
        let token = MetricsToken(sha2::Sha256::digest(b"0123456789abcdef").into());
        let with = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(AUTHORIZATION, v.parse().unwrap());
            h
        };
        assert!(authorized(&token, &with("Bearer 0123456789abcdef")));
        assert!(!authorized(&token, &HeaderMap::new()));
        assert!(!authorized(&token, &with("0123456789abcdef")));
        assert!(!authorized(&token, &with("Bearer 0123456789abcde")));
        assert!(!authorized(&token, &with("Bearer 0123456789abcdef0")));
        assert!(!authorized(&token, &with("Basic 0123456789abcdef")));
    }
}
