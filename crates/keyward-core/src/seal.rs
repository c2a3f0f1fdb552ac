//! Sealing a short secret to one age X25519 recipient: an age v1 file
//! (<https://age-encryption.org/v1>, c2sp.org/age) that `age -d` and the `age` crate decrypt.
//!
//! The helper escrows each recovery key this way, to the escrow server's `[escrow] recipient`;
//! the server decrypts with the `age` crate. This module is the encryptor only, for exactly one
//! X25519 recipient and a payload of at most one STREAM chunk (64 KiB): no armor, no scrypt, no
//! plugins, no decryption. The primitives are RustCrypto's and dalek's (X25519, HKDF-SHA-256,
//! HMAC-SHA-256, ChaCha20-Poly1305, Bech32); this file only lays out the format.
//!
//! No I/O: the 64 random bytes a seal consumes come in as [`SealRandomness`], which the caller
//! fills from the OS (`getrandom`) and tests fill with fixed bytes. Every secret intermediate
//! (file key, ephemeral secret, shared secret, derived keys) is wiped when dropped.

use std::fmt;
use std::str::FromStr;

use base64::engine::general_purpose::STANDARD_NO_PAD;
use base64::Engine as _;
use bech32::{FromBase32 as _, ToBase32 as _, Variant};
use chacha20poly1305::aead::{Aead as _, KeyInit as _};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::{Zeroize as _, Zeroizing};

/// The largest plaintext sealed: one STREAM chunk. Recovery keys are tens of bytes.
pub const MAX_PLAINTEXT: usize = 64 * 1024;

const VERSION_LINE: &str = "age-encryption.org/v1";
const X25519_LABEL: &[u8] = b"age-encryption.org/v1/X25519";
const HEADER_LABEL: &[u8] = b"header";
const PAYLOAD_LABEL: &[u8] = b"payload";
const RECIPIENT_HRP: &str = "age";
/// Stanza bodies are base64 wrapped at this many columns; the last line is always shorter.
const COLUMNS: usize = 64;

const FILE_KEY_LEN: usize = 16;
const EPHEMERAL_LEN: usize = 32;
const PAYLOAD_NONCE_LEN: usize = 16;
const RANDOM_LEN: usize = FILE_KEY_LEN + EPHEMERAL_LEN + PAYLOAD_NONCE_LEN;

/// Why a string is not an age X25519 recipient (`age1…`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecipientError {
    /// Not Bech32 (bad characters, mixed case, bad checksum), or Bech32m.
    #[error("invalid Bech32 encoding (expected age1…)")]
    Bech32,
    /// Bech32, but for another kind of key.
    #[error("prefix {0:?}, not \"age\"")]
    Prefix(String),
    /// Not 32 bytes.
    #[error("{0} bytes of key, not 32")]
    Length(usize),
}

/// Why nothing was sealed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SealError {
    /// More than one STREAM chunk: this encryptor writes a single, final chunk.
    #[error("{0} bytes to seal; at most {MAX_PLAINTEXT}")]
    TooLarge(usize),
    /// The recipient is a low-order point: the X25519 shared secret is all zeros, which any
    /// eavesdropper could compute too. age refuses such a share; so does this.
    #[error("the recipient is a low-order X25519 point (all-zero shared secret)")]
    LowOrderRecipient,
    /// A primitive refused its input. HKDF fails only past 8160 bytes of output, HMAC takes
    /// keys of any length and ChaCha20-Poly1305 fails only past 256 GiB: none of these can
    /// happen with the sizes used here, but should one, nothing is sealed.
    #[error("{0} refused its input")]
    Primitive(&'static str),
}

/// An age X25519 recipient: the Curve25519 public key behind an `age1…` string.
#[derive(Clone, PartialEq, Eq)]
pub struct Recipient(PublicKey);

impl Recipient {
    /// The raw X25519 public key.
    pub fn as_bytes(&self) -> &[u8; 32] {
        self.0.as_bytes()
    }
}

impl FromStr for Recipient {
    type Err = RecipientError;

    /// Parse `age1…` (Bech32, not Bech32m; all lower or all upper case) as age does.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (hrp, data, variant) = bech32::decode(s).map_err(|_| RecipientError::Bech32)?;
        if variant != Variant::Bech32 {
            return Err(RecipientError::Bech32);
        }
        if hrp != RECIPIENT_HRP {
            return Err(RecipientError::Prefix(hrp));
        }
        let bytes = Vec::<u8>::from_base32(&data).map_err(|_| RecipientError::Bech32)?;
        let key: [u8; 32] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| RecipientError::Length(bytes.len()))?;
        Ok(Recipient(PublicKey::from(key)))
    }
}

