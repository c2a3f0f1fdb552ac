//! Plain HTTP/1.1 to the escrow server on loopback, byte for byte as a hostile or honest client
//! would send it, and device-request signing (`keyward_core::escrow::request_message`).

use std::io::{Read, Write};
use std::net::TcpStream;

use base64::Engine;
use ed25519_dalek::{Signer, SigningKey};

pub fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// The JSON body of an escrow upload: the ciphertext and its SHA-256, as the agent sends it.
pub fn escrow_body(rotation: &str, ciphertext: &[u8]) -> String {
    use sha2::Digest;
    let sha: String = sha2::Sha256::digest(ciphertext)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    serde_json::json!({ "rotation_id": rotation, "ciphertext": b64(ciphertext), "sha256": sha })
        .to_string()
}

/// One request; returns (status, body). Status 0 if the server closed without answering.
pub fn http(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    // The server may answer (413) and close before an oversized body is all sent.
    let _ = s.write_all(body);
    let mut resp = Vec::new();
    let _ = s.read_to_end(&mut resp);
    let resp = String::from_utf8_lossy(&resp);
    let status = resp
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = resp
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// The headers of a device request signed by `key` now, with `nonce`.
pub fn signed_as(
    key: &SigningKey,
    method: &str,
    path: &str,
    body: &[u8],
    nonce: &str,
) -> Vec<(String, String)> {
    signed_at(key, method, path, body, nonce, 0)
}

/// [`signed_as`], stamped `offset` seconds from now (a device whose clock is off).
pub fn signed_at(
    key: &SigningKey,
    method: &str,
    path: &str,
    body: &[u8],
    nonce: &str,
    offset: i64,
) -> Vec<(String, String)> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let ts = now.checked_add_signed(offset).unwrap();
    let sig = key.sign(&keyward_core::escrow::request_message(
        method, path, ts, nonce, body,
    ));
    vec![
        ("x-keyward-timestamp".into(), ts.to_string()),
        ("x-keyward-nonce".into(), nonce.into()),
        ("x-keyward-signature".into(), b64(&sig.to_bytes())),
    ]
}

/// Enroll a device key at `addr` with `token`; the device id.
pub fn enroll_key(addr: &str, token: &str, key: &SigningKey) -> String {
    let body =
        serde_json::json!({ "token": token, "device_key": b64(&key.verifying_key().to_bytes()) })
            .to_string();
    let (status, answer) = http(addr, "POST", "/v1/enroll", &[], body.as_bytes());
    assert_eq!(status, 200, "{answer}");
    serde_json::from_str::<serde_json::Value>(&answer).unwrap()["device_id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// `/metrics` once its fleet gauges come from a walk that began after this call, so they hold
/// everything committed before it (the gauges are refreshed in the background; the harness
/// serves with a short `--metrics-refresh`).
pub fn fresh_metrics(addr: &str) -> String {
    let asked = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let (status, m) = http(addr, "GET", "/metrics", &[], b"");
        let taken = m
            .lines()
            .find_map(|l| l.strip_prefix("keyward_fleet_snapshot_timestamp_seconds "))
            .and_then(|v| v.trim().parse::<f64>().ok());
        if status == 200 && taken.is_some_and(|t| t > asked) {
            return m;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no fresh fleet snapshot: {status} {m}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// One value from a fresh `/metrics` (empty if absent).
pub fn gauge(addr: &str, name: &str) -> String {
    fresh_metrics(addr)
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")).map(str::to_owned))
        .unwrap_or_default()
}

/// Enroll a device through the API, escrow `secret` (sealed to the server's recipient) for its
/// volume `data` and report it as the active key: (device id, escrow id).
pub fn device_with_escrow(srv: &super::escrow::Server, secret: &str) -> (String, String) {
    use sha2::Digest;
    use std::str::FromStr;
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).unwrap();
    let key = SigningKey::from_bytes(&seed);
    let device = enroll_key(&srv.addr, &srv.token(), &key);
    let (recipient, _) = srv.public_keys();
    let recipient = age::x25519::Recipient::from_str(&recipient).unwrap();
    let ciphertext = age::encrypt(&recipient, secret.as_bytes()).unwrap();
    let sha: String = sha2::Sha256::digest(&ciphertext)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let body = serde_json::json!({ "rotation_id": "rot-1", "ciphertext": b64(&ciphertext), "sha256": sha })
        .to_string();
    let path = format!("/v1/devices/{device}/escrow/data");
    let nonce = |what: &str| format!("{what}-{}", &device[4..]);
    let headers = signed_as(&key, "PUT", &path, body.as_bytes(), &nonce("escrow"));
    let (status, answer) = http(&srv.addr, "PUT", &path, &headers, body.as_bytes());
    assert_eq!(status, 200, "{answer}");
    let escrow = serde_json::from_str::<serde_json::Value>(&answer).unwrap()["escrow_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let report = serde_json::json!({ "volumes": [{
        "volume": "data", "recovery": "escrowed", "escrow_id": escrow, "rotated_at": null,
        "service": "ok", "holders": 3, "violations": 0 }] })
    .to_string();
    let path = format!("/v1/devices/{device}/checkin");
    let headers = signed_as(&key, "POST", &path, report.as_bytes(), &nonce("checkin"));
    let (status, answer) = http(&srv.addr, "POST", &path, &headers, report.as_bytes());
    assert_eq!(status, 200, "{answer}");
    (device, escrow)
}

/// A JSON request to the admin API with a bearer token (None: without one); (status, body).
pub fn admin_api(
    addr: &str,
    token: Option<&str>,
    method: &str,
    path: &str,
    body: &serde_json::Value,
) -> (u16, serde_json::Value) {
    let headers: Vec<(String, String)> = token
        .map(|t| vec![("Authorization".to_owned(), format!("Bearer {t}"))])
        .unwrap_or_default();
    let body = if body.is_null() {
        Vec::new()
    } else {
        body.to_string().into_bytes()
    };
    let (status, answer) = http(addr, method, path, &headers, &body);
    let json = serde_json::from_str(&answer).unwrap_or(serde_json::Value::String(answer));
    (status, json)
}
