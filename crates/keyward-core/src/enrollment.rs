//! The escrow server's answer to an enrollment: the device id it gave the new device key, and
//! its Ed25519 signature over both. A device enrolls only when that signature verifies against
//! the server key pinned in the root-owned config, so it never enrolls with a server whose
//! receipts and commands its helper would refuse (a mistyped URL, an impostor, a replayed
//! answer for another key). The device id must also be safe to put in a URL path and a file:
//! 1-64 of `[A-Za-z0-9_-]`, the rule the helper applies to it too. Pure.

use base64::Engine;
use ed25519_dalek::{Signature, Signer, SigningKey};
use serde::{Deserialize, Serialize};

/// Domain separation for the signed message.
const CONTEXT: &str = "keyward enrollment v1";

/// What `POST /v1/enroll` answers with 200.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrollmentAnswer {
    /// The id the server gave the device.
    pub device_id: String,
    /// Base64 Ed25519 signature over [`EnrollmentAnswer::message`].
    pub signature: String,
}

/// Why an enrollment answer was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EnrollmentError {
    /// The device id is empty, too long, or holds a character outside `[A-Za-z0-9_-]`.
    #[error("the server's device id is not 1-64 of A-Z, a-z, 0-9, '-' and '_'")]
    BadDeviceId,
    /// The pinned server key in the config is not a valid Ed25519 public key.
    #[error("the configured server signing key is not a valid Ed25519 public key")]
    BadServerKey,
    /// The signature does not verify: another server, or an answer for another device key.
    #[error("the server's enrollment answer is not signed by the pinned server key")]
    BadSignature,
}

/// Whether `id` may name a device (in a URL path, a file, an audit record).
pub fn device_id_ok(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl EnrollmentAnswer {
    /// The exact bytes the server signs: the device id and the device's public key.
    pub fn message(device_id: &str, device_key: &[u8; 32]) -> Vec<u8> {
        let key = base64::engine::general_purpose::STANDARD.encode(device_key);
        format!("{CONTEXT}\n{device_id}\n{key}\n").into_bytes()
    }

    /// The server's side (also used by tests).
    pub fn sign(device_id: &str, device_key: &[u8; 32], server: &SigningKey) -> Self {
        let signature = server.sign(&Self::message(device_id, device_key));
        EnrollmentAnswer {
            device_id: device_id.to_owned(),
            signature: base64::engine::general_purpose::STANDARD.encode(signature.to_bytes()),
        }
    }

    /// Check the answer for `device_key` against the pinned key (base64 of 32 bytes).
    pub fn verify(
        &self,
        server_key_b64: &str,
        device_key: &[u8; 32],
    ) -> Result<(), EnrollmentError> {
        if !device_id_ok(&self.device_id) {
            return Err(EnrollmentError::BadDeviceId);
        }
        let key = crate::escrow::pinned_key(server_key_b64).ok_or(EnrollmentError::BadServerKey)?;
        let sig: [u8; 64] = base64::engine::general_purpose::STANDARD
            .decode(self.signature.trim())
            .ok()
            .and_then(|s| s.try_into().ok())
            .ok_or(EnrollmentError::BadSignature)?;
        key.verify_strict(
            &Self::message(&self.device_id, device_key),
            &Signature::from_bytes(&sig),
        )
        .map_err(|_| EnrollmentError::BadSignature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> SigningKey {
        SigningKey::from_bytes(&[n; 32])
    }

    fn pinned(k: &SigningKey) -> String {
        base64::engine::general_purpose::STANDARD.encode(k.verifying_key().to_bytes())
    }

    #[test]
    fn only_the_pinned_servers_answer_for_this_key_verifies() {
        let (server, device, other) = (key(1), [7u8; 32], [8u8; 32]);
        let answer = EnrollmentAnswer::sign("dev-1", &device, &server);
        assert_eq!(answer.verify(&pinned(&server), &device), Ok(()));
        // Another server, or the same answer replayed to a device with another key.
        assert_eq!(
            answer.verify(&pinned(&key(2)), &device),
            Err(EnrollmentError::BadSignature)
        );
        assert_eq!(
            answer.verify(&pinned(&server), &other),
            Err(EnrollmentError::BadSignature)
        );
        let mut renamed = answer.clone();
        renamed.device_id = "dev-2".into();
        assert_eq!(
            renamed.verify(&pinned(&server), &device),
            Err(EnrollmentError::BadSignature)
        );
        assert_eq!(
            answer.verify("not a key", &device),
            Err(EnrollmentError::BadServerKey)
        );
    }

    #[test]
    fn a_device_id_is_a_short_safe_name_even_when_signed() {
        let (server, device) = (key(1), [7u8; 32]);
        let long = "a".repeat(65);
        for id in ["", "../x", "a/b", "a\0b", "dév", "a b", long.as_str()] {
            let answer = EnrollmentAnswer::sign(id, &device, &server);
            assert_eq!(
                answer.verify(&pinned(&server), &device),
                Err(EnrollmentError::BadDeviceId),
                "{id:?}"
            );
        }
        assert!(device_id_ok(&"a".repeat(64)) && device_id_ok("dev-AZ_09"));
    }
}
