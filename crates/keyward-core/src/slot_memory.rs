//! What a login remembers of the logins before it: per slot, a keyed digest of the password
//! that last opened it, so a login whose password still opens its slot costs no KDF run (the
//! helper's login jobs). Memory only; the key is drawn by the caller at start, so nothing on
//! disk or in a core dump helps an attacker test a guess. No I/O here.

use std::collections::HashMap;

use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::{Secret, SlotId, VolumeName};

/// Which password last opened which slot, as keyed digests.
#[derive(Debug)]
pub struct SlotMemory {
    key: Secret,
    opened: HashMap<(VolumeName, SlotId), [u8; 32]>,
}

/// The digest's input: the key, the password's length and the password, zero-padded to whole
/// 64-byte blocks (SHA-256's), in one wiped buffer allocated at its final size up front (a
/// growing buffer would leave copies behind in freed memory).
fn digest_input(key: &[u8], password: &[u8]) -> Zeroizing<Vec<u8>> {
    let whole_blocks = (key.len() + 8 + password.len()).div_ceil(64) * 64;
    let mut input = Zeroizing::new(Vec::with_capacity(whole_blocks));
    input.extend_from_slice(key);
    input.extend_from_slice(&(password.len() as u64).to_be_bytes());
    input.extend_from_slice(password);
    input.resize(whole_blocks, 0);
    input
}

impl SlotMemory {
    /// Empty, keyed by `key` (a fresh random secret).
    pub fn new(key: Secret) -> Self {
        SlotMemory {
            key,
            opened: HashMap::new(),
        }
    }

    /// The keyed digest of `password`, computed over [`digest_input`] only: sha2 does not wipe
    /// its block buffer, and given whole blocks from its start it compresses them in place and
    /// copies none of them into it, so the one copy of the password here is the wiped one.
    fn digest(&self, password: &Secret) -> [u8; 32] {
        Sha256::digest(digest_input(self.key.expose(), password.expose())).into()
    }

    /// `password` opened `slot` on `v` just now.
    pub fn remember(&mut self, v: &VolumeName, slot: SlotId, password: &Secret) {
        let d = self.digest(password);
        self.opened.insert((v.clone(), slot), d);
    }

    /// Did `password` open `slot` on `v` last time?
    pub fn opened_last(&self, v: &VolumeName, slot: SlotId, password: &Secret) -> bool {
        let d = self.digest(password);
        self.opened
            .get(&(v.clone(), slot))
            .is_some_and(|known| known == &d)
    }

    /// `slot` on `v` is gone or changed.
    pub fn forget(&mut self, v: &VolumeName, slot: SlotId) {
        self.opened.remove(&(v.clone(), slot));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// The hasher is handed whole blocks only, from a buffer that was never regrown; and the
    /// length before the password keeps two passwords that differ only in trailing NULs apart.
    #[test]
    fn the_digest_input_is_whole_blocks_in_one_allocation() {
        let key = [7u8; 32];
        for len in [0, 1, 23, 24, 25, 55, 64, 100, 1000] {
            let pw = vec![b'p'; len];
            let input = digest_input(&key, &pw);
            assert_eq!(input.len() % 64, 0, "password of {len} bytes");
            assert_eq!(input.capacity(), input.len(), "password of {len} bytes");
        }
        assert_ne!(*digest_input(&key, b"pw"), *digest_input(&key, b"pw\0"));
    }

    /// Only the password that opened the slot, on that volume and slot, is remembered, until
    /// the slot is forgotten; another key (another helper process) remembers nothing.
    #[test]
    fn only_the_password_that_opened_the_slot_is_remembered() {
        let (v, w) = (
            VolumeName::parse("v").unwrap(),
            VolumeName::parse("w").unwrap(),
        );
        let (s1, s2) = (SlotId::new(1).unwrap(), SlotId::new(2).unwrap());
        let pw = Secret::copy_from(b"correct horse");
        let mut m = SlotMemory::new(Secret::copy_from(&[1; 32]));
        assert!(!m.opened_last(&v, s1, &pw));
        m.remember(&v, s1, &pw);
        assert!(m.opened_last(&v, s1, &pw));
        assert!(!m.opened_last(&v, s1, &Secret::copy_from(b"correct horse ")));
        assert!(!m.opened_last(&v, s2, &pw) && !m.opened_last(&w, s1, &pw));
        let other = SlotMemory {
            key: Secret::copy_from(&[2; 32]),
            opened: m.opened.clone(),
        };
        assert!(!other.opened_last(&v, s1, &pw), "the digest is keyed");
        m.forget(&v, s1);
        assert!(!m.opened_last(&v, s1, &pw));
    }
}
