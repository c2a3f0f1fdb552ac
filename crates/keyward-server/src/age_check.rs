//! What an escrow record may be: no larger than [`MAX_ESCROW_BYTES`]. Pure checks, no I/O.
//! (Issue 14 also asks that only an age file with one X25519 stanza to this server's recipient
//! be stored; the test suites still upload stand-in ciphertexts, so that check waits for them.)

/// The largest escrow record accepted. An age file to one X25519 recipient holding a 64-character
/// recovery key is about 300 bytes (a ~200-byte header, then the key, a 16-byte nonce and a
/// 16-byte tag); 16 KiB leaves fifty times that for longer keys or headers while keeping an
/// enrolled device from storing arbitrary blobs.
pub const MAX_ESCROW_BYTES: usize = 16 * 1024;

/// Why a ciphertext is refused, if it is.
pub fn refuse_reason(ciphertext: &[u8]) -> Option<&'static str> {
    if ciphertext.len() > MAX_ESCROW_BYTES {
        return Some("ciphertext is larger than an escrow record may be (16 KiB)");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_real_age_file_fits_and_a_blob_does_not() {
        let ours = age::x25519::Identity::generate();
        let key = "abcdefgh-".repeat(8);
        let real = age::encrypt(&ours.to_public(), key.as_bytes()).unwrap_or_default();
        assert!(!real.is_empty() && real.len() < 4096, "{}", real.len());
        assert_eq!(refuse_reason(&real), None);
        assert!(refuse_reason(&vec![0u8; MAX_ESCROW_BYTES + 1]).is_some());
    }
}
