//! A simulated device: its own Ed25519 key, enrolled with a single-use token, and the signed
//! requests it sends, built the way the agent builds them (keyward-agent's `escrow.rs` and
//! check-in): an escrow PUT with a random rotation id, a fresh nonce and an age-sized
//! ciphertext (random bytes, or a real key sealed to the server's age recipient); a check-in
//! POST with the report a laptop with one encrypted volume sends. Owns request construction
//! and enrollment; the timing loop lives in `run`.

use base64::Engine;
use ed25519_dalek::{Signer, SigningKey};
use keyward_core::escrow::request_message;
use keyward_core::schedule::{CheckIn, RecoveryState, ServiceHealth, VolumeCheckIn};
use keyward_core::VolumeName;
use sha2::Digest;

use crate::error::LoadError;
use crate::http::Conn;

/// Bytes of ciphertext per escrow without a recipient: an age file holding one recovery key
/// to one X25519 recipient is about this size.
const CIPHERTEXT_LEN: usize = 400;
/// Lets a reader of the database see what the rows are.
const AGE_HEADER: &[u8] = b"age-encryption.org/v1\n";

pub(crate) fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

pub(crate) use keyward_core::hex::encode as hex;

/// An enrolled device.
#[derive(Debug)]
pub struct Device {
    /// The id the server gave it.
    pub id: String,
    key: SigningKey,
}

/// What an escrow carries.
pub enum Sealer {
    /// Random bytes behind an age header: costs nothing, decrypts to nothing.
    Random,
    /// A random recovery key sealed to the server's recipient, as the helper does: the server
    /// can decrypt it (for the durability check).
    Age(age::x25519::Recipient),
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Sealer::Random => "Random",
            Sealer::Age(_) => "Age",
        })
    }
}