impl fmt::Display for Recipient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = bech32::encode(RECIPIENT_HRP, self.as_bytes().to_base32(), Variant::Bech32)
            .map_err(|_| fmt::Error)?;
        f.write_str(&s)
    }
}

impl fmt::Debug for Recipient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Recipient({self})")
    }
}

/// The 64 random bytes one seal consumes, in this order: the file key (16), the ephemeral
/// X25519 secret (32) and the payload nonce (16). Moved into [`seal`], so never used twice;
/// wiped on drop.
pub struct SealRandomness(Zeroizing<[u8; RANDOM_LEN]>);

impl SealRandomness {
    /// Let `fill` write the bytes in place (the helper passes `getrandom::fill`).
    pub fn fill_with<E>(fill: impl FnOnce(&mut [u8]) -> Result<(), E>) -> Result<Self, E> {
        let mut buf = Zeroizing::new([0u8; RANDOM_LEN]);
        fill(buf.as_mut_slice())?;
        Ok(SealRandomness(buf))
    }

    fn file_key(&self) -> &[u8] {
        &self.0[..FILE_KEY_LEN]
    }

    fn ephemeral_secret(&self) -> StaticSecret {
        let mut bytes = [0u8; EPHEMERAL_LEN];
        bytes.copy_from_slice(&self.0[FILE_KEY_LEN..FILE_KEY_LEN + EPHEMERAL_LEN]);
        let secret = StaticSecret::from(bytes);
        bytes.zeroize();
        secret
    }

    fn payload_nonce(&self) -> &[u8] {
        &self.0[FILE_KEY_LEN + EPHEMERAL_LEN..]
    }
}

impl fmt::Debug for SealRandomness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SealRandomness(..)")
    }
}

/// Encrypt `plaintext` to `recipient` as a binary age v1 file: the header (version line, one
/// X25519 stanza, MAC) followed by the payload nonce and a single final STREAM chunk.
pub fn seal(
    recipient: &Recipient,
    plaintext: &[u8],
    random: SealRandomness,
) -> Result<Vec<u8>, SealError> {
    if plaintext.len() > MAX_PLAINTEXT {
        return Err(SealError::TooLarge(plaintext.len()));
    }
    let mut header = String::from(VERSION_LINE);
    header.push('\n');
    push_x25519_stanza(&mut header, recipient, &random)?;
    // The MAC covers the header up to and including "---", not the space after it.
    header.push_str("---");
    let mac_key = hkdf(&[], HEADER_LABEL, random.file_key())?;
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(mac_key.as_slice())
        .map_err(|_| SealError::Primitive("HMAC-SHA-256"))?;
    mac.update(header.as_bytes());
    header.push(' ');
    header.push_str(&STANDARD_NO_PAD.encode(mac.finalize().into_bytes()));
    header.push('\n');

    let nonce = random.payload_nonce();
    let payload_key = hkdf(nonce, PAYLOAD_LABEL, random.file_key())?;
    // STREAM: an 11-byte big-endian chunk counter (0, the only chunk) and 0x01, "last chunk".
    let mut chunk_nonce = [0u8; 12];
    chunk_nonce[11] = 1;
    let chunk = ChaCha20Poly1305::new(Key::from_slice(payload_key.as_slice()))
        .encrypt(Nonce::from_slice(&chunk_nonce), plaintext)
        .map_err(|_| SealError::Primitive("ChaCha20-Poly1305"))?;

    let mut out = header.into_bytes();
    out.extend_from_slice(nonce);
    out.extend_from_slice(&chunk);
    Ok(out)
}

/// `-> X25519 <ephemeral share>` and the wrapped file key, base64 at 64 columns.
fn push_x25519_stanza(
    header: &mut String,
    recipient: &Recipient,
    random: &SealRandomness,
) -> Result<(), SealError> {
    let ephemeral = random.ephemeral_secret();
    let share = PublicKey::from(&ephemeral);
    let shared = ephemeral.diffie_hellman(&recipient.0);
    if !shared.was_contributory() {
        return Err(SealError::LowOrderRecipient);
    }
    let mut salt = [0u8; 64];
    salt[..32].copy_from_slice(share.as_bytes());
    salt[32..].copy_from_slice(recipient.as_bytes());
    let wrap_key = hkdf(&salt, X25519_LABEL, shared.as_bytes())?;
    // The file key is wrapped under a fresh key each time, so the nonce is fixed: 12 zeros.
    let body = ChaCha20Poly1305::new(Key::from_slice(wrap_key.as_slice()))
        .encrypt(&Nonce::default(), random.file_key())
        .map_err(|_| SealError::Primitive("ChaCha20-Poly1305"))?;
    header.push_str("-> X25519 ");
    header.push_str(&STANDARD_NO_PAD.encode(share.as_bytes()));
    header.push('\n');
    push_wrapped(header, &STANDARD_NO_PAD.encode(body));
    Ok(())
}

