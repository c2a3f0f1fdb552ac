//! A simulated device: its own Ed25519 key, enrolled with a single-use token, and the signed
//! escrow PUTs it sends, built the way the agent builds them (keyward-agent's `escrow.rs`):
//! random rotation id, fresh nonce, age-sized ciphertext. Owns request construction and
//! enrollment; the timing loop lives in `run`.

use base64::Engine;
use ed25519_dalek::{Signer, SigningKey};
use keyward_core::escrow::{request_message, Receipt};
use sha2::Digest;

use crate::error::LoadError;

/// Bytes of ciphertext per escrow: an age file holding one recovery key to one X25519
/// recipient is about this size.
const CIPHERTEXT_LEN: usize = 400;
/// Lets a reader of the database see what the rows are.
const AGE_HEADER: &[u8] = b"age-encryption.org/v1\n";

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// An enrolled device.
#[derive(Debug)]
pub struct Device {
    /// The id the server gave it.
    pub id: String,
    key: SigningKey,
}

/// One escrow PUT, signed and ready to send.
#[derive(Debug)]
pub struct SignedPut {
    /// Path and query, the part the signature covers.
    pub path: String,
    /// `(name, value)` of the three signature headers.
    pub headers: [(&'static str, String); 3],
    /// The JSON body.
    pub body: String,
    /// What the receipt must name.
    pub rotation_id: String,
    /// Hex SHA-256 of the ciphertext, which the receipt must name too.
    pub sha256: String,
}

impl SignedPut {
    /// Whether `receipt` is the answer to this request (its signature is not checked: that
    /// would cost the load generator more CPU than the server spends signing it).
    pub fn answered_by(&self, device: &str, receipt: &Receipt) -> bool {
        receipt.device == device
            && receipt.rotation_id == self.rotation_id
            && receipt.sha256 == self.sha256
            && !receipt.escrow_id.is_empty()
    }
}

fn random<const N: usize>() -> Result<[u8; N], getrandom::Error> {
    let mut b = [0u8; N];
    getrandom::fill(&mut b)?;
    Ok(b)
}

impl Device {
    /// Make a key and enroll it with `token` at `base` (`http://host:port`, no trailing `/`).
    pub fn enroll(
        agent: &ureq::Agent,
        base: &str,
        index: usize,
        token: &str,
    ) -> Result<Self, LoadError> {
        let key = SigningKey::from_bytes(&random::<32>().map_err(LoadError::Random)?);
        let body = serde_json::json!({
            "token": token,
            "device_key": b64().encode(key.verifying_key().to_bytes()),
        });
        let transport = |source| LoadError::Transport { index, source };
        let mut resp = agent
            .post(format!("{base}/v1/enroll"))
            .header("content-type", "application/json")
            .send(body.to_string())
            .map_err(transport)?;
        let status = resp.status().as_u16();
        let text = resp
            .body_mut()
            .with_config()
            .limit(64 * 1024)
            .read_to_string()
            .map_err(transport)?;
        if status != 200 {
            let body = text.trim().chars().take(200).collect();
            return Err(LoadError::Refused {
                index,
                status,
                body,
            });
        }
        let id = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v["device_id"].as_str().map(str::to_owned))
            .ok_or(LoadError::NoDeviceId(index))?;
        Ok(Device { id, key })
    }

    /// A signed escrow PUT of a fresh random ciphertext for `volume`, stamped `now_secs`.
    pub fn escrow_put(&self, volume: &str, now_secs: u64) -> Result<SignedPut, getrandom::Error> {
        let rotation_id = hex(&random::<12>()?);
        let nonce = hex(&random::<16>()?);
        let mut ciphertext = [0u8; CIPHERTEXT_LEN];
        ciphertext[..AGE_HEADER.len()].copy_from_slice(AGE_HEADER);
        getrandom::fill(&mut ciphertext[AGE_HEADER.len()..])?;
        let sha256 = hex(&sha2::Sha256::digest(ciphertext));
        let path = format!("/v1/devices/{}/escrow/{volume}", self.id);
        let body = serde_json::json!({
            "rotation_id": rotation_id,
            "ciphertext": b64().encode(ciphertext),
            "sha256": sha256,
        })
        .to_string();
        let signature = self.key.sign(&request_message(
            "PUT",
            &path,
            now_secs,
            &nonce,
            body.as_bytes(),
        ));
        Ok(SignedPut {
            path,
            headers: [
                ("x-keyward-timestamp", now_secs.to_string()),
                ("x-keyward-nonce", nonce),
                ("x-keyward-signature", b64().encode(signature.to_bytes())),
            ],
            body,
            rotation_id,
            sha256,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use ed25519_dalek::{Signature, VerifyingKey};

    fn device() -> Device {
        Device {
            id: "dev-0123".into(),
            key: SigningKey::from_bytes(&[7u8; 32]),
        }
    }

    #[test]
    fn escrow_put_is_signed_over_what_is_sent() {
        let d = device();
        let put = d.escrow_put("data", 1_700_000_000).unwrap();
        assert_eq!(put.path, "/v1/devices/dev-0123/escrow/data");
        let [(_, ts), (_, nonce), (_, sig)] = &put.headers;
        assert_eq!(ts, "1700000000");
        assert!(nonce.len() >= 16);
        let sig: [u8; 64] = b64().decode(sig).unwrap().try_into().unwrap();
        let vk: VerifyingKey = d.key.verifying_key();
        let msg = request_message("PUT", &put.path, 1_700_000_000, nonce, put.body.as_bytes());
        vk.verify_strict(&msg, &Signature::from_bytes(&sig))
            .unwrap();
    }

    #[test]
    fn body_carries_an_age_sized_ciphertext_and_its_digest() {
        let put = device().escrow_put("data", 1).unwrap();
        let v: serde_json::Value = serde_json::from_str(&put.body).unwrap();
        let ct = b64().decode(v["ciphertext"].as_str().unwrap()).unwrap();
        assert_eq!(ct.len(), CIPHERTEXT_LEN);
        assert!(ct.starts_with(AGE_HEADER));
        assert_eq!(v["sha256"], hex(&sha2::Sha256::digest(&ct)));
        assert_eq!(v["rotation_id"], put.rotation_id.as_str());
    }

    #[test]
    fn each_put_is_a_new_rotation_with_a_new_nonce() {
        let d = device();
        let (a, b) = (
            d.escrow_put("data", 1).unwrap(),
            d.escrow_put("data", 1).unwrap(),
        );
        assert_ne!(a.rotation_id, b.rotation_id);
        assert_ne!(a.headers[1].1, b.headers[1].1);
    }
}
