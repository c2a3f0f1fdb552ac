//! The server's identity: an age X25519 identity (escrowed keys are encrypted to it) and an
//! Ed25519 key (it signs receipts). One JSON file, 0600, written once by `keyward-server init`.

use std::path::Path;
use std::str::FromStr;

use base64::Engine;
use ed25519_dalek::SigningKey;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

/// Name of the identity file in the state directory.
pub const FILE: &str = "identity.json";

#[derive(Serialize, Deserialize)]
struct Stored {
    age_identity: String,
    signing_key: String,
}

/// The loaded identity.
pub struct Identity {
    /// Decrypts escrowed keys.
    pub age: age::x25519::Identity,
    /// The same age identity with its public key computed once, for the escrow check.
    pub unwrapper: crate::age_unwrap::Unwrapper,
    /// Signs receipts.
    pub signing: SigningKey,
}

impl Identity {
    /// Make a new identity and write it to `dir/identity.json` (refusing to overwrite one).
    pub fn create(dir: &Path) -> Result<Self, String> {
        use age::secrecy::ExposeSecret;
        let age = age::x25519::Identity::generate();
        let mut seed = Zeroizing::new([0u8; 32]);
        getrandom::fill(seed.as_mut_slice()).map_err(|e| e.to_string())?;
        let signing = SigningKey::from_bytes(&seed);
        let stored = Stored {
            age_identity: age.to_string().expose_secret().to_owned(),
            signing_key: base64::engine::general_purpose::STANDARD.encode(seed.as_slice()),
        };
        let json = Zeroizing::new(serde_json::to_vec(&stored).map_err(|e| e.to_string())?);
        if dir.join(FILE).exists() {
            return Err(format!(
                "{} already exists; refusing to replace the server identity",
                dir.join(FILE).display()
            ));
        }
        keyward_sys::safe_fs::write_atomic(dir, FILE, &json, 0o600).map_err(|e| e.to_string())?;
        let unwrapper = crate::age_unwrap::Unwrapper::new(&age)?;
        Ok(Identity {
            age,
            unwrapper,
            signing,
        })
    }

    /// Load it (owner-only file, or refused).
    pub fn load(dir: &Path) -> Result<Self, String> {
        Self::parse(&Self::raw(dir)?)
    }

    /// The identity file's bytes (owner-only file, or refused), for a backup.
    pub fn raw(dir: &Path) -> Result<Zeroizing<Vec<u8>>, String> {
        let uid = keyward_sys::hardening::effective_uid();
        let bytes = keyward_sys::safe_fs::read_checked(
            &dir.join(FILE),
            keyward_sys::safe_fs::Expect::private(uid),
            1 << 16,
        )
        .map_err(|e| format!("identity: {e}"))?
        .ok_or("no identity: run `keyward-server init` first")?;
        Ok(Zeroizing::new(bytes))
    }

    /// Write an identity file restored from a backup (checked first; never over another).
    pub fn install(dir: &Path, bytes: &[u8]) -> Result<Self, String> {
        let id = Self::parse(bytes)?;
        if dir.join(FILE).exists() {
            return Err(format!(
                "{} already exists; restore into an empty state directory",
                dir.join(FILE).display()
            ));
        }
        keyward_sys::safe_fs::write_atomic(dir, FILE, bytes, 0o600).map_err(|e| e.to_string())?;
        Ok(id)
    }

    fn parse(bytes: &[u8]) -> Result<Self, String> {
        let stored: Stored = serde_json::from_slice(bytes).map_err(|e| format!("identity: {e}"))?;
        let age = age::x25519::Identity::from_str(&stored.age_identity)
            .map_err(|e| format!("identity: {e}"))?;
        let seed = Zeroizing::new(
            base64::engine::general_purpose::STANDARD
                .decode(&stored.signing_key)
                .map_err(|e| format!("identity: {e}"))?,
        );
        let seed: [u8; 32] = seed
            .as_slice()
            .try_into()
            .map_err(|_| "identity: bad signing key")?;
        let unwrapper = crate::age_unwrap::Unwrapper::new(&age)?;
        Ok(Identity {
            age,
            unwrapper,
            signing: SigningKey::from_bytes(&seed),
        })
    }

    /// The lines a device's keyward.toml needs.
    pub fn public_config(&self) -> String {
        let key = base64::engine::general_purpose::STANDARD
            .encode(self.signing.verifying_key().to_bytes());
        format!(
            "recipient = \"{}\"\nserver_signing_key = \"{key}\"\n",
            self.age.to_public()
        )
    }
}
