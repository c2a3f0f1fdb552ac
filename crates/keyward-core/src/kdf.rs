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
        /// Set when a boot budget chose `time_ms`: the benchmarked cost must then be lifted to
        /// this floor if the budget's share is too short for it
        /// ([`crate::boot_budget::lift_to_floor`]).
        floor: Option<&'static KdfFloor>,
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
    /// `boot_budget_ms` and `danger_fast_kdf` together: fast test slots are PBKDF2, which the
    /// budget does not size.
    #[error("[kdf] boot_budget_ms sizes argon2id passphrase slots; danger_fast_kdf makes them PBKDF2 × 1000: set one, not both")]
    BudgetWithFastKdf,
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
    /// The boot budget: every new or rekeyed passphrase slot gets the time target
    /// budget ÷ (passphrase slots the volume will hold), never below the floor. Excludes
    /// `argon2_time_ms` (config load refuses both).
    pub boot_budget_ms: Option<u32>,
}

impl KdfPolicy {
    /// The parameters for a new slot of `class` on a volume whose typed password will try
    /// `passphrase_slots` passphrase slots once it is added
    /// ([`crate::boot_budget::passphrase_slots_after_add`]); only a boot budget looks at it.
    pub fn params(&self, class: KdfClass, passphrase_slots: u32) -> KdfParams {
        match class {
            KdfClass::Passphrase if !self.danger_fast_kdf => match self.boot_budget_ms {
                Some(budget) => KdfParams::Argon2id {
                    time_ms: Some(crate::boot_budget::per_slot_ms(budget, passphrase_slots)),
                    max_memory_kib: self.argon2_max_memory_kib,
                    floor: Some(&OWASP_FLOOR),
                },
                None => KdfParams::Argon2id {
                    time_ms: self.argon2_time_ms,
                    max_memory_kib: self.argon2_max_memory_kib,
                    floor: None,
                },
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
        if self.danger_fast_kdf && self.boot_budget_ms.is_some() {
            return Err(KdfPolicyError::BudgetWithFastKdf);
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
        assert_eq!(
            p.params(KdfClass::Passphrase, 5),
            KdfParams::Argon2id {
                time_ms: None,
                max_memory_kib: None,
                floor: None
            }
        );
        assert_eq!(
            p.params(KdfClass::RandomKey, 5),
            KdfParams::Pbkdf2Sha512 { iterations: 1000 }
        );
        let fast = KdfPolicy {
            danger_fast_kdf: true,
            ..p
        };
        assert_eq!(
            fast.params(KdfClass::Passphrase, 5),
            KdfParams::Pbkdf2Sha512 { iterations: 1000 }
        );
    }

    #[test]
    fn a_boot_budget_gives_each_passphrase_slot_its_share_and_the_floor() {
        let p = KdfPolicy {
            boot_budget_ms: Some(2000),
            argon2_max_memory_kib: Some(65_536),
            ..KdfPolicy::default()
        };
        for (slots, share) in [(1, 2000), (4, 500), (16, 125), (32, 62)] {
            assert_eq!(
                p.params(KdfClass::Passphrase, slots),
                KdfParams::Argon2id {
                    time_ms: Some(share),
                    max_memory_kib: Some(65_536),
                    floor: Some(&OWASP_FLOOR)
                },
                "{slots} slots"
            );
        }
        // Random keys stay PBKDF2 × 1000: the budget is for passphrases.
        assert_eq!(
            p.params(KdfClass::RandomKey, 16),
            KdfParams::Pbkdf2Sha512 { iterations: 1000 }
        );
        // With argon2_time_ms instead, the count does not matter (today's behaviour).
        let fixed = KdfPolicy {
            argon2_time_ms: Some(800),
            ..KdfPolicy::default()
        };
        assert_eq!(
            fixed.params(KdfClass::Passphrase, 16),
            fixed.params(KdfClass::Passphrase, 1)
        );
        // A budget and danger_fast_kdf contradict each other.
        let both = KdfPolicy {
            danger_fast_kdf: true,
            ..p
        };
        assert_eq!(
            both.check(KdfBuild::Test),
            Err(KdfPolicyError::BudgetWithFastKdf)
        );
        assert_eq!(p.check(KdfBuild::Shipped), Ok(()));
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