/// Base64 text in lines of 64 columns; the last line is shorter, and empty if need be.
fn push_wrapped(out: &mut String, text: &str) {
    let mut rest = text;
    loop {
        let (line, tail) = rest.split_at(rest.len().min(COLUMNS));
        out.push_str(line);
        out.push('\n');
        if line.len() < COLUMNS {
            return;
        }
        rest = tail;
    }
}

/// HKDF-SHA-256 (extract with `salt`, expand with `info`) to a 32-byte key.
fn hkdf(salt: &[u8], info: &[u8], ikm: &[u8]) -> Result<Zeroizing<[u8; 32]>, SealError> {
    let mut okm = Zeroizing::new([0u8; 32]);
    hkdf::Hkdf::<Sha256>::new(Some(salt), ikm)
        .expand(info, okm.as_mut_slice())
        .map_err(|_| SealError::Primitive("HKDF-SHA-256"))?;
    Ok(okm)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixed(byte: u8) -> SealRandomness {
        SealRandomness::fill_with(|b| {
            b.fill(byte);
            Ok::<_, std::convert::Infallible>(())
        })
        .expect("infallible")
    }

    #[test]
    fn recipient_strings_round_trip_and_bad_ones_are_refused() {
        let s = "age1zvkyg2lqzraa2lnjvqej32nkuu0ues2s82hzrye869xeexvn73equnujwj";
        let r: Recipient = s.parse().expect("the spec's example recipient");
        assert_eq!(r.to_string(), s);
        assert_eq!(s.to_uppercase().parse::<Recipient>(), Ok(r.clone()));
        // One character changed: the checksum fails.
        let bad = s.replacen("zvk", "zvj", 1);
        assert_eq!(bad.parse::<Recipient>(), Err(RecipientError::Bech32));
        assert_eq!("".parse::<Recipient>(), Err(RecipientError::Bech32));
        let other = bech32::encode("agx", [7u8; 32].to_base32(), Variant::Bech32).expect("bech32");
        assert_eq!(
            other.parse::<Recipient>(),
            Err(RecipientError::Prefix("agx".into()))
        );
        let short = bech32::encode("age", [7u8; 31].to_base32(), Variant::Bech32).expect("bech32");
        assert_eq!(short.parse::<Recipient>(), Err(RecipientError::Length(31)));
        let m = bech32::encode("age", [7u8; 32].to_base32(), Variant::Bech32m).expect("bech32m");
        assert_eq!(m.parse::<Recipient>(), Err(RecipientError::Bech32));
    }

    #[test]
    fn a_low_order_recipient_is_refused() {
        // 0 and 1 are points of small order on Curve25519: X25519 with them is all zeros.
        for point in [[0u8; 32], {
            let mut one = [0u8; 32];
            one[0] = 1;
            one
        }] {
            let r = Recipient(PublicKey::from(point));
            assert_eq!(
                seal(&r, b"key", fixed(9)),
                Err(SealError::LowOrderRecipient)
            );
        }
    }

    #[test]
    fn more_than_one_chunk_is_refused() {
        let r: Recipient = "age1zvkyg2lqzraa2lnjvqej32nkuu0ues2s82hzrye869xeexvn73equnujwj"
            .parse()
            .expect("recipient");
        let big = vec![0u8; MAX_PLAINTEXT + 1];
        assert_eq!(
            seal(&r, &big, fixed(9)),
            Err(SealError::TooLarge(MAX_PLAINTEXT + 1))
        );
        assert!(seal(&r, &big[1..], fixed(9)).is_ok());
    }

    #[test]
    fn wrapping_ends_with_a_short_line() {
        let mut out = String::new();
        push_wrapped(&mut out, &"A".repeat(43));
        assert_eq!(out, format!("{}\n", "A".repeat(43)));
        out.clear();
        push_wrapped(&mut out, &"A".repeat(64));
        assert_eq!(out, format!("{}\n\n", "A".repeat(64)));
        out.clear();
        push_wrapped(&mut out, &"A".repeat(70));
        assert_eq!(out, format!("{}\n{}\n", "A".repeat(64), "A".repeat(6)));
    }
}
