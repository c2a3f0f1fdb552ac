//! The recovery-key format: 256 random bits printed as 64 modhex characters in 8 dash-separated
//! groups of 8, exactly as `systemd-cryptenroll --recovery-key` prints them. The printed string
//! (with dashes) is the LUKS passphrase, as in systemd, so either tool's key opens the slot the
//! other made. No randomness here: the caller supplies the 32 bytes.

use crate::error::InputError;
use crate::secret::Secret;

/// Yubico's modhex alphabet, indexed by nibble value; systemd uses the same order.
const MODHEX: &[u8; 16] = b"cbdefghijklnrtuv";
/// Length of the formatted key: 64 characters and 7 dashes.
pub const FORMATTED_LEN: usize = 71;

/// Format 32 random bytes as a recovery key passphrase.
pub fn format(entropy: &[u8; 32]) -> Secret {
    let mut out = Vec::with_capacity(FORMATTED_LEN);
    for (i, byte) in entropy.iter().enumerate() {
        if i > 0 && i % 4 == 0 {
            out.push(b'-');
        }
        out.push(MODHEX[usize::from(byte >> 4)]);
        out.push(MODHEX[usize::from(byte & 0x0f)]);
    }
    Secret::from_vec(out)
}

/// Parse a key as an admin might type it: case-insensitive, surrounding whitespace ignored,
/// dashes optional (systemd accepts both). Returns the canonical passphrase form.
pub fn parse(typed: &[u8]) -> Result<Secret, InputError> {
    let trimmed = typed.trim_ascii();
    let digits: Vec<u8> = trimmed
        .iter()
        .filter(|b| **b != b'-')
        .map(u8::to_ascii_lowercase)
        .collect();
    if digits.len() != 64 {
        return Err(InputError::BadRecoveryKey("expected 64 modhex characters"));
    }
    let dashes = trimmed.len() - digits.len();
    let dashed_ok = dashes == 0
        || (trimmed.len() == FORMATTED_LEN
            && trimmed
                .iter()
                .enumerate()
                .all(|(i, b)| (*b == b'-') == (i % 9 == 8)));
    if !dashed_ok {
        return Err(InputError::BadRecoveryKey(
            "dashes must separate groups of 8",
        ));
    }
    let mut entropy = zeroize::Zeroizing::new([0u8; 32]);
    for (i, pair) in digits.chunks_exact(2).enumerate() {
        let hi = nibble(pair[0])?;
        let lo = nibble(pair[1])?;
        entropy[i] = (hi << 4) | lo;
    }
    let mut digits = digits;
    zeroize::Zeroize::zeroize(&mut digits);
    Ok(format(&entropy))
}

/// A typed group, as an admin might enter it: surrounding whitespace ignored, lowercased. A
/// group is part of a recovery key, so its copy is a [`Secret`], wiped when dropped (collected
/// at its exact size, so no unwiped copy is left by a regrown buffer either).
pub fn normalize_group(typed: &[u8]) -> Secret {
    Secret::from_vec(
        typed
            .trim_ascii()
            .iter()
            .map(u8::to_ascii_lowercase)
            .collect(),
    )
}

/// The standalone commit's proof that the admin stored `key`: `typed` is its last group, as
/// [`normalize_group`] reads a typed one (compared in constant time).
pub fn confirms(key: &Secret, typed: &Secret) -> bool {
    normalize_group(typed.expose()).ct_eq(&normalize_group(last_group(key)))
}

/// The last group, which standalone rotation asks the admin to type back: what follows the
/// last dash (8 characters of a keyward key, 4 of a FileVault key), else the last 8.
pub fn last_group(key: &Secret) -> &[u8] {
    let k = key.expose();
    match k.iter().rposition(|b| *b == b'-') {
        Some(dash) => &k[dash + 1..],
        None => &k[k.len().saturating_sub(8)..],
    }
}

fn nibble(c: u8) -> Result<u8, InputError> {
    MODHEX
        .iter()
        .position(|m| *m == c)
        .and_then(|p| u8::try_from(p).ok())
        .ok_or(InputError::BadRecoveryKey(
            "character outside the modhex alphabet",
        ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_vector() {
        let mut e = [0u8; 32];
        e[0] = 0x01;
        e[1] = 0x23;
        e[31] = 0xff;
        let k = format(&e);
        let s = std::str::from_utf8(k.expose()).expect("ascii");
        assert_eq!(s.len(), FORMATTED_LEN);
        assert!(s.starts_with("cbdecccc-"));
        assert!(s.ends_with("-ccccccvv"));
        assert_eq!(last_group(&k), b"ccccccvv");
        let filevault = Secret::copy_from(b"AU2A-PHMK-WBGX-PWKX-M3X3-VAPY");
        assert_eq!(last_group(&filevault), b"VAPY");
    }

    #[test]
    fn a_typed_last_group_confirms_the_key_in_any_case_and_spacing() {
        let k = format(&[0x5a; 32]);
        let last = std::str::from_utf8(last_group(&k))
            .expect("ascii")
            .to_owned();
        for typed in [last.clone(), last.to_uppercase(), format!("  {last}\n")] {
            assert!(
                confirms(&k, &Secret::copy_from(typed.as_bytes())),
                "{typed:?}"
            );
        }
        for typed in ["", "cccccccc", &last[..7], &format!("{last}c")] {
            assert!(
                !confirms(&k, &Secret::copy_from(typed.as_bytes())),
                "{typed:?}"
            );
        }
        assert_eq!(normalize_group(b" AbC\t").expose(), b"abc");
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            &b""[..],
            b"cccc",
            b"cccccccc-cccccccc-cccccccc-cccccccc-cccccccc-cccccccc-cccccccc-ccccccca",
            b"ccccccc-ccccccccc-cccccccc-cccccccc-cccccccc-cccccccc-cccccccc-cccccccc",
            b"cccccccc-cccccccc-cccccccc-cccccccc-cccccccc-cccccccc-cccccccc-cccccccc-c",
        ] {
            assert!(parse(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    proptest! {
        #[test]
        fn format_then_parse_roundtrips(e in any::<[u8; 32]>(), upper in any::<bool>(), dashes in any::<bool>()) {
            let k = format(&e);
            let mut typed = k.expose().to_vec();
            if upper { typed.make_ascii_uppercase(); }
            if !dashes { typed.retain(|b| *b != b'-'); }
            typed.extend_from_slice(b" \n");
            let back = parse(&typed).expect("parses");
            prop_assert!(back.ct_eq(&k));
            // Every character is systemd's: modhex or a dash at a group boundary.
            for (i, b) in k.expose().iter().enumerate() {
                if i % 9 == 8 { prop_assert_eq!(*b, b'-'); } else { prop_assert!(MODHEX.contains(b)); }
            }
        }
    }
}
