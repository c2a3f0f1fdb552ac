//! The agent's side of escrow: the device identity (an Ed25519 key made at enrollment, kept
//! 0600 in the agent's own state directory), enrollment with a single-use token, and a
//! recovery rotation carried from the helper to the server and back. The agent only ever holds
//! the key's ciphertext; the helper commits only on the server's signed receipt.

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use ed25519_dalek::{Signer, SigningKey};
use keyward_core::config::Config;
use keyward_core::enrollment::EnrollmentAnswer;
use keyward_core::escrow::{request_message, Receipt};
use keyward_core::ipc::{ErrorCode, Reply, Request};
use keyward_core::schedule::{CheckIn, CheckInReply};
use keyward_core::{Secret, VolumeName};
use keyward_sys::{helper_client, safe_fs};
use zeroize::Zeroizing;

const KEY_FILE: &str = "device.key";
const ID_FILE: &str = "device.json";
/// A new enrollment's key, written before `device.json` names it and renamed to `device.key`
/// after: a crash between the writes leaves either the old enrollment whole (its `device.json`
/// still names the old key) or the new one finishable (its `device.json` names this key).
const NEXT_KEY_FILE: &str = "device.key.next";

/// The most of any reply the agent reads. An honest one is a few KiB at most (a receipt; a
/// check-in answer with the server's at most 16 commands); a server that sends more is refused
/// before its reply can fill the agent's memory.
const MAX_REPLY_BYTES: u64 = 1 << 20;

/// The most of a server's refusal message the agent passes on.
const MAX_QUOTED_CHARS: usize = 200;

/// An error with the class the CLI maps to an exit code.
pub type Failure = (ErrorCode, String);

