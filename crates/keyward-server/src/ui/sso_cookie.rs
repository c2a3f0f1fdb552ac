//! A single sign-on under way, kept by the browser that began it and nowhere else: its `state`,
//! nonce, PKCE verifier and start time, sealed (ChaCha20-Poly1305) under a key derived from the
//! server identity's signing key (HKDF-SHA256, a label of its own), so every instance holding
//! the same `identity.json` opens the cookies of the others and nobody else can make or read
//! one. `GET /ui/sso` therefore stores nothing: a stranger can begin as many sign-ins as they
//! like and fill no table. The callback opens the cookie ([`open`]): the query's `state` must
//! be the sealed one (compared in constant time) and the sign-in under ten minutes old. That a
//! sign-in is used once is kept by `ui/db.rs` (`sso_used`), written only after the provider has
//! vouched. Pure: the key, randomness and clock come in.

use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

/// How long a sign-in may take at the provider.
pub const FLOW_SECS: i64 = 600;
/// What the sealed cookie's AEAD binds it to (a cookie of another purpose never opens here).
const AAD: &[u8] = b"keyward-server sso sign-in v1";
/// The HKDF label of the cookie key.
const KEY_LABEL: &[u8] = b"keyward-server sso sign-in cookie key v1";
/// A cookie longer than this is not one of ours (ours are about 300 characters).
const MAX_COOKIE: usize = 2048;

/// The key the sign-in cookies are sealed under.
pub struct CookieKey(Zeroizing<[u8; 32]>);

impl CookieKey {
    /// Derived from the server identity's Ed25519 seed.
    pub fn derive(identity_seed: &[u8; 32]) -> Self {
        let mut key = Zeroizing::new([0u8; 32]);
        let hk = hkdf::Hkdf::<sha2::Sha256>::new(None, identity_seed);
        // 32 bytes is far below HKDF-SHA256's limit of 8160: expand cannot fail.
        if hk.expand(KEY_LABEL, &mut key[..]).is_err() {
            unreachable!("HKDF-SHA256 expands to 32 bytes");
        }
        CookieKey(key)
    }

    fn aead(&self) -> ChaCha20Poly1305 {
        ChaCha20Poly1305::new(Key::from_slice(&self.0[..]))
    }
}

/// A sign-in under way.
#[derive(Serialize, Deserialize)]
pub struct UnderWay {
    /// The `state` parameter sent to the provider.
    pub state: String,
    /// The nonce the ID token must carry.
    pub nonce: String,
    /// The PKCE verifier of the code exchange.
    pub verifier: String,
    /// When it began (Unix seconds).
    pub created: i64,
}

impl Drop for UnderWay {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.verifier);
    }
}

/// Why a callback's cookie signs nobody in.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Missing, cut, tampered with, or sealed under another key.
    #[error("the state is not the one this browser's sign-in began with: no sign-in cookie this server sealed")]
    Unreadable,
    /// Sealed by us, but for another sign-in than the callback's `state`.
    #[error("the state is not the one this browser's sign-in began with")]
    OtherState,
    /// Begun more than [`FLOW_SECS`] ago (or in the future).
    #[error("the sign-in began more than ten minutes ago")]
    Expired,
}

/// The cookie value for `u`, sealed under `key` with the 12 random bytes `nonce`.
pub fn seal(key: &CookieKey, u: &UnderWay, nonce: [u8; 12]) -> Result<String, String> {
    let plain = Zeroizing::new(serde_json::to_vec(u).map_err(|e| e.to_string())?);
    let sealed = key
        .aead()
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: &plain,
                aad: AAD,
            },
        )
        .map_err(|_| "sealing the sign-in cookie failed".to_owned())?;
    let mut out = nonce.to_vec();
    out.extend_from_slice(&sealed);
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(out))
}

/// The sign-in `cookie` holds, if it opens under `key`, is the one `state` names, and began at
/// most [`FLOW_SECS`] before `now`.
pub fn open(key: &CookieKey, cookie: &str, state: &str, now: i64) -> Result<UnderWay, Refusal> {
    if cookie.is_empty() || cookie.len() > MAX_COOKIE {
        return Err(Refusal::Unreadable);
    }
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cookie)
        .map_err(|_| Refusal::Unreadable)?;
    let (nonce, sealed) = raw.split_at_checked(12).ok_or(Refusal::Unreadable)?;
    let plain = Zeroizing::new(
        key.aead()
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: sealed,
                    aad: AAD,
                },
            )
            .map_err(|_| Refusal::Unreadable)?,
    );
    let u: UnderWay = serde_json::from_slice(&plain).map_err(|_| Refusal::Unreadable)?;
    if !super::session::tokens_match(&u.state, state) {
        return Err(Refusal::OtherState);
    }
    if now - u.created > FLOW_SECS || u.created > now + 60 {
        return Err(Refusal::Expired);
    }
    Ok(u)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn under_way(created: i64) -> UnderWay {
        UnderWay {
            state: "s".repeat(43),
            nonce: "n".repeat(43),
            verifier: "v".repeat(43),
            created,
        }
    }

    #[test]
    fn a_sealed_sign_in_opens_only_with_its_state_its_key_and_within_ten_minutes() {
        let key = CookieKey::derive(&[7; 32]);
        let cookie = seal(&key, &under_way(1_000), [1; 12]).unwrap();
        let state = "s".repeat(43);
        let u = open(&key, &cookie, &state, 1_000 + FLOW_SECS).unwrap();
        assert_eq!(
            (u.nonce.as_str(), u.created),
            ("n".repeat(43).as_str(), 1_000)
        );
        assert_eq!(
            open(&key, &cookie, &state, 1_001 + FLOW_SECS).err(),
            Some(Refusal::Expired)
        );
        assert_eq!(
            open(&key, &cookie, &state, 900).err(),
            Some(Refusal::Expired)
        );
        let other = "t".repeat(43);
        assert_eq!(
            open(&key, &cookie, &other, 1_000).err(),
            Some(Refusal::OtherState)
        );
        let another_server = CookieKey::derive(&[8; 32]);
        assert_eq!(
            open(&another_server, &cookie, &state, 1_000).err(),
            Some(Refusal::Unreadable)
        );
        // One bit changed anywhere: unreadable.
        let mut raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(&cookie)
            .unwrap();
        for i in [0, 12, raw.len() - 1] {
            raw[i] ^= 1;
            let tampered = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&raw);
            assert_eq!(
                open(&key, &tampered, &state, 1_000).err(),
                Some(Refusal::Unreadable)
            );
            raw[i] ^= 1;
        }
        for junk in ["", "x", "!!!!", &"A".repeat(3000)] {
            assert_eq!(
                open(&key, junk, &state, 1_000).err(),
                Some(Refusal::Unreadable)
            );
        }
    }
}
