//! `Secret`: the one type for every passphrase and key keyward handles.
//!
//! It is zeroized on drop (secrecy + zeroize), has no `Display`, a `Debug` that prints
//! nothing of the contents, and no serde support: the only way to read it is
//! [`Secret::expose`], which makes every use greppable.

use std::fmt;

use secrecy::{ExposeSecret, SecretBox};
use zeroize::Zeroizing;

/// A passphrase or key. Bytes, not text: LUKS passphrases are byte strings.
pub struct Secret(SecretBox<[u8]>);

impl Secret {
    /// Take ownership of `bytes`; the vector's buffer becomes the secret's and is wiped on drop.
    pub fn from_vec(bytes: Vec<u8>) -> Self {
        Secret(SecretBox::new(bytes.into_boxed_slice()))
    }

    /// Copy a string into a secret, wiping the string.
    pub fn from_string(s: String) -> Self {
        Self::from_vec(s.into_bytes())
    }

    /// Copy `bytes` into a new secret. The caller stays responsible for wiping its copy.
    pub fn copy_from(bytes: &[u8]) -> Self {
        Self::from_vec(bytes.to_vec())
    }

    /// Read one line as typed at a prompt or piped on stdin: strips one trailing `\n` (and a
    /// `\r` before it) and wipes the input buffer.
    pub fn from_line(line: Zeroizing<Vec<u8>>) -> Self {
        let mut end = line.len();
        if line[..end].ends_with(b"\n") {
            end -= 1;
            if line[..end].ends_with(b"\r") {
                end -= 1;
            }
        }
        Self::copy_from(&line[..end])
    }

    /// The secret's bytes. Every call site is a place a secret is used; keep them few.
    pub fn expose(&self) -> &[u8] {
        self.0.expose_secret()
    }

    /// Number of bytes.
    pub fn len(&self) -> usize {
        self.expose().len()
    }

    /// True for the empty passphrase.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// An explicit copy (there is deliberately no `Clone`).
    pub fn duplicate(&self) -> Self {
        Self::copy_from(self.expose())
    }

    /// Constant-time comparison, so tests and verification never leak where two secrets
    /// differ through timing.
    pub fn ct_eq(&self, other: &Secret) -> bool {
        let (a, b) = (self.expose(), other.expose());
        if a.len() != b.len() {
            return false;
        }
        a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([REDACTED])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_contents() {
        let s = Secret::copy_from(b"hunter2");
        assert_eq!(format!("{s:?}"), "Secret([REDACTED])");
        assert!(!format!("{:?}", Some(&s)).contains("hunter2"));
    }

    #[test]
    fn line_parsing_strips_one_newline() {
        let s = Secret::from_line(Zeroizing::new(b"pw\r\n".to_vec()));
        assert_eq!(s.expose(), b"pw");
        let s = Secret::from_line(Zeroizing::new(b"pw\n\n".to_vec()));
        assert_eq!(s.expose(), b"pw\n");
        let s = Secret::from_line(Zeroizing::new(Vec::new()));
        assert!(s.is_empty());
    }

    #[test]
    fn comparison() {
        assert!(Secret::copy_from(b"a").ct_eq(&Secret::copy_from(b"a")));
        assert!(!Secret::copy_from(b"a").ct_eq(&Secret::copy_from(b"b")));
        assert!(!Secret::copy_from(b"a").ct_eq(&Secret::copy_from(b"ab")));
    }
}
