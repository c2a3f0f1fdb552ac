//! Sending the `[notify]` webhook: a background task takes the oldest due event from the outbox
//! (`notify_queue.rs`), POSTs its JSON body signed with HMAC-SHA256, and deletes it on a 2xx;
//! anything else is retried after 1 s, doubling to every 10 minutes, until `give_up_secs`
//! after the event, then given up and audited. Never on a request's path: the steps only
//! insert a row. The HTTP client is ureq (rustls, Mozilla's roots; no redirects followed), run
//! on the blocking pool, bounded by `timeout_secs`. The secret is read once, at start.
//!
//! Signature: `X-Keyward-Timestamp: T` (Unix seconds, per attempt) and
//! `X-Keyward-Signature: sha256=HEX`, HEX = HMAC-SHA256(secret, T + "." + body), so a receiver
//! can refuse an old timestamp (a replay) as well as a forged body.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use sqlx::AnyPool;
use zeroize::Zeroizing;

use crate::clock::unix_now;
use crate::config::NotifyConfig;
use crate::notify_queue as queue;

/// The shortest secret accepted, in bytes (HMAC-SHA256's own output size).
pub const MIN_SECRET_BYTES: usize = 32;

/// The longest wait between two attempts at one event, in seconds.
pub const MAX_BACKOFF_SECS: i64 = 600;

/// How often an idle sender looks for due events (others' too, on a shared database).
const POLL: Duration = Duration::from_secs(1);

/// Why `[notify]` could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NotifyError {
    /// The secret file is missing, unreadable, or others may read it.
    #[error("[notify] secret_file {0}")]
    SecretFile(String),
    /// The secret is too short to be one.
    #[error("[notify] secret_file {path}: the secret is {len} bytes; at least {MIN_SECRET_BYTES} are needed (e.g. `openssl rand -hex 32`)")]
    SecretTooShort {
        /// Which file.
        path: String,
        /// How long its line is.
        len: usize,
    },
    /// `ca_file` cannot be read or holds no certificate.
    #[error("{0}")]
    CaFile(String),
}

/// What the sender did, for `/metrics` (this instance's counts; the depth is the database's).
#[derive(Debug, Default)]
pub struct Stats {
    /// Events the receiver took.
    pub delivered: AtomicU64,
    /// Attempts that failed (each retried, or given up).
    pub failed_attempts: AtomicU64,
    /// Events given up on.
    pub given_up: AtomicU64,
    /// Events in the outbox at the last look.
    pub depth: AtomicI64,
}

/// The webhook sender: where to, the key, the limits.
pub struct Notifier {
    url: String,
    secret: Zeroizing<Vec<u8>>,
    timeout: Duration,
    give_up_secs: i64,
    http: ureq::Agent,
    /// What it did.
    pub stats: Stats,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifier")
            .field("url", &self.url)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// `sha256=` and the hex HMAC-SHA256 of `timestamp.body` under `secret`.
pub fn signature(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    // HMAC takes a key of any length; `new_from_slice` cannot fail for it.
    let Ok(mut mac) = Hmac::<sha2::Sha256>::new_from_slice(secret) else {
        unreachable!("HMAC accepts keys of every length")
    };
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let tag = mac.finalize().into_bytes();
    format!("sha256={}", keyward_core::hex::encode(&tag))
}

/// The wait before the next attempt after `attempts` failed ones: 1 s, doubling, at most
/// [`MAX_BACKOFF_SECS`].
pub fn backoff_secs(attempts: i64) -> i64 {
    let doublings = u32::try_from(attempts.saturating_sub(1).clamp(0, 30)).unwrap_or(30);
    (1i64 << doublings).min(MAX_BACKOFF_SECS)
}

impl Notifier {
    /// Read the secret (owned by this user, mode 0600 or stricter, one line of at least
    /// [`MIN_SECRET_BYTES`]) and make the client.
    pub fn load(config: &NotifyConfig) -> Result<Self, NotifyError> {
        let line = Zeroizing::new(
            crate::private_file::read_line(&config.secret_file).map_err(NotifyError::SecretFile)?,
        );
        if line.len() < MIN_SECRET_BYTES {
            return Err(NotifyError::SecretTooShort {
                path: config.secret_file.display().to_string(),
                len: line.len(),
            });
        }
        let timeout = Duration::from_secs(u64::from(config.timeout_secs));
        let http = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .http_status_as_error(false)
            .https_only(false)
            .max_redirects(0)
            .tls_config(
                ureq::tls::TlsConfig::builder()
                    .root_certs(
                        crate::ca_roots::roots("[notify]", config.ca_file.as_deref())
                            .map_err(NotifyError::CaFile)?,
                    )
                    .build(),
            )
            .build()
            .into();
        Ok(Notifier {
            url: config.url.clone(),
            secret: Zeroizing::new(line.as_bytes().to_vec()),
            timeout,
            give_up_secs: i64::from(config.give_up_secs),
            http,
            stats: Stats::default(),
        })
    }

