//! Escrowed recovery rotation at the helper: the caller gets only the key's age ciphertext to
//! the pinned recipient (decrypting it with the server's identity gives a key stock cryptsetup
//! accepts), and the rotation commits only on a receipt signed by the pinned server key for
//! this device, volume, rotation and ciphertext — forged, redirected, stale or altered receipts
//! change nothing. The escrow server itself plays its part here with its real keys.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::Read;

use common::escrow::pin_test_server;
use common::*;
use ed25519_dalek::{Signer, SigningKey};
use keyward_core::escrow::Receipt;
use keyward_core::ipc::{Reply, Request};
use keyward_core::VolumeName;
use keyward_sys::helper_client;
use sha2::Digest;

fn sign(
    key: &SigningKey,
    device: &str,
    volume: &str,
    rotation: &str,
    sha: &str,
    escrow_id: &str,
) -> Receipt {
    let volume = VolumeName::parse(volume).unwrap();
    let msg = Receipt::message(device, &volume, rotation, sha, escrow_id);
    Receipt {
        device: device.into(),
        volume,
        rotation_id: rotation.into(),
        sha256: sha.into(),
        escrow_id: escrow_id.into(),
        signature: key.sign(&msg).to_bytes().to_vec(),
    }
}

fn recovery_state(inst: &Instance) -> Vec<String> {
    let out = inst.keyward(&["status", "data", "--json"], b"");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["volumes"][0]["holders"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["role"] == "recovery")
        .map(|h| h["state"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn escrowed_rotation_commits_only_on_a_genuine_receipt() {
    let identity = age::x25519::Identity::generate();
    let server = SigningKey::from_bytes(&[7u8; 32]);
    let inst = Instance::prepare();
    pin_test_server(
        &inst,
        "https://escrow.invalid",
        &identity.to_public(),
        &server,
        "dev-1",
        "",
    );
    let inst = inst.start();
    inst.bootstrap();
    let socket = inst.socket();
    let volume = VolumeName::parse("data").unwrap();

    let begin = || escrow_begin(&socket);
    let (slot, rotation, ciphertext, sha) = begin();
    let digest: String = sha2::Sha256::digest(&ciphertext)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(digest, sha);
    // The server's identity decrypts it to a key that opens the pending slot.
    let mut key = Vec::new();
    age::decrypt(&identity, &ciphertext)
        .unwrap()
        .as_slice()
        .read_to_end(&mut key)
        .unwrap();
    keyward_core::recovery_key::parse(&key).unwrap();
    assert!(inst.opens(u64::from(slot), &key));
    assert_eq!(recovery_state(&inst), vec!["pending"]);
    // Idempotent: the same rotation again.
    assert_eq!(
        begin(),
        (slot, rotation.clone(), ciphertext.clone(), sha.clone())
    );
    // The helper never wrote the plaintext anywhere but its root-only pending file.
    let audit = inst.audit_lines().join("\n");
    assert!(!audit.contains(std::str::from_utf8(&key).unwrap()));

    let commit = |r: Receipt| {
        helper_client::call(
            &socket,
            Request::RecoveryEscrowCommit {
                volume: volume.clone(),
                receipt: r,
            },
        )
    };
    let forger = SigningKey::from_bytes(&[8u8; 32]);
    let bad = [
        (
            "forged",
            sign(&forger, "dev-1", "data", &rotation, &sha, "e-1"),
        ),
        (
            "another device",
            sign(&server, "dev-2", "data", &rotation, &sha, "e-1"),
        ),
        (
            "another volume",
            sign(&server, "dev-1", "other", &rotation, &sha, "e-1"),
        ),
        (
            "another rotation",
            sign(
                &server,
                "dev-1",
                "data",
                "0123456789abcdef0123456789abcdef",
                &sha,
                "e-1",
            ),
        ),
        (
            "another ciphertext",
            sign(&server, "dev-1", "data", &rotation, &"0".repeat(64), "e-1"),
        ),
        ("tampered after signing", {
            let mut r = sign(&server, "dev-1", "data", &rotation, &sha, "e-1");
            r.escrow_id = "e-2".into();
            r
        }),
    ];
    for (what, receipt) in bad {
        let e = commit(receipt).expect_err(what);
        assert_eq!(e.code, 4, "{what}: {e}");
        assert_eq!(
            recovery_state(&inst),
            vec!["pending"],
            "{what}: nothing committed"
        );
    }

    // The genuine receipt commits, recording the escrow id in the header.
    match commit(sign(&server, "dev-1", "data", &rotation, &sha, "e-1")).unwrap() {
        Reply::RecoveryCommitted { slot: s, .. } => assert_eq!(s, slot),
        other => panic!("{other:?}"),
    }
    assert_eq!(recovery_state(&inst), vec!["active"]);
    assert!(inst.opens(u64::from(slot), &key));
    let meta = inst.metadata();
    let token = meta["tokens"]
        .as_object()
        .unwrap()
        .values()
        .find(|t| t["role"] == "recovery")
        .unwrap()
        .clone();
    assert_eq!(token["escrow"]["id"], "e-1");
    assert_eq!(token["escrow"]["sha256"], sha.as_str());
    assert!(
        !inst.path("state/pending/data").exists()
            && !inst.path("state/pending/data.escrow").exists()
    );
    // A replayed receipt finds nothing to commit.
    let e = commit(sign(&server, "dev-1", "data", &rotation, &sha, "e-1")).expect_err("replay");
    assert_eq!(e.code, 1, "{e}");
}