pub fn failed(e: impl std::fmt::Display) -> Failure {
    (ErrorCode::Failed, e.to_string())
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

/// How long one request may take from connect to its reply's last byte, however the server
/// paces it: a server that trickles a byte a second never trips a per-read timeout, so the
/// deadline is for the whole exchange.
const REQUEST_DEADLINE: Duration = Duration::from_secs(15);

/// The HTTP client: TLS through rustls, trusting only `[escrow] ca_file` when it is set
/// (otherwise Mozilla's roots). Redirects are answers, never followed: the device talks only to
/// the URL it enrolled with, which had to be https:// (or loopback).
fn http(c: &Config) -> Result<ureq::Agent, Failure> {
    use ureq::tls::{Certificate, RootCerts, TlsConfig};
    let roots = match c.escrow.as_ref().and_then(|e| e.ca_file.as_ref()) {
        Some(path) => {
            let pem = std::fs::read(path)
                .map_err(|e| failed(format!("[escrow] ca_file {}: {e}", path.display())))?;
            let certs = ureq::tls::parse_pem(&pem)
                .filter_map(|item| match item {
                    Ok(ureq::tls::PemItem::Certificate(cert)) => Some(Ok(cert)),
                    Ok(_) => None,
                    Err(e) => Some(Err(e)),
                })
                .collect::<Result<Vec<Certificate<'static>>, _>>()
                .map_err(|e| failed(format!("[escrow] ca_file {}: {e}", path.display())))?;
            if certs.is_empty() {
                return Err(failed(format!(
                    "[escrow] ca_file {}: no certificate",
                    path.display()
                )));
            }
            RootCerts::Specific(std::sync::Arc::new(certs))
        }
        None => RootCerts::WebPki,
    };
    Ok(ureq::Agent::config_builder()
        .timeout_global(Some(REQUEST_DEADLINE))
        .http_status_as_error(false)
        .max_redirects(0)
        .https_only(false)
        .tls_config(TlsConfig::builder().root_certs(roots).build())
        .build()
        .into())
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Enrollment {
    url: String,
    device_id: String,
    /// The public half of the device key this enrollment was made with (base64): ties
    /// `device.json` to its `device.key`. Absent from files written before it was added, which
    /// are taken as they are.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    device_key: Option<String>,
}

fn state(c: &Config) -> PathBuf {
    c.agent_state_dir.clone()
}

/// Enroll: make the device key, present the token, keep key and id. Returns the device id.
/// Nothing is written (an earlier enrollment stays as it was) unless the answer names a safe
/// device id and is signed for this new key by the server key the config pins.
pub fn enroll(c: &Config, url: &str, token: &Secret) -> Result<String, Failure> {
    let url = url.trim_end_matches('/');
    let plain_loopback = url.starts_with("http://") && is_loopback(url);
    if !url.starts_with("https://") && !plain_loopback {
        return Err((
            ErrorCode::Usage,
            "the escrow server's URL must be https:// (plain http:// only to a server on loopback)"
                .into(),
        ));
    }
    let pinned = c.escrow.as_ref().map(|e| e.server_signing_key.clone()).ok_or_else(|| {
        (
            ErrorCode::Usage,
            "no [escrow] section in the config pins the server's keys (url, recipient, server_signing_key): add it before enrolling".to_owned(),
        )
    })?;
    let mut seed = Zeroizing::new([0u8; 32]);
    getrandom::fill(seed.as_mut_slice()).map_err(failed)?;
    let key = SigningKey::from_bytes(&seed);
    let device_key = key.verifying_key().to_bytes();
    let token = std::str::from_utf8(token.expose())
        .map_err(|_| (ErrorCode::Usage, "token is not text".into()))?;
    let body = Zeroizing::new(
        serde_json::json!({ "token": token.trim(), "device_key": b64().encode(device_key) })
            .to_string(),
    );
    let mut resp = http(c)?
        .post(format!("{url}/v1/enroll"))
        .header("content-type", "application/json")
        .send(body.as_str())
        .map_err(|e| {
            (
                ErrorCode::EscrowUnavailable,
                format!("escrow server unreachable ({e})"),
            )
        })?;
    let status = resp.status().as_u16();
    let text = read_reply(&mut resp)?;
    if status != 200 {
        return Err((
            ErrorCode::Refused,
            format!(
                "the server refused enrollment ({status}){}",
                server_says(&text)
            ),
        ));
    }
    let answer: EnrollmentAnswer = parse_reply(&text, "enrollment answer")?;
    answer
        .verify(&pinned, &device_key)
        .map_err(|e| (ErrorCode::Refused, format!("{e}; nothing was enrolled")))?;
    let enrollment = Enrollment {
        url: url.to_owned(),
        device_id: answer.device_id.clone(),
        device_key: Some(b64().encode(device_key)),
    };
    keep(&state(c), &seed, &enrollment)?;
    Ok(answer.device_id)
}

/// Keep a new enrollment in three durable steps, each leaving a state `load` reads as one whole
/// enrollment, old or new: the key beside the current one, then `device.json` naming it, then
/// the key in place.
fn keep(dir: &Path, seed: &[u8; 32], enrollment: &Enrollment) -> Result<(), Failure> {
    keep_steps(dir, seed, enrollment, KEEP_STEPS)
}

const KEEP_STEPS: usize = 3;

/// The first `steps` of [`keep`]'s steps: what a crash after them leaves (tests).
fn keep_steps(
    dir: &Path,
    seed: &[u8; 32],
    enrollment: &Enrollment,
    steps: usize,
) -> Result<(), Failure> {
    let encoded = Zeroizing::new(b64().encode(seed));
    let id = serde_json::to_vec(enrollment).map_err(failed)?;
    for step in 0..steps.min(KEEP_STEPS) {
        match step {
            0 => safe_fs::write_atomic(dir, NEXT_KEY_FILE, encoded.as_bytes(), 0o600),
            1 => safe_fs::write_atomic(dir, ID_FILE, &id, 0o600),
            _ => safe_fs::rename_durable(dir, NEXT_KEY_FILE, KEY_FILE),
        }
        .map_err(failed)?;
    }
    Ok(())
}

/// The `error` a server gave with a refusal, quoted for a terminal and a log: at most
/// [`MAX_QUOTED_CHARS`] characters, control characters escaped. Nothing else of its body: a
/// refusal can be any size and say anything.
fn server_says(body: &str) -> String {
    let said = serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("error")?.as_str().map(str::to_owned));
    match said {
        Some(error) => {
            let short: String = error.chars().take(MAX_QUOTED_CHARS).collect();
            let more = if short.len() < error.len() { "…" } else { "" };
            format!(": \"{}{more}\"", keyward_core::printable(&short))
        }
        None => String::new(),
    }
}

/// A 200 reply's body as `T`. A body that is not one says where it went wrong, never what it
/// held: serde quotes the value it did not expect (a string of up to [`MAX_REPLY_BYTES`], with
/// whatever terminal escapes a hostile server put in it), which must reach neither the log nor
/// the admin's terminal.
fn parse_reply<T: serde::de::DeserializeOwned>(text: &str, what: &str) -> Result<T, Failure> {
    serde_json::from_str(text).map_err(|e| {
        failed(format!(
            "the server's {what} is malformed ({:?} error at line {} column {})",
            e.classify(),
            e.line(),
            e.column()
        ))
    })
}

/// The reply's body as text, refused past [`MAX_REPLY_BYTES`].
fn read_reply(resp: &mut ureq::http::Response<ureq::Body>) -> Result<String, Failure> {
    resp.body_mut()
        .with_config()
        .limit(MAX_REPLY_BYTES)
        .read_to_string()
        .map_err(failed)
}

/// Whether `url`'s real host (parsed as the HTTP client will, so userinfo such as
/// `http://localhost:1@remote-host/` does not pass for it) is a loopback name or address.
fn is_loopback(url: &str) -> bool {
    let Ok(uri) = url.parse::<ureq::http::Uri>() else {
        return false;
    };
    let Some(host) = uri.host() else {
        return false;
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn load(dir: &Path) -> Result<(SigningKey, Enrollment), Failure> {
    let me = keyward_sys::hardening::effective_uid();
    let not_enrolled = || {
        (
            ErrorCode::Failed,
            "not enrolled: run `keyward enroll URL --token-stdin`".to_owned(),
        )
    };
    let read_key = |name: &str| -> Result<Option<SigningKey>, Failure> {
        let Some(raw) = safe_fs::read_checked(&dir.join(name), safe_fs::Expect::private(me), 256)
            .map_err(failed)?
        else {
            return Ok(None);
        };
        let raw = Zeroizing::new(raw);
        let seed = Zeroizing::new(b64().decode(raw.as_slice()).map_err(failed)?);
        let seed: &[u8; 32] = seed
            .as_slice()
            .try_into()
            .map_err(|_| failed("bad device key"))?;
        Ok(Some(SigningKey::from_bytes(seed)))
    };
    let key = read_key(KEY_FILE)?;
    let ids = safe_fs::read_checked(&dir.join(ID_FILE), safe_fs::Expect::private(me), 4096)
        .map_err(failed)?
        .ok_or_else(not_enrolled)?;
    let enrollment: Enrollment = serde_json::from_slice(&ids).map_err(failed)?;
    let Some(public) = enrollment.device_key.clone() else {
        // Written before device.json named its key: the pair is taken as it is.
        return Ok((key.ok_or_else(not_enrolled)?, enrollment));
    };
    let names = |k: &SigningKey| b64().encode(k.verifying_key().to_bytes()) == public;
    if let Some(key) = key.filter(names) {
        return Ok((key, enrollment));
    }
    // An enrollment interrupted after device.json named its new key: finish it.
    match read_key(NEXT_KEY_FILE)? {
        Some(next) if names(&next) => {
            safe_fs::rename_durable(dir, NEXT_KEY_FILE, KEY_FILE).map_err(failed)?;
            Ok((next, enrollment))
        }
        _ => Err((
            ErrorCode::Failed,
            "device.key is not the key device.json was enrolled with: run `keyward enroll URL --token-stdin` again"
                .to_owned(),
        )),
    }
}

fn helper(c: &Config, req: Request) -> Result<Reply, Failure> {
    helper_client::call(&c.helper_socket(), req).map_err(|e| {
        let code = if e.code == 4 {
            ErrorCode::Refused
        } else {
            ErrorCode::Failed
        };
        (code, e.message)
    })
}

/// Send a request signed with the device key (timestamp, single-use nonce, body digest);
/// the answer's body on 200.
fn signed(
    c: &Config,
    key: &SigningKey,
    enrollment: &Enrollment,
    method: &str,
    path: &str,
    body: String,
) -> Result<String, Failure> {
    let ts = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(failed)?
        .as_secs();
    let mut nonce = [0u8; 16];
    getrandom::fill(&mut nonce).map_err(failed)?;
    let nonce = keyward_core::hex::encode(&nonce);
    let signature = key.sign(&request_message(method, path, ts, &nonce, body.as_bytes()));
    let url = format!("{}{path}", enrollment.url);
    let request = match method {
        "PUT" => http(c)?.put(url),
        _ => http(c)?.post(url),
    };
    let mut resp = request
        .header("content-type", "application/json")
        .header("x-keyward-timestamp", ts.to_string())
        .header("x-keyward-nonce", nonce)
        .header("x-keyward-signature", b64().encode(signature.to_bytes()))
        .send(body)
        .map_err(|e| {
            (
                ErrorCode::EscrowUnavailable,
                format!("escrow server unreachable ({e})"),
            )
        })?;
    let status = resp.status().as_u16();
    let text = read_reply(&mut resp)?;
    if status != 200 {
        let code = if status >= 500 {
            ErrorCode::EscrowUnavailable
        } else {
            ErrorCode::Failed
        };
        return Err((code, format!("the escrow server answered {status}")));
    }
    Ok(text)
}

/// Whether this agent has enrolled.
pub fn enrolled(c: &Config) -> bool {
    load(&state(c)).is_ok()
}

/// Report `report` to the server; its answer names the volumes to rotate after use.
pub fn checkin(c: &Config, report: &CheckIn) -> Result<CheckInReply, Failure> {
    let (key, enrollment) = load(&state(c))?;
    let path = format!("/v1/devices/{}/checkin", enrollment.device_id);
    let body = serde_json::to_string(report).map_err(failed)?;
    let text = signed(c, &key, &enrollment, "POST", &path, body)?;
    parse_reply(&text, "check-in answer")
}

/// One rotation at a time: the CLI's (through the control socket) and the schedule's.
static ROTATING: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Rotate `volume`'s recovery key, escrowed. On any failure before the receipt, the pending key
/// stays pending and the current one stays valid; running again resumes the same rotation.
pub fn rotate(c: &Config, volume: &VolumeName) -> Result<(u32, String), Failure> {
    let _one = ROTATING
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let (key, enrollment) = load(&state(c))?;
    let (slot, rotation_id, ciphertext, sha256) = match helper(
        c,
        Request::RecoveryEscrowBegin {
            volume: volume.clone(),
        },
    )? {
        Reply::RecoveryEscrow {
            slot,
            rotation_id,
            ciphertext,
            sha256,
        } => (slot, rotation_id, ciphertext, sha256),
        other => return Err(failed(format!("unexpected reply {other:?}"))),
    };
    let path = format!("/v1/devices/{}/escrow/{volume}", enrollment.device_id);
    let body = serde_json::json!({ "rotation_id": rotation_id, "ciphertext": b64().encode(&ciphertext), "sha256": sha256 })
        .to_string();
    let text = signed(c, &key, &enrollment, "PUT", &path, body)
        .map_err(|(code, why)| (code, format!("{why}; the current recovery key stays valid")))?;
    let receipt: Receipt = parse_reply(&text, "receipt")?;
    let escrow_id = receipt.escrow_id.clone();
    match helper(
        c,
        Request::RecoveryEscrowCommit {
            volume: volume.clone(),
            receipt,
        },
    )? {
        Reply::RecoveryCommitted { .. } => Ok((slot, escrow_id)),
        other => Err(failed(format!("unexpected reply {other:?}"))),
    }
}

#[cfg(test)]
#[path = "escrow_keep_tests.rs"]
mod keep_tests;

#[cfg(test)]
mod loopback_tests {
    use super::is_loopback;

    #[test]
    fn only_a_real_loopback_host_counts() {
        for url in [
            "http://localhost:1@remote-host/",
            "http://127.0.0.1@evil.example:80/",
            "http://localhost.evil.example/",
            "http://remote-host/",
            "not a url",
        ] {
            assert!(!is_loopback(url), "{url}");
        }
        for url in [
            "http://localhost:8443/",
            "http://127.0.0.1:1",
            "http://[::1]:80/x",
        ] {
            assert!(is_loopback(url), "{url}");
        }
    }
}
