//! KDF policy (DESIGN.md section 3): random 256-bit secrets need no key stretching beyond what
//! systemd-cryptenroll uses for its recovery keys; human passphrases get argon2id at the LUKS2
//! defaults. Pure data: the backend turns [`KdfParams`] into library calls.

/// What kind of secret a slot holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum KdfClass {
    /// 256 random bits (service secret, recovery key).
    RandomKey,
    /// A human-chosen passphrase.
    Passphrase,
}

/// Iterations for random keys, as `systemd-cryptenroll --recovery-key` sets.
pub const RANDOM_KEY_PBKDF2_ITERATIONS: u32 = 1000;

/// The parameters for one new keyslot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum KdfParams {
    /// PBKDF2 with SHA-512 and a fixed iteration count (no benchmark).
    Pbkdf2Sha512 {
        /// Iteration count.
        iterations: u32,
    },
    /// argon2id; `None` fields take libcryptsetup's LUKS2 defaults (benchmarked to about 2 s,
    /// at most 1 GiB).
    Argon2id {
        /// Target unlock time in milliseconds.
        time_ms: Option<u32>,
        /// Memory ceiling in KiB.
        max_memory_kib: Option<u32>,
    },
}

/// The configured policy (`[kdf]` in keyward.toml).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KdfPolicy {
    /// Tests only: PBKDF2 with 1000 iterations for passphrases too. A production build warns.
    pub danger_fast_kdf: bool,
    /// Override the argon2id unlock time target.
    pub argon2_time_ms: Option<u32>,
    /// Override the argon2id memory ceiling.
    pub argon2_max_memory_kib: Option<u32>,
}

impl KdfPolicy {
    /// The parameters for a new slot of `class`.
    pub fn params(&self, class: KdfClass) -> KdfParams {
        match class {
            KdfClass::Passphrase if !self.danger_fast_kdf => KdfParams::Argon2id {
                time_ms: self.argon2_time_ms,
                max_memory_kib: self.argon2_max_memory_kib,
            },
            KdfClass::Passphrase | KdfClass::RandomKey => KdfParams::Pbkdf2Sha512 {
                iterations: RANDOM_KEY_PBKDF2_ITERATIONS,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passphrases_get_argon2id_unless_danger() {
        let p = KdfPolicy::default();
        assert!(matches!(
            p.params(KdfClass::Passphrase),
            KdfParams::Argon2id { .. }
        ));
        assert_eq!(
            p.params(KdfClass::RandomKey),
            KdfParams::Pbkdf2Sha512 { iterations: 1000 }
        );
        let fast = KdfPolicy {
            danger_fast_kdf: true,
            ..p
        };
        assert_eq!(
            fast.params(KdfClass::Passphrase),
            KdfParams::Pbkdf2Sha512 { iterations: 1000 }
        );
    }
}
