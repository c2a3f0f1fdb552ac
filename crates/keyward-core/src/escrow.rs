//! Escrow receipts (DESIGN.md section 5): the escrow server signs, with its Ed25519 key, the
//! tuple (device, volume, rotation id, SHA-256 of the ciphertext, escrow id). The helper commits
//! a recovery rotation only on a receipt that verifies against the key pinned in the root-owned
//! config and names this device, this volume, this rotation and this ciphertext. Pure.

use base64::Engine;
use ed25519_dalek::{Signature, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::ids::VolumeName;

/// Domain separation for the signed message.
const CONTEXT: &str = "keyward escrow receipt v1";

/// The server's signed statement that it holds the escrowed key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    /// The device the key belongs to.
    pub device: String,
    /// The volume.
    pub volume: VolumeName,
    /// The rotation the helper started.
    pub rotation_id: String,
    /// Lowercase hex SHA-256 of the ciphertext the server stored.
    pub sha256: String,
    /// The server's id for the escrowed key.
    pub escrow_id: String,
    /// Ed25519 signature over [`Receipt::message`].
    pub signature: Vec<u8>,
}

/// Why a receipt was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReceiptError {
    /// The pinned server key in the config is not a valid Ed25519 public key.
    #[error("the configured server signing key is not a valid Ed25519 public key")]
    BadServerKey,
    /// The signature does not verify: forged, or signed by another server.
    #[error("the receipt's signature does not verify against the pinned server key")]
    BadSignature,
    /// Signed, but for another device, volume, rotation or ciphertext.
    #[error("the receipt is for another {0}")]
    Mismatch(&'static str),
    /// A field is malformed.
    #[error("the receipt's {0} is malformed")]
    Malformed(&'static str),
}

fn token_ok(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The server's pinned Ed25519 public key (base64 of 32 bytes, `[escrow] server_signing_key`),
/// shared by receipts and signed commands; `None` if it is not a valid key.
pub(crate) fn pinned_key(server_key_b64: &str) -> Option<VerifyingKey> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(server_key_b64.trim())
        .ok()?;
    let bytes: [u8; 32] = bytes.try_into().ok()?;
    VerifyingKey::from_bytes(&bytes).ok()
}

impl Receipt {
    /// The exact bytes the server signs: one field per line after a context line, each field
    /// restricted to `[A-Za-z0-9_-]`, so no two tuples share a message.
    pub fn message(
        device: &str,
        volume: &VolumeName,
        rotation_id: &str,
        sha256: &str,
        escrow_id: &str,
    ) -> Vec<u8> {
        format!("{CONTEXT}\n{device}\n{volume}\n{rotation_id}\n{sha256}\n{escrow_id}\n")
            .into_bytes()
    }

    /// Verify the receipt against the pinned key (base64 of 32 bytes) and what the helper
    /// expects: its device id, the volume, the pending rotation and its ciphertext digest.
    pub fn verify(
        &self,
        server_key_b64: &str,
        device: &str,
        volume: &VolumeName,
        rotation_id: &str,
        sha256: &str,
    ) -> Result<(), ReceiptError> {
        for (field, v) in [
            ("device", &self.device),
            ("rotation id", &self.rotation_id),
            ("escrow id", &self.escrow_id),
        ] {
            if !token_ok(v) {
                return Err(ReceiptError::Malformed(field));
            }
        }
        if self.sha256.len() != 64
            || !self
                .sha256
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        {
            return Err(ReceiptError::Malformed("sha256"));
        }
        let key = pinned_key(server_key_b64).ok_or(ReceiptError::BadServerKey)?;
        let sig: [u8; 64] = self
            .signature
            .clone()
            .try_into()
            .map_err(|_| ReceiptError::BadSignature)?;
        let msg = Self::message(
            &self.device,
            &self.volume,
            &self.rotation_id,
            &self.sha256,
            &self.escrow_id,
        );
        key.verify_strict(&msg, &Signature::from_bytes(&sig))
            .map_err(|_| ReceiptError::BadSignature)?;
        // Only a genuine receipt gets this far; now it must be *ours*.
        if self.device != device {
            return Err(ReceiptError::Mismatch("device"));
        }
        if &self.volume != volume {
            return Err(ReceiptError::Mismatch("volume"));
        }
        if self.rotation_id != rotation_id {
            return Err(ReceiptError::Mismatch("rotation"));
        }
        if self.sha256 != sha256 {
            return Err(ReceiptError::Mismatch("ciphertext"));
        }
        Ok(())
    }
}

/// What a device signs for every request after enrollment: method, path, time, a single-use
/// nonce and the body's digest, after a context line. The server refuses stale times and
/// reused nonces, so a captured request cannot be replayed or redirected to another path.
pub fn request_message(
    method: &str,
    path: &str,
    timestamp: u64,
    nonce: &str,
    body: &[u8],
) -> Vec<u8> {
    let digest = crate::hex::sha256(body);
    format!("keyward device request v1\n{method}\n{path}\n{timestamp}\n{nonce}\n{digest}\n")
        .into_bytes()
}
