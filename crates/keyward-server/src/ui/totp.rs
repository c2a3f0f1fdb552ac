//! The TOTP second factor of web UI accounts (RFC 6238 through `totp-rs`): what authenticator
//! apps expect — HMAC-SHA-1, 6 digits, 30-second steps — with a 160-bit secret from the OS and
//! a window of the previous, current and next step for clock drift. A code is accepted only
//! for a step after the last one the account accepted ([`matching_step`]); the caller stores
//! that step with a conditional update, so a code, and every older one, works once, whichever
//! instance sees it.
//!
//! The secret is kept in the database sealed (age) to the server's own X25519 identity, like
//! the escrowed keys: a dump of the database alone yields no second factor. No I/O here: the
//! clock comes in as `now`, the database is the caller's (`db.rs`, `second_factor.rs`).

use base64::Engine;
use totp_rs::{Algorithm, TOTP};
use zeroize::Zeroizing;

/// The issuer authenticator apps show next to the account name.
pub const ISSUER: &str = "keyward";
/// Seconds per step.
pub const STEP_SECS: i64 = 30;
/// Digits per code.
pub const DIGITS: usize = 6;
/// Steps accepted either side of the current one (clock drift, a code typed as it turned).
pub const WINDOW: i64 = 1;
/// Bytes of secret: 160 bits, RFC 4226's recommendation and the HMAC-SHA-1 block's worth.
const SECRET_BYTES: usize = 20;

/// What can go wrong with a TOTP secret.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TotpError {
    /// The OS random number generator gave nothing.
    #[error("no randomness for a TOTP secret: {0}")]
    Random(getrandom::Error),
    /// Sealing the secret to the server's identity failed.
    #[error("sealing the TOTP secret: {0}")]
    Seal(String),
    /// The stored secret does not open with this server's identity (another server's, or damaged).
    #[error("the stored TOTP secret does not open with this server's identity")]
    Unseal,
    /// The secret is not one this module made (wrong length).
    #[error("a TOTP secret has {0} bytes, not {SECRET_BYTES}")]
    Length(usize),
}

