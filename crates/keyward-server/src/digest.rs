//! Lower-case hex, and the hex SHA-256 the server stores for tokens and compares for escrowed
//! ciphertexts. A leaf.

use sha2::Digest;

/// `bytes` as lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&sha2::Sha256::digest(bytes))
}
