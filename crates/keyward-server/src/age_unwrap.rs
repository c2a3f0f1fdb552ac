//! The server's age X25519 identity as the escrow check (`age_check.rs`) unwraps with it: the
//! X25519 recipient stanza of c2sp.org/age, unwrapped exactly as the `age` crate's
//! `x25519::Identity` does (canonical stanza, contributory shared secret, HKDF-SHA-256 salted
//! with both public keys, ChaCha20-Poly1305), but with the identity's own public key computed
//! once, when the identity is loaded. The `age` crate recomputes it (a base-point
//! multiplication and a field inversion) for every stanza it unwraps, which was a fifth of the
//! check's cost per escrow. Header parsing, the header MAC and the payload stay the `age`
//! crate's (this is only an `age::Identity` handed to its `Decryptor`). Secrets are wiped on
//! drop; nothing is logged.

use age::secrecy::ExposeSecret;
use age::DecryptError;
use age_core::format::{FileKey, Stanza, FILE_KEY_BYTES};
use base64::Engine;
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroizing;

/// The stanza tag and the HKDF label of age's X25519 recipient type.
const TAG: &str = "X25519";
const LABEL: &[u8] = b"age-encryption.org/v1/X25519";
/// The Bech32 human-readable part of an age secret key.
const SECRET_KEY_HRP: &str = "age-secret-key-";

/// The identity, with its public key.
pub struct Unwrapper {
    secret: StaticSecret,
    public: PublicKey,
}

impl Unwrapper {
    /// The unwrapper for `identity` (its secret read back from its `AGE-SECRET-KEY-1…` form).
    pub fn new(identity: &age::x25519::Identity) -> Result<Self, String> {
        use bech32::FromBase32 as _;
        let encoded = identity.to_string();
        let (hrp, data, variant) = bech32::decode(encoded.expose_secret())
            .map_err(|_| "identity: the age identity is not Bech32".to_owned())?;
        if hrp != SECRET_KEY_HRP || variant != bech32::Variant::Bech32 {
            return Err("identity: not an age X25519 identity".into());
        }
        let bytes = Zeroizing::new(
            Vec::<u8>::from_base32(&data)
                .map_err(|_| "identity: the age identity is not Bech32".to_owned())?,
        );
        let seed: Zeroizing<[u8; 32]> = Zeroizing::new(
            bytes
                .as_slice()
                .try_into()
                .map_err(|_| "identity: the age identity is not 32 bytes".to_owned())?,
        );
        let secret = StaticSecret::from(*seed);
        let public = PublicKey::from(&secret);
        Ok(Unwrapper { secret, public })
    }
}

impl age::Identity for Unwrapper {
    fn unwrap_stanza(&self, stanza: &Stanza) -> Option<Result<FileKey, DecryptError>> {
        if stanza.tag != TAG {
            return None;
        }
        // Canonical form only: one argument, unpadded base64 of exactly 32 bytes, and a body
        // of a wrapped file key and its tag.
        let [arg] = &stanza.args[..] else {
            return Some(Err(DecryptError::InvalidHeader));
        };
        let Some(epk) = base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(arg)
            .ok()
            .and_then(|b| <[u8; 32]>::try_from(b).ok())
        else {
            return Some(Err(DecryptError::InvalidHeader));
        };
        if stanza.body.len() != FILE_KEY_BYTES + 16 {
            return Some(Err(DecryptError::InvalidHeader));
        }
        let epk = PublicKey::from(epk);
        let shared = self.secret.diffie_hellman(&epk);
        if !shared.was_contributory() {
            return Some(Err(DecryptError::InvalidHeader));
        }
        let mut salt = [0u8; 64];
        salt[..32].copy_from_slice(epk.as_bytes());
        salt[32..].copy_from_slice(self.public.as_bytes());
        let key = Zeroizing::new(age_core::primitives::hkdf(&salt, LABEL, shared.as_bytes()));
        // Not ours (or tampered with): another identity may still unwrap another stanza.
        let file_key = Zeroizing::new(
            age_core::primitives::aead_decrypt(&key, FILE_KEY_BYTES, &stanza.body).ok()?,
        );
        Some(Ok(FileKey::init_with_mut(|k| k.copy_from_slice(&file_key))))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// Whatever the `age` crate's identity decrypts, this one decrypts to the same bytes (the
    /// HKDF salt holds the identity's public key, so a wrong one decrypts nothing); what it
    /// refuses, this one refuses.
    #[test]
    fn unwraps_exactly_what_the_age_identity_unwraps() {
        let ours = age::x25519::Identity::generate();
        let unwrapper = Unwrapper::new(&ours).unwrap();
        let decrypt = |ct: &[u8], id: &dyn age::Identity| {
            age::Decryptor::new(ct)
                .ok()?
                .decrypt(std::iter::once(id))
                .ok()
                .and_then(|mut r| {
                    let mut out = vec![];
                    std::io::Read::read_to_end(&mut r, &mut out).ok()?;
                    Some(out)
                })
        };
        let good = age::encrypt(&ours.to_public(), b"recovery key").unwrap();
        assert_eq!(
            decrypt(&good, &unwrapper).as_deref(),
            Some(&b"recovery key"[..])
        );
        let other = age::x25519::Identity::generate();
        let theirs = age::encrypt(&other.to_public(), b"recovery key").unwrap();
        assert_eq!(decrypt(&theirs, &unwrapper), None);
        assert_eq!(decrypt(&theirs, &ours), None);
        // One bit of the wrapped file key flipped: neither unwraps it.
        let text = String::from_utf8_lossy(&good).into_owned();
        let body_at = text.find("\n-> X25519 ").unwrap() + 1;
        let body_at = body_at + text[body_at..].find('\n').unwrap() + 1;
        let mut bad = good.clone();
        bad[body_at] = if bad[body_at] == b'A' { b'B' } else { b'A' };
        assert_eq!(decrypt(&bad, &unwrapper), None);
        assert_eq!(decrypt(&bad, &ours), None);
    }
}