/// An account's TOTP secret. Wiped on drop (`totp-rs` with `zeroize`); never printed.
pub struct Secret {
    totp: TOTP,
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl Secret {
    /// A fresh secret from the OS random number generator.
    pub fn generate() -> Result<Self, TotpError> {
        let mut bytes = Zeroizing::new(vec![0u8; SECRET_BYTES]);
        getrandom::fill(&mut bytes).map_err(TotpError::Random)?;
        Self::from_bytes(&bytes)
    }

    fn from_bytes(bytes: &[u8]) -> Result<Self, TotpError> {
        if bytes.len() != SECRET_BYTES {
            return Err(TotpError::Length(bytes.len()));
        }
        let steps = u64::try_from(STEP_SECS).unwrap_or(30);
        // Checked by `TOTP::new`: 6 digits and 160 bits are within RFC 6238's bounds, and
        // the issuer and the (empty) account name hold no ':'.
        let totp = TOTP::new(
            Algorithm::SHA1,
            DIGITS,
            1,
            steps,
            bytes.to_vec(),
            Some(ISSUER.to_owned()),
            String::new(),
        )
        .map_err(|_| TotpError::Length(bytes.len()))?;
        Ok(Secret { totp })
    }

    /// The `otpauth://totp/keyward:NAME?secret=…&issuer=keyward` URI an authenticator app
    /// takes (Google's Key URI format; SHA-1, 6 digits and 30 s are its defaults, so unstated).
    /// It holds the secret: shown once to the operator, never logged.
    pub fn uri(&self, account: &str) -> Zeroizing<String> {
        let mut labelled = self.totp.clone();
        labelled.account_name = account.to_owned();
        Zeroizing::new(labelled.get_url())
    }

    /// The code of `step` (steps since the Unix epoch).
    fn code_at(&self, step: i64) -> Zeroizing<String> {
        let at = u64::try_from(step.saturating_mul(STEP_SECS)).unwrap_or(0);
        Zeroizing::new(self.totp.generate(at))
    }

    /// The secret sealed to `to` (the server's age recipient), as base64 text for the database.
    pub fn seal(&self, to: &age::x25519::Recipient) -> Result<String, TotpError> {
        let sealed =
            age::encrypt(to, &self.totp.secret).map_err(|e| TotpError::Seal(e.to_string()))?;
        Ok(base64::engine::general_purpose::STANDARD.encode(sealed))
    }

    /// A secret [`Secret::seal`] made, opened with the server's identity.
    pub fn unseal(sealed: &str, with: &age::x25519::Identity) -> Result<Self, TotpError> {
        let ciphertext = base64::engine::general_purpose::STANDARD
            .decode(sealed)
            .map_err(|_| TotpError::Unseal)?;
        let bytes = Zeroizing::new(age::decrypt(with, &ciphertext).map_err(|_| TotpError::Unseal)?);
        Self::from_bytes(&bytes)
    }
}

/// A code as typed: digits, perhaps with spaces (apps show "123 456"); anything else is no code.
fn normalise(typed: &str) -> Option<Zeroizing<String>> {
    let code: Zeroizing<String> =
        Zeroizing::new(typed.chars().filter(|c| !c.is_whitespace()).collect());
    (code.len() == DIGITS && code.bytes().all(|b| b.is_ascii_digit())).then_some(code)
}

/// The step `typed` is the code of, if it is the code of a step within [`WINDOW`] of `now`
/// (Unix seconds) that is later than `last_step`, the last one this account accepted. When
/// two steps in the window share a code, the later one: so it can never be accepted again.
/// Every step of the window is computed and compared in constant time, matched or not.
pub fn matching_step(secret: &Secret, typed: &str, now: i64, last_step: i64) -> Option<i64> {
    let code = normalise(typed)?;
    let current = now.div_euclid(STEP_SECS);
    let mut found = None;
    for step in current.saturating_sub(WINDOW)..=current.saturating_add(WINDOW) {
        let same = super::session::tokens_match(&secret.code_at(step), &code);
        if same && step > last_step && step >= 0 {
            found = Some(step);
        }
    }
    found
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// RFC 6238 appendix B's SHA-1 secret: the ASCII digits "1234567890" twice.
    fn rfc_secret() -> Secret {
        Secret::from_bytes(b"12345678901234567890").unwrap()
    }

    #[test]
    fn codes_are_rfc_6238s() {
        // Appendix B gives 8 digits; the 6-digit code is their last six.
        let s = rfc_secret();
        for (time, eight) in [
            (59, "94287082"),
            (1_111_111_109, "07081804"),
            (1_234_567_890, "89005924"),
            (2_000_000_000, "69279037"),
        ] {
            assert_eq!(*s.code_at(time / STEP_SECS), eight[2..], "T={time}");
        }
    }

    #[test]
    fn the_previous_current_and_next_step_are_accepted_and_no_other() {
        let s = rfc_secret();
        let now = 1_234_567_890;
        let current = now / STEP_SECS;
        for step in current - 1..=current + 1 {
            assert_eq!(matching_step(&s, &s.code_at(step), now, 0), Some(step));
        }
        for step in [current - 2, current + 2, current - 10] {
            assert_eq!(matching_step(&s, &s.code_at(step), now, 0), None, "{step}");
        }
    }

    #[test]
    fn a_step_once_accepted_and_every_earlier_one_is_refused() {
        let s = rfc_secret();
        let now = 1_234_567_890;
        let current = now / STEP_SECS;
        assert_eq!(
            matching_step(&s, &s.code_at(current), now, current),
            None,
            "replay"
        );
        assert_eq!(
            matching_step(&s, &s.code_at(current - 1), now, current),
            None,
            "older"
        );
        assert_eq!(
            matching_step(&s, &s.code_at(current + 1), now, current),
            Some(current + 1),
            "a later step is still good"
        );
    }

    #[test]
    fn anything_but_six_digits_is_no_code() {
        let s = rfc_secret();
        let now = 1_234_567_890;
        let code = s.code_at(now / STEP_SECS);
        let spaced = format!("{} {}", &code[..3], &code[3..]);
        assert_eq!(matching_step(&s, &spaced, now, 0), Some(now / STEP_SECS));
        for typed in [
            "",
            "12345",
            "1234567",
            "abcdef",
            "１２３４５６",
            &format!("{}x", &code[..5]),
        ] {
            assert_eq!(matching_step(&s, typed, now, 0), None, "{typed:?}");
        }
    }

    #[test]
    fn the_uri_is_what_authenticator_apps_take() {
        let s = Secret::generate().unwrap();
        let uri = s.uri("alice@example");
        let rest = uri
            .strip_prefix("otpauth://totp/keyward:alice%40example?")
            .unwrap();
        let params: Vec<&str> = rest.split('&').collect();
        assert!(params.contains(&"issuer=keyward"), "{}", *uri);
        let b32 = params
            .iter()
            .find_map(|p| p.strip_prefix("secret="))
            .unwrap();
        assert_eq!(b32.len(), 32, "160 bits in unpadded base32");
        assert!(b32
            .bytes()
            .all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b)));
        assert_ne!(
            *Secret::generate().unwrap().uri("alice@example"),
            *uri,
            "random"
        );
        assert_eq!(format!("{s:?}"), "Secret(..)", "never printed");
    }

    #[test]
    fn a_sealed_secret_opens_with_its_identity_only() {
        let ours = age::x25519::Identity::generate();
        let s = Secret::generate().unwrap();
        let sealed = s.seal(&ours.to_public()).unwrap();
        let opened = Secret::unseal(&sealed, &ours).unwrap();
        assert_eq!(*opened.code_at(1), *s.code_at(1));
        let theirs = age::x25519::Identity::generate();
        assert!(matches!(
            Secret::unseal(&sealed, &theirs),
            Err(TotpError::Unseal)
        ));
        assert!(matches!(
            Secret::unseal("not base64!", &ours),
            Err(TotpError::Unseal)
        ));
    }
}
