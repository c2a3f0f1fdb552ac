//! What an escrow record may be: an age file (binary, `age-encryption.org/v1`) with exactly one
//! `X25519` recipient stanza (beside at most two others, such as age's grease) that this
//! server's identity unwraps, no larger than [`MAX_ESCROW_BYTES`]. Anything else an enrolled
//! device uploads is refused before it is stored.
//! Pure checks, no I/O: the header's file key is unwrapped and the first payload byte read (to
//! prove the payload belongs to the header), then wiped; nothing is kept or logged.

use std::io::Read;

/// The largest escrow record accepted. An age file to one X25519 recipient holding a 64-character
/// recovery key is about 300 bytes (a ~200-byte header, then the key, a 16-byte nonce and a
/// 16-byte tag); 16 KiB leaves fifty times that for longer keys or headers while keeping an
/// enrolled device from storing arbitrary blobs.
pub const MAX_ESCROW_BYTES: usize = 16 * 1024;

/// Why a ciphertext is refused.
pub fn refuse_reason(ciphertext: &[u8], identity: &dyn age::Identity) -> Option<&'static str> {
    if ciphertext.len() > MAX_ESCROW_BYTES {
        return Some("ciphertext is larger than an escrow record may be (16 KiB)");
    }
    let Some(end) = find(ciphertext, b"\n--- ") else {
        return Some("ciphertext is not an age file");
    };
    let Ok(header) = std::str::from_utf8(&ciphertext[..end]) else {
        return Some("ciphertext is not an age file");
    };
    let mut lines = header.split('\n');
    if lines.next() != Some("age-encryption.org/v1") {
        return Some("ciphertext is not an age v1 file");
    }
    // age writes a random "grease" stanza beside the real one, which readers must skip; so
    // exactly one X25519 stanza, and only a few stanzas in all.
    let stanzas: Vec<&str> = lines.filter(|l| l.starts_with("-> ")).collect();
    let x25519 = stanzas
        .iter()
        .filter(|l| l.starts_with("-> X25519 "))
        .count();
    if x25519 != 1 || stanzas.len() > 3 {
        return Some("ciphertext must have exactly one X25519 recipient");
    }
    let Ok(decryptor) = age::Decryptor::new(ciphertext) else {
        return Some("ciphertext is not an age file");
    };
    let mut payload = match decryptor.decrypt(std::iter::once(identity)) {
        Ok(reader) => reader,
        Err(_) => return Some("ciphertext is not encrypted to this server"),
    };
    // The first chunk's tag proves the payload belongs to that header; a key is one chunk.
    let mut first = [0u8; 1];
    if payload.read(&mut first).is_err() {
        return Some("ciphertext does not decrypt");
    }
    zeroize::Zeroize::zeroize(&mut first);
    None
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn only_small_age_files_to_this_server_pass() {
        let identity = age::x25519::Identity::generate();
        let other = age::x25519::Identity::generate();
        // The server checks with its unwrapper (the same identity, public key kept).
        let unwrapper = crate::age_unwrap::Unwrapper::new(&identity).unwrap();
        let ours = &unwrapper;
        let good = age::encrypt(&identity.to_public(), b"recovery key").unwrap();
        assert_eq!(refuse_reason(&good, ours), None);
        let theirs = age::encrypt(&other.to_public(), b"recovery key").unwrap();
        assert!(refuse_reason(&theirs, ours).is_some());
        assert!(refuse_reason(b"just some bytes", ours).is_some());
        let big = age::encrypt(&identity.to_public(), &vec![0u8; MAX_ESCROW_BYTES]).unwrap();
        assert!(refuse_reason(&big, ours).is_some());
        let two = age::Encryptor::with_recipients(
            [
                &identity.to_public() as &dyn age::Recipient,
                &other.to_public(),
            ]
            .into_iter(),
        )
        .unwrap();
        let mut out = vec![];
        let mut w = two.wrap_output(&mut out).unwrap();
        std::io::Write::write_all(&mut w, b"k").unwrap();
        w.finish().unwrap();
        assert!(refuse_reason(&out, ours).is_some());
    }
}