/// A request, signed and ready to send.
#[derive(Debug)]
pub struct Signed {
    /// `PUT` or `POST`.
    pub method: &'static str,
    /// Path and query, the part the signature covers.
    pub path: String,
    /// `(name, value)` of the three signature headers.
    pub headers: [(&'static str, String); 3],
    /// The JSON body.
    pub body: String,
}

/// One escrow PUT and what its receipt must name.
#[derive(Debug)]
pub struct EscrowPut {
    /// The request.
    pub req: Signed,
    /// The rotation id.
    pub rotation_id: String,
    /// Hex SHA-256 of the ciphertext.
    pub sha256: String,
    /// Hex SHA-256 of the sealed key, when it is a real one.
    pub key_sha256: Option<String>,
}

fn random<const N: usize>() -> Result<[u8; N], getrandom::Error> {
    let mut b = [0u8; N];
    getrandom::fill(&mut b)?;
    Ok(b)
}

impl Device {
    /// A device with a new random key, not enrolled yet.
    pub fn generate() -> Result<SigningKey, LoadError> {
        Ok(SigningKey::from_bytes(
            &random::<32>().map_err(LoadError::Random)?,
        ))
    }

    /// A device enrolled before (from a devices file).
    pub fn known(id: String, key: SigningKey) -> Self {
        Device { id, key }
    }

    /// Its signing key's seed, for a devices file.
    pub fn secret(&self) -> [u8; 32] {
        self.key.to_bytes()
    }

    /// Enroll `key` with `token` over `conn`.
    pub fn enroll(
        conn: &mut Conn,
        index: usize,
        token: &str,
        key: SigningKey,
    ) -> Result<Self, LoadError> {
        let body = serde_json::json!({
            "token": token,
            "device_key": b64().encode(key.verifying_key().to_bytes()),
        });
        let (status, text) = conn
            .send("POST", "/v1/enroll", &[], body.to_string().as_bytes())
            .map_err(|source| LoadError::Transport { index, source })?;
        let text = String::from_utf8_lossy(&text);
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

    fn sign(
        &self,
        method: &'static str,
        path: String,
        body: String,
        now_secs: u64,
    ) -> Result<Signed, getrandom::Error> {
        let nonce = hex(&random::<16>()?);
        let signature = self.key.sign(&request_message(
            method,
            &path,
            now_secs,
            &nonce,
            body.as_bytes(),
        ));
        Ok(Signed {
            method,
            path,
            headers: [
                ("x-keyward-timestamp", now_secs.to_string()),
                ("x-keyward-nonce", nonce),
                ("x-keyward-signature", b64().encode(signature.to_bytes())),
            ],
            body,
        })
    }

    /// A signed escrow PUT of a fresh ciphertext for `volume`, stamped `now_secs`.
    pub fn escrow_put(
        &self,
        volume: &str,
        sealer: &Sealer,
        now_secs: u64,
    ) -> Result<EscrowPut, LoadError> {
        let rotation_id = hex(&random::<12>().map_err(LoadError::Random)?);
        let (ciphertext, key_sha256) = match sealer {
            Sealer::Random => {
                let mut c = vec![0u8; CIPHERTEXT_LEN];
                c[..AGE_HEADER.len()].copy_from_slice(AGE_HEADER);
                getrandom::fill(&mut c[AGE_HEADER.len()..]).map_err(LoadError::Random)?;
                (c, None)
            }
            Sealer::Age(recipient) => {
                let key = hex(&random::<32>().map_err(LoadError::Random)?);
                let sealed = age::encrypt(recipient, key.as_bytes()).map_err(LoadError::Seal)?;
                (sealed, Some(hex(&sha2::Sha256::digest(key.as_bytes()))))
            }
        };
        let sha256 = hex(&sha2::Sha256::digest(&ciphertext));
        let path = format!("/v1/devices/{}/escrow/{volume}", self.id);
        let body = serde_json::json!({
            "rotation_id": rotation_id,
            "ciphertext": b64().encode(&ciphertext),
            "sha256": sha256,
        })
        .to_string();
        Ok(EscrowPut {
            req: self
                .sign("PUT", path, body, now_secs)
                .map_err(LoadError::Random)?,
            rotation_id,
            sha256,
            key_sha256,
        })
    }

    /// A signed check-in: `volume` escrowed as `escrow_id` (or its rotation pending, without
    /// one) since `rotated_at` (Unix seconds), service secret verified, three unlock holders,
    /// no violations.
    pub fn checkin_post(
        &self,
        volume: &VolumeName,
        escrow_id: Option<&str>,
        rotated_at: u64,
        now_secs: u64,
    ) -> Result<Signed, LoadError> {
        let recovery = match escrow_id {
            Some(_) => RecoveryState::Escrowed,
            None => RecoveryState::Pending,
        };
        let report = CheckIn {
            volumes: vec![VolumeCheckIn {
                volume: volume.clone(),
                recovery,
                escrow_id: escrow_id.map(str::to_owned),
                rotated_at: Some(rotated_at),
                service: ServiceHealth::Ok,
                holders: 3,
                violations: 0,
            }],
            commands: Vec::new(),
        };
        let body = serde_json::to_string(&report).map_err(|e| LoadError::Json(e.to_string()))?;
        let path = format!("/v1/devices/{}/checkin", self.id);
        self.sign("POST", path, body, now_secs)
            .map_err(LoadError::Random)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use ed25519_dalek::{Signature, VerifyingKey};

    fn device() -> Device {
        Device::known("dev-0123".into(), SigningKey::from_bytes(&[7u8; 32]))
    }

    fn verifies(d: &Device, req: &Signed, ts: u64) {
        let [(_, t), (_, nonce), (_, sig)] = &req.headers;
        assert_eq!(t, &ts.to_string());
        assert!(nonce.len() >= 16);
        let sig: [u8; 64] = b64().decode(sig).unwrap().try_into().unwrap();
        let vk: VerifyingKey = d.key.verifying_key();
        let msg = request_message(req.method, &req.path, ts, nonce, req.body.as_bytes());
        vk.verify_strict(&msg, &Signature::from_bytes(&sig))
            .unwrap();
    }

    #[test]
    fn escrow_put_is_signed_over_what_is_sent() {
        let d = device();
        let put = d
            .escrow_put("data", &Sealer::Random, 1_700_000_000)
            .unwrap();
        assert_eq!(put.req.path, "/v1/devices/dev-0123/escrow/data");
        assert_eq!(put.req.method, "PUT");
        verifies(&d, &put.req, 1_700_000_000);
    }

    #[test]
    fn body_carries_an_age_sized_ciphertext_and_its_digest() {
        let put = device().escrow_put("data", &Sealer::Random, 1).unwrap();
        let v: serde_json::Value = serde_json::from_str(&put.req.body).unwrap();
        let ct = b64().decode(v["ciphertext"].as_str().unwrap()).unwrap();
        assert_eq!(ct.len(), CIPHERTEXT_LEN);
        assert!(ct.starts_with(AGE_HEADER));
        assert_eq!(v["sha256"], hex(&sha2::Sha256::digest(&ct)));
        assert_eq!(v["rotation_id"], put.rotation_id.as_str());
        assert_eq!(put.key_sha256, None);
    }

    #[test]
    fn a_sealed_key_decrypts_with_the_servers_identity() {
        let id = age::x25519::Identity::generate();
        let put = device()
            .escrow_put("data", &Sealer::Age(id.to_public()), 1)
            .unwrap();
        let v: serde_json::Value = serde_json::from_str(&put.req.body).unwrap();
        let ct = b64().decode(v["ciphertext"].as_str().unwrap()).unwrap();
        let key = age::decrypt(&id, &ct).unwrap();
        assert_eq!(put.key_sha256.unwrap(), hex(&sha2::Sha256::digest(&key)));
    }

    #[test]
    fn each_put_is_a_new_rotation_with_a_new_nonce() {
        let d = device();
        let (a, b) = (
            d.escrow_put("data", &Sealer::Random, 1).unwrap(),
            d.escrow_put("data", &Sealer::Random, 1).unwrap(),
        );
        assert_ne!(a.rotation_id, b.rotation_id);
        assert_ne!(a.req.headers[1].1, b.req.headers[1].1);
    }

    #[test]
    fn checkin_is_a_signed_report_the_server_parses() {
        let d = device();
        let volume = VolumeName::parse("data").unwrap();
        let req = d
            .checkin_post(&volume, Some("esc-1"), 5, 1_700_000_000)
            .unwrap();
        assert_eq!(req.path, "/v1/devices/dev-0123/checkin");
        assert_eq!(req.method, "POST");
        verifies(&d, &req, 1_700_000_000);
        let report: CheckIn = serde_json::from_str(&req.body).unwrap();
        assert_eq!(report.volumes[0].escrow_id.as_deref(), Some("esc-1"));
    }
}
