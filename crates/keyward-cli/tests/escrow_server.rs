//! The escrow round trip with the real server: `keyward-server init`, a single-use enrollment
//! token, a device enrolled with its Ed25519 key, the helper's pending recovery key escrowed as
//! age ciphertext by a signed request, the server's signed receipt committing the rotation in
//! the helper, and `keyward-server key show` decrypting a key stock cryptsetup accepts. Replayed
//! tokens and requests, unsigned and wrongly signed requests are refused.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;

use base64::Engine;
use common::escrow::*;
use common::*;
use ed25519_dalek::{Signer, SigningKey};
use keyward_core::escrow::{request_message, Receipt};
use keyward_core::ipc::{Reply, Request};
use keyward_core::VolumeName;
use keyward_sys::helper_client;

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// One HTTP/1.1 request; returns (status, body).
fn http(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let status = resp.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = resp
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

fn signed(key: &SigningKey, path: &str, body: &[u8], nonce: &str) -> Vec<(String, String)> {
    let ts = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let sig = key.sign(&request_message("PUT", path, ts, nonce, body));
    vec![
        ("x-keyward-timestamp".into(), ts.to_string()),
        ("x-keyward-nonce".into(), nonce.into()),
        ("x-keyward-signature".into(), b64(&sig.to_bytes())),
    ]
}

#[test]
fn escrow_round_trip_with_the_real_server() {
    for backend in backends() {
        round_trip(&backend);
    }
}

fn round_trip(backend: &Backend) {
    let inst = Instance::prepare();
    let srv = Server::start_on(&inst, backend);
    let token = srv.token();
    let addr = srv.addr.clone();

    // Enrollment: the token works once.
    let device = SigningKey::from_bytes(&[42u8; 32]);
    let enroll = serde_json::json!({ "token": token, "device_key": b64(&device.verifying_key().to_bytes()) }).to_string();
    let (status, body) = http(&addr, "POST", "/v1/enroll", &[], enroll.as_bytes());
    assert_eq!(status, 200, "{body}");
    let device_id = serde_json::from_str::<serde_json::Value>(&body).unwrap()["device_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        http(&addr, "POST", "/v1/enroll", &[], enroll.as_bytes()).0,
        401,
        "token replay"
    );

    // The device's keyward: config pinned to this server.
    configure(&inst, &srv, &format!("device_id = \"{device_id}\"\n"));
    let inst = inst.start();
    inst.bootstrap();
    let volume = VolumeName::parse("data").unwrap();
    let (slot, rotation_id, ciphertext, sha256) = escrow_begin(&inst.socket());

    // Upload, as the agent will: a signed PUT.
    let path = format!("/v1/devices/{device_id}/escrow/data");
    let body = serde_json::json!({ "rotation_id": rotation_id, "ciphertext": b64(&ciphertext), "sha256": sha256 }).to_string();
    assert_eq!(
        http(&addr, "PUT", &path, &[], body.as_bytes()).0,
        401,
        "unsigned"
    );
    let stranger = SigningKey::from_bytes(&[43u8; 32]);
    assert_eq!(
        http(
            &addr,
            "PUT",
            &path,
            &signed(&stranger, &path, body.as_bytes(), "nonce-stranger-01"),
            body.as_bytes()
        )
        .0,
        401
    );
    let headers = signed(&device, &path, body.as_bytes(), "nonce-0123456789ab");
    let (status, receipt) = http(&addr, "PUT", &path, &headers, body.as_bytes());
    assert_eq!(status, 200, "{receipt}");
    assert_eq!(
        http(&addr, "PUT", &path, &headers, body.as_bytes()).0,
        401,
        "request replay"
    );
    let other_path = format!("/v1/devices/{device_id}/escrow/other");
    assert_eq!(
        http(
            &addr,
            "PUT",
            &other_path,
            &signed(&device, &path, body.as_bytes(), "nonce-redirect-0001"),
            body.as_bytes()
        )
        .0,
        401,
        "redirected"
    );

    // The server's receipt commits the rotation in the helper.
    let receipt: Receipt = serde_json::from_str(&receipt).unwrap();
    match helper_client::call(
        &inst.socket(),
        Request::RecoveryEscrowCommit { volume, receipt },
    )
    .unwrap()
    {
        Reply::RecoveryCommitted { slot: s, .. } => assert_eq!(s, slot),
        other => panic!("{other:?}"),
    }

    // Status shows where the key is escrowed.
    let status = String::from_utf8(inst.keyward(&["status", "data"], b"").stdout).unwrap();
    assert!(
        status.contains("recovery") && status.contains("escrowed as esc-"),
        "{status}"
    );

    // An admin retrieves the key at the server; stock cryptsetup accepts it.
    let key = srv.key_show(&device_id, "laptop locked out, ticket 42");
    assert!(inst.opens(u64::from(slot), key.as_bytes()));
    assert!(
        !srv.cmd(&["key", "show", &device_id, "data", "--reason", " "])
            .status
            .success(),
        "a reason is required"
    );
    let (status, doc) = http(&addr, "GET", "/v1/openapi.json", &[], b"");
    assert_eq!(status, 200);
    assert!(doc.contains("\"openapi\""));
}

#[test]
fn the_agent_enrolls_and_carries_rotations_to_the_server() {
    for backend in backends() {
        agent_round_trip(&backend);
    }
}

fn agent_round_trip(backend: &Backend) {
    let inst = Instance::prepare();
    let mut srv = Server::start_on(&inst, backend);
    configure(&inst, &srv, "");
    let inst = inst.start();
    inst.bootstrap();

    // Enrollment: the token goes CLI → agent over the agent's socket; the id to the helper.
    let (mut agent, device) = enroll_agent(&inst, &srv);
    let again = inst.keyward(
        &["enroll", &srv.url(), "--token-stdin"],
        b"0123456789abcdef0123456789abcdef\n",
    );
    assert_eq!(
        code(&again),
        Some(4),
        "an unknown token is refused: {}",
        stderr(&again)
    );
    let key_file = std::fs::metadata(inst.path("agent/device.key")).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&key_file.permissions()) & 0o777,
        0o600
    );

    // Enrolled, the agent escrows a recovery key for the volume at once, by itself.
    let (_, first) = wait_for(&inst, "the first escrowed key", || settled_key(&inst));

    // A rotation asked for by an admin, escrowed through the agent.
    let out = inst.keyward(&["recovery", "rotate", "data"], b"");
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("escrowed as esc-"));
    let (_, second) = settled_key(&inst).unwrap();
    assert_ne!(first, second);

    // The server goes down: the rotation stops short of committing; the old key stays.
    srv.stop();
    let out = inst.keyward(&["recovery", "rotate", "data"], b"");
    assert_eq!(code(&out), Some(5), "{}", stderr(&out));
    assert!(stderr(&out).contains("stays valid"), "{}", stderr(&out));
    let during = recovery_lines(&inst);
    assert_eq!(during.len(), 2, "{during:?}");
    assert!(
        during
            .iter()
            .any(|l| l.contains("active") && l.contains(&second)),
        "{during:?}"
    );
    assert!(during.iter().any(|l| l.contains("pending")), "{during:?}");

    // Back up: the same rotation resumes and commits; the old key goes.
    srv.resume();
    let out = inst.keyward(&["recovery", "rotate", "data"], b"");
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    let (slot, third) = settled_key(&inst).unwrap();
    assert_ne!(third, second);

    // And the admin gets it back from the server.
    let key = srv.key_show(&device, "drill");
    assert!(inst.opens(slot, key.as_bytes()));
    let _ = agent.kill();
    let _ = agent.wait();
}