    /// One attempt (blocking): POST `body`, signed now; Ok on a 2xx.
    fn post(&self, body: &str) -> Result<(), String> {
        let timestamp = unix_now();
        let answer = self
            .http
            .post(&self.url)
            .header("content-type", "application/json")
            .header(
                "user-agent",
                concat!("keyward-server/", env!("CARGO_PKG_VERSION")),
            )
            .header("x-keyward-timestamp", timestamp.to_string())
            .header(
                "x-keyward-signature",
                signature(&self.secret, timestamp, body.as_bytes()),
            )
            .send(body)
            .map_err(|e| e.to_string())?;
        let status = answer.status();
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("HTTP {}", status.as_u16()))
        }
    }

    /// One attempt without blocking the runtime.
    async fn post_off_runtime(self: &Arc<Self>, body: String) -> Result<(), String> {
        let me = Arc::clone(self);
        tokio::task::spawn_blocking(move || me.post(&body))
            .await
            .unwrap_or_else(|e| Err(format!("the sending task failed: {e}")))
    }

    /// Deliver the oldest due event, if any; whether there was one.
    async fn deliver_next(
        self: &Arc<Self>,
        pool: &AnyPool,
    ) -> Result<bool, crate::store::StoreError> {
        let now = unix_now();
        // Held past the attempt's own limit, so no other instance sends it meanwhile.
        let lease = now + self.timeout.as_secs().try_into().unwrap_or(300) + 30;
        let Some(ev) = queue::claim_next(pool, now, lease).await? else {
            return Ok(false);
        };
        let sent = self.post_off_runtime(ev.body.clone()).await;
        let now = unix_now();
        match sent {
            Ok(()) => {
                queue::delivered(pool, &ev.id, now).await?;
                self.stats.delivered.fetch_add(1, Ordering::Relaxed);
            }
            Err(why) => {
                self.stats.failed_attempts.fetch_add(1, Ordering::Relaxed);
                let fields = [
                    ("event", ev.id.clone().into()),
                    ("attempts", ev.attempts.into()),
                    ("error", why.clone().into()),
                ];
                if now >= ev.created.saturating_add(self.give_up_secs) {
                    queue::give_up(pool, &ev, &why).await?;
                    self.stats.given_up.fetch_add(1, Ordering::Relaxed);
                    crate::log::error("webhook event given up (audited notify-failed)", &fields);
                } else {
                    queue::retry_at(pool, &ev.id, now + backoff_secs(ev.attempts), &why).await?;
                    crate::log::info("webhook attempt failed; will retry", &fields);
                }
            }
        }
        Ok(true)
    }

    /// The sender: forever, deliver what is due, else look again in a second.
    pub async fn deliver_forever(self: Arc<Self>, pool: AnyPool) {
        loop {
            match self.deliver_next(&pool).await {
                Ok(true) => continue,
                Ok(false) => {
                    if let Ok(n) = queue::depth(&pool).await {
                        self.stats.depth.store(n, Ordering::Relaxed);
                    }
                    tokio::time::sleep(POLL).await;
                }
                Err(e) => {
                    crate::log::error("webhook outbox", &[("error", e.to_string().into())]);
                    tokio::time::sleep(POLL * 5).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_signature_is_hmac_sha256_over_timestamp_dot_body() {
        // Computed independently: `printf '1700000000.{"a":1}' | openssl dgst -sha256 -hmac
        // 0123456789abcdef0123456789abcdef` (and Python's hmac module agrees).
        let secret = b"0123456789abcdef0123456789abcdef";
        let sig = signature(secret, 1_700_000_000, br#"{"a":1}"#);
        assert_eq!(
            sig,
            "sha256=f05f2539e3ae1c49aec5f8cfdad75ef6b06480b133973ffbb7ec9e18827af177"
        );
        // Timestamp, body and key each change it.
        assert_ne!(sig, signature(secret, 1_700_000_001, br#"{"a":1}"#));
        assert_ne!(sig, signature(secret, 1_700_000_000, br#"{"a":2}"#));
        assert_ne!(
            sig,
            signature(
                b"another key of 32 bytes or more..",
                1_700_000_000,
                br#"{"a":1}"#
            )
        );
    }

    #[test]
    fn backoff_doubles_from_one_second_to_ten_minutes() {
        let schedule: Vec<i64> = (1..=12).map(backoff_secs).collect();
        assert_eq!(schedule, [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 600, 600]);
        assert_eq!(backoff_secs(0), 1);
        assert_eq!(backoff_secs(i64::MAX), 600);
        assert_eq!(backoff_secs(-5), 1);
    }
}
