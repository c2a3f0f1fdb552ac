//! Admin passwords: argon2id (RustCrypto `argon2`, its default parameters — 19 MiB, two
//! passes, one lane, as OWASP recommends) with a 16-byte random salt, kept as a PHC string.
//! A login for an unknown name is checked against a dummy hash of the same cost, so the
//! answer takes about as long either way. At most a few hashes run at once: each costs 19 MiB
//! and a core's worth of time, and a flood of logins must not take the server down with it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::LazyLock;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;

/// Hashes that may run at once (the rest are answered "busy").
const MAX_IN_FLIGHT: usize = 4;

static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);

/// Shortest admin password accepted.
pub const MIN_LEN: usize = 12;

/// A hash of a random password, for names that have none. Made once, on first use.
static DUMMY: LazyLock<Option<String>> = LazyLock::new(|| {
    let mut random = [0u8; 32];
    getrandom::fill(&mut random).ok()?;
    hash(&random).ok()
});

/// Hash a password for storage.
pub fn hash(password: &[u8]) -> Result<String, String> {
    let mut salt = [0u8; argon2::password_hash::Salt::RECOMMENDED_LENGTH];
    getrandom::fill(&mut salt).map_err(|e| e.to_string())?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| e.to_string())?;
    Argon2::default()
        .hash_password(password, &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

/// Whether `password` matches the stored hash; with no stored hash, a dummy check of the same
/// cost, always false. A malformed stored hash never matches.
pub fn verify(password: &[u8], stored: Option<&str>) -> bool {
    let (phc, real) = match stored {
        Some(phc) => (phc, true),
        None => match DUMMY.as_deref() {
            Some(dummy) => (dummy, false),
            None => return false,
        },
    };
    let Ok(parsed) = PasswordHash::new(phc) else {
        return false;
    };
    let ok = Argon2::default().verify_password(password, &parsed).is_ok();
    ok && real
}

/// Make the dummy hash now (at start-up), so the first unknown name costs no more than others.
pub fn warm() {
    LazyLock::force(&DUMMY);
}

/// A slot for one hash at a time; released on drop.
#[derive(Debug)]
pub struct Slot(());

impl Slot {
    /// A slot, unless too many hashes are running.
    pub fn take() -> Option<Slot> {
        let before = IN_FLIGHT.fetch_add(1, Ordering::AcqRel);
        if before >= MAX_IN_FLIGHT {
            IN_FLIGHT.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Slot(()))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        IN_FLIGHT.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_password_matches_its_own_hash_only() {
        let phc = hash(b"correct horse battery").unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(verify(b"correct horse battery", Some(&phc)));
        assert!(!verify(b"correct horse batterz", Some(&phc)));
        assert_ne!(hash(b"correct horse battery").unwrap(), phc, "salted");
    }

    #[test]
    fn unknown_names_and_broken_hashes_never_match() {
        assert!(!verify(b"anything", None));
        assert!(!verify(b"anything", Some("not a phc string")));
        assert!(!verify(b"", Some("")));
    }

    #[test]
    fn slots_are_limited_and_returned() {
        let held: Vec<Slot> = std::iter::from_fn(Slot::take).take(64).collect();
        assert!(held.len() <= MAX_IN_FLIGHT);
        assert!(Slot::take().is_none());
        drop(held);
        assert!(Slot::take().is_some());
    }
}
