//! KDF policy (DESIGN.md section 3): random 256-bit secrets need no key stretching beyond what
//! systemd-cryptenroll uses for its recovery keys; human passphrases get argon2id at the LUKS2
//! defaults. Pure data: the backend turns [`KdfParams`] into library calls. Which floor slots
//! are judged against, and whether this build may honour `danger_fast_kdf` at all, is decided
//! here too (the floor itself is [`crate::kdf_floor`]).

use crate::kdf_floor::{KdfFloor, FAST_TEST_FLOOR, OWASP_FLOOR};

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

/// The fewest argon2 passes libcryptsetup makes (it refuses fewer, and benchmarks up from it).
pub const LIBCRYPTSETUP_ARGON2_MIN_PASSES: u64 = 4;

/// Whether this build may honour `danger_fast_kdf`: a compile-time fact the helper passes in
/// (its `test-kdf` feature), so that no setting in a config file can make a shipped helper
/// write cheap passphrase slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum KdfBuild {
    /// A build that ships: `danger_fast_kdf` is refused, the floor is [`OWASP_FLOOR`].
    Shipped,
    /// A test build: `danger_fast_kdf` gives passphrases PBKDF2 × 1000 and lowers the floor to
    /// [`FAST_TEST_FLOOR`], so tests run in milliseconds and still see real findings.
    Test,
}

/// Why a `[kdf]` policy is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KdfPolicyError {
    /// `danger_fast_kdf = true` in a build that ships.
    #[error("[kdf] danger_fast_kdf = true is for test builds only (cargo feature keyward-helper/test-kdf); remove it: passphrase slots must meet the KDF floor")]
    FastKdfInShippedBuild,
    /// `argon2_memory_kib` so low that every passphrase slot keyward made would be below the
    /// floor at libcryptsetup's fewest passes.
    #[error("[kdf] argon2_memory_kib = {set} is below the KDF floor for passphrase slots ({floor} KiB at {LIBCRYPTSETUP_ARGON2_MIN_PASSES} passes): keyward would make slots `keyward verify` reports as weak")]
    MemoryBelowFloor {
        /// The configured ceiling, KiB.
        set: u32,
        /// The least the floor accepts, KiB.
        floor: u64,
    },
}

/// The configured policy (`[kdf]` in keyward.toml).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KdfPolicy {
    /// Tests only: PBKDF2 with 1000 iterations for passphrases too. Honoured only by a test
    /// build ([`KdfBuild::Test`]); a shipped helper refuses to start with it.
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

    /// The floor every passphrase slot is judged against: OWASP's minimums, or in a test build
    /// with `danger_fast_kdf` the fast parameters that setting makes. A shipped build never
    /// lowers it, whatever the config says.
    pub fn passphrase_floor(&self, build: KdfBuild) -> &'static KdfFloor {
        match build {
            KdfBuild::Test if self.danger_fast_kdf => &FAST_TEST_FLOOR,
            KdfBuild::Test | KdfBuild::Shipped => &OWASP_FLOOR,
        }
    }

    /// May a helper of this build run with this policy? Not a shipped one with
    /// `danger_fast_kdf`, and none whose argon2 memory ceiling would put every passphrase slot
    /// it makes below its own floor.
    pub fn check(&self, build: KdfBuild) -> Result<(), KdfPolicyError> {
        if self.danger_fast_kdf && build == KdfBuild::Shipped {
            return Err(KdfPolicyError::FastKdfInShippedBuild);
        }
        let least = self
            .passphrase_floor(build)
            .argon2
            .iter()
            .filter(|c| c.time <= LIBCRYPTSETUP_ARGON2_MIN_PASSES)
            .map(|c| c.memory_kib)
            .min()
            .unwrap_or(0);
        match self.argon2_max_memory_kib {
            Some(set) if !self.danger_fast_kdf && u64::from(set) < least => {
                Err(KdfPolicyError::MemoryBelowFloor { set, floor: least })
            }
            _ => Ok(()),
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

    #[test]
    fn only_a_test_build_honours_danger_fast_kdf() {
        let fast = KdfPolicy {
            danger_fast_kdf: true,
            ..KdfPolicy::default()
        };
        assert_eq!(
            fast.check(KdfBuild::Shipped),
            Err(KdfPolicyError::FastKdfInShippedBuild)
        );
        assert_eq!(fast.check(KdfBuild::Test), Ok(()));
        // Even if a shipped helper ran with it, its floor would not move.
        assert_eq!(fast.passphrase_floor(KdfBuild::Shipped), &OWASP_FLOOR);
        assert_eq!(fast.passphrase_floor(KdfBuild::Test), &FAST_TEST_FLOOR);
        let real = KdfPolicy::default();
        for build in [KdfBuild::Shipped, KdfBuild::Test] {
            assert_eq!(real.check(build), Ok(()));
            assert_eq!(real.passphrase_floor(build), &OWASP_FLOOR);
        }
    }

    #[test]
    fn an_argon2_memory_ceiling_below_the_floor_is_refused() {
        let with = |kib| KdfPolicy {
            argon2_max_memory_kib: Some(kib),
            ..KdfPolicy::default()
        };
        // At libcryptsetup's four passes the floor needs 9 MiB.
        assert_eq!(
            with(9_215).check(KdfBuild::Shipped),
            Err(KdfPolicyError::MemoryBelowFloor {
                set: 9_215,
                floor: 9_216
            })
        );
        assert_eq!(with(9_216).check(KdfBuild::Shipped), Ok(()));
        assert_eq!(with(19_456).check(KdfBuild::Test), Ok(()));
    }
}
