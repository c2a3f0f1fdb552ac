//! Lower-case hex: the one encoder every crate uses (digests in audit lines, request
//! signatures, escrow records; the Mac's service password). It writes into a buffer sized up
//! front, with no allocation per byte: a `format!` per byte cost an allocation each on the
//! escrow server's hot path, and for a secret left two-character copies of it in freed memory.

const DIGITS: &[u8; 16] = b"0123456789abcdef";

/// Append `bytes` as lower-case hex to `out` (which the caller may keep wiped, for a secret;
/// reserve `2 * bytes.len()` first so it never regrows).
pub fn encode_into(bytes: &[u8], out: &mut Vec<u8>) {
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)]);
        out.push(DIGITS[usize::from(b & 0x0f)]);
    }
}

/// `bytes` as lower-case hex.
pub fn encode(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    s
}

/// The hex SHA-256 of `bytes`.
pub fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    encode(&sha2::Sha256::digest(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_lower_case_digits_a_byte_with_no_regrowth() {
        assert_eq!(encode(&[]), "");
        assert_eq!(encode(&[0x00, 0x0f, 0xa5, 0xff]), "000fa5ff");
        assert_eq!(
            sha256(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let mut out = Vec::with_capacity(8);
        encode_into(&[0xde, 0xad, 0xbe, 0xef], &mut out);
        assert_eq!(out, b"deadbeef");
        assert_eq!(out.capacity(), 8);
    }
}
