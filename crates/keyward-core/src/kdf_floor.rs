//! The KDF floor for passphrase slots (issue 16): which keyslots derive their key too cheaply
//! for a secret a person chose, judged from the parameters the LUKS2 header records. Pure: the
//! helper reads the header, this module decides, `keyward verify` and `keyward status` report
//! (`weak-kdf`; which slots are held to it is [`crate::weak_kdf`]).
//!
//! The numbers are OWASP's (Password Storage Cheat Sheet, 2023) minimums for password hashes,
//! not libcryptsetup's own minimums (argon2 32 KiB and 4 passes, PBKDF2 1000 iterations), which
//! are sanity limits for random keys, not a cost for guessing a passphrase.

use std::fmt;

use serde_json::Value;

/// A keyslot's key derivation as the LUKS2 header records it (`keyslots.N.kdf`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SlotKdf {
    /// `{"type": "pbkdf2", "hash": …, "iterations": …}`.
    Pbkdf2 {
        /// The hash (`sha256`, `sha512`, …), as the header names it.
        hash: String,
        /// Iterations.
        iterations: u64,
    },
    /// `{"type": "argon2id" | "argon2i", "time": …, "memory": …, "cpus": …}`.
    Argon2 {
        /// `argon2id` or `argon2i`.
        variant: Argon2Variant,
        /// Passes over memory (`time`).
        time: u64,
        /// Memory in KiB (`memory`).
        memory_kib: u64,
        /// Lanes (`cpus`); reported, not judged: the work per guess does not depend on it.
        cpus: u64,
    },
    /// A type keyward cannot judge, as the header names it (sanitised).
    Unknown {
        /// The header's `type`.
        kind: String,
    },
    /// Not a LUKS2 keyslot (a FileVault holder): macOS's own derivation, not judged here.
    NotLuks2,
}

/// The argon2 variants LUKS2 knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Argon2Variant {
    /// Data-independent and data-dependent passes: LUKS2's default since cryptsetup 2.4.
    Argon2id,
    /// Data-independent passes only: LUKS2's default before cryptsetup 2.4.
    Argon2i,
}

impl Argon2Variant {
    /// The header's name for it.
    pub fn label(self) -> &'static str {
        match self {
            Argon2Variant::Argon2id => "argon2id",
            Argon2Variant::Argon2i => "argon2i",
        }
    }
}

/// Header text, kept printable and short: it is shown to an admin.
fn clean(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .take(32)
        .collect()
}

impl SlotKdf {
    /// From a keyslot's `kdf` object. A missing or non-numeric cost reads as 0, which no floor
    /// accepts: a header keyward cannot read is never judged strong.
    pub fn from_luks2(kdf: &Value) -> Self {
        let num = |k: &str| kdf.get(k).and_then(Value::as_u64).unwrap_or(0);
        let kind = kdf.get("type").and_then(Value::as_str).unwrap_or("");
        let argon2 = |variant| SlotKdf::Argon2 {
            variant,
            time: num("time"),
            memory_kib: num("memory"),
            cpus: num("cpus"),
        };
        match kind {
            "pbkdf2" => SlotKdf::Pbkdf2 {
                hash: clean(kdf.get("hash").and_then(Value::as_str).unwrap_or("")),
                iterations: num("iterations"),
            },
            "argon2id" => argon2(Argon2Variant::Argon2id),
            "argon2i" => argon2(Argon2Variant::Argon2i),
            other => SlotKdf::Unknown { kind: clean(other) },
        }
    }

    /// The type alone, as `status` shows it: `argon2id`, `pbkdf2-sha512`, ….
    pub fn label(&self) -> String {
        match self {
            SlotKdf::Pbkdf2 { hash, .. } if hash.is_empty() => "pbkdf2".into(),
            SlotKdf::Pbkdf2 { hash, .. } => format!("pbkdf2-{hash}"),
            SlotKdf::Argon2 { variant, .. } => variant.label().into(),
            SlotKdf::Unknown { kind } if kind.is_empty() => "unknown".into(),
            SlotKdf::Unknown { kind } => kind.clone(),
            SlotKdf::NotLuks2 => "not-luks2".into(),
        }
    }
}

impl fmt::Display for SlotKdf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SlotKdf::Pbkdf2 { iterations, .. } => {
                write!(f, "{}, {iterations} iterations", self.label())
            }
            SlotKdf::Argon2 {
                time,
                memory_kib,
                cpus,
                ..
            } => write!(
                f,
                "{}, time {time}, memory {memory_kib} KiB, {cpus} cpus",
                self.label()
            ),
            SlotKdf::Unknown { .. } | SlotKdf::NotLuks2 => f.write_str(&self.label()),
        }
    }
}

/// One argon2 cost that meets a floor: at least this much memory for at least this many passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Argon2Cost {
    /// Memory in KiB.
    pub memory_kib: u64,
    /// Passes.
    pub time: u64,
}

/// The least a passphrase slot's key derivation must cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KdfFloor {
    /// Where the numbers come from, for reports.
    pub name: &'static str,
    /// An argon2 slot meets the floor if it meets any one of these.
    pub argon2: &'static [Argon2Cost],
    /// PBKDF2 iterations by hash.
    pub pbkdf2: &'static [(&'static str, u64)],
    /// PBKDF2 iterations for any hash not in `pbkdf2`.
    pub pbkdf2_other: u64,
}

/// OWASP's argon2id minimums (Password Storage Cheat Sheet): five configurations of equal
/// defence, from 46 MiB with one pass to 7 MiB with five. cryptsetup never makes fewer than
/// four passes, so a slot it made meets this floor with 9 MiB or more. argon2i is held to the
/// same numbers (the LUKS2 default until cryptsetup 2.4; most installers' older slots).
const OWASP_ARGON2: &[Argon2Cost] = &[
    Argon2Cost {
        memory_kib: 47_104,
        time: 1,
    },
    Argon2Cost {
        memory_kib: 19_456,
        time: 2,
    },
    Argon2Cost {
        memory_kib: 12_288,
        time: 3,
    },
    Argon2Cost {
        memory_kib: 9_216,
        time: 4,
    },
    Argon2Cost {
        memory_kib: 7_168,
        time: 5,
    },
];

/// OWASP's PBKDF2 minimums: HMAC-SHA512 210,000, HMAC-SHA256 600,000, HMAC-SHA1 1,300,000.
/// A hash OWASP gives no number for (ripemd160, whirlpool, …) is held to SHA-1's, the highest.
pub const OWASP_FLOOR: KdfFloor = KdfFloor {
    name: "OWASP minimum",
    argon2: OWASP_ARGON2,
    pbkdf2: &[
        ("sha512", 210_000),
        ("sha256", 600_000),
        ("sha1", 1_300_000),
    ],
    pbkdf2_other: 1_300_000,
};

/// The floor of a test build with `danger_fast_kdf`: what that setting itself makes (PBKDF2
/// × 1000, any hash) and libcryptsetup's own argon2 minimums (32 KiB, 4 passes).
pub const FAST_TEST_FLOOR: KdfFloor = KdfFloor {
    name: "danger_fast_kdf (test build)",
    argon2: &[Argon2Cost {
        memory_kib: 32,
        time: 4,
    }],
    pbkdf2: &[],
    pbkdf2_other: crate::kdf::RANDOM_KEY_PBKDF2_ITERATIONS as u64,
};

/// What a slot below the floor would have needed, in words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shortfall(pub String);

impl fmt::Display for Shortfall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl KdfFloor {
    /// PBKDF2 iterations this floor asks of `hash`.
    pub fn pbkdf2_iterations(&self, hash: &str) -> u64 {
        self.pbkdf2
            .iter()
            .find_map(|(h, n)| (*h == hash).then_some(*n))
            .unwrap_or(self.pbkdf2_other)
    }

    /// Does a passphrase slot with `kdf` meet the floor? A FileVault holder is not judged.
    pub fn judge(&self, kdf: &SlotKdf) -> Result<(), Shortfall> {
        let name = self.name;
        match kdf {
            SlotKdf::Pbkdf2 { hash, iterations } => {
                let need = self.pbkdf2_iterations(hash);
                if *iterations >= need {
                    return Ok(());
                }
                Err(Shortfall(format!(
                    "{} needs at least {need} iterations ({name})",
                    kdf.label()
                )))
            }
            SlotKdf::Argon2 {
                time, memory_kib, ..
            } => {
                if self
                    .argon2
                    .iter()
                    .any(|c| *memory_kib >= c.memory_kib && *time >= c.time)
                {
                    return Ok(());
                }
                let options: Vec<String> = self
                    .argon2
                    .iter()
                    .map(|c| format!("{} KiB with {} passes", c.memory_kib, c.time))
                    .collect();
                Err(Shortfall(format!(
                    "{} needs at least {} ({name})",
                    kdf.label(),
                    options.join(", or ")
                )))
            }
            SlotKdf::Unknown { .. } => Err(Shortfall(format!(
                "keyward cannot judge a {} slot: treated as weak",
                kdf.label()
            ))),
            SlotKdf::NotLuks2 => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn argon2(variant: &str, memory: u64, time: u64) -> SlotKdf {
        SlotKdf::from_luks2(&json!({"type": variant, "time": time, "memory": memory, "cpus": 1}))
    }

    fn pbkdf2(hash: &str, iterations: u64) -> SlotKdf {
        SlotKdf::from_luks2(&json!({"type": "pbkdf2", "hash": hash, "iterations": iterations}))
    }

    #[test]
    fn reads_the_fields_libcryptsetup_writes() {
        // As `cryptsetup luksDump --dump-json-metadata` (2.6) prints them.
        let a = json!({"type": "argon2id", "time": 4, "memory": 19456, "cpus": 1, "salt": "x"});
        assert_eq!(
            SlotKdf::from_luks2(&a),
            SlotKdf::Argon2 {
                variant: Argon2Variant::Argon2id,
                time: 4,
                memory_kib: 19456,
                cpus: 1
            }
        );
        let p = json!({"type": "pbkdf2", "hash": "sha256", "iterations": 1000, "salt": "x"});
        assert_eq!(
            SlotKdf::from_luks2(&p).to_string(),
            "pbkdf2-sha256, 1000 iterations"
        );
        assert_eq!(
            argon2("argon2i", 4096, 4).to_string(),
            "argon2i, time 4, memory 4096 KiB, 1 cpus"
        );
    }

    #[test]
    fn argon2_below_and_at_the_floor() {
        let f = &OWASP_FLOOR;
        for variant in ["argon2id", "argon2i"] {
            // Each of OWASP's five configurations meets it, exactly.
            for c in f.argon2 {
                assert_eq!(f.judge(&argon2(variant, c.memory_kib, c.time)), Ok(()));
                assert!(f.judge(&argon2(variant, c.memory_kib - 1, c.time)).is_err());
            }
            // cryptsetup's fewest passes with too little memory, and plenty of memory is not
            // enough with no passes.
            assert!(f.judge(&argon2(variant, 9_215, 4)).is_err());
            assert!(f.judge(&argon2(variant, 1_048_576, 0)).is_err());
            // The LUKS2 default on a large machine.
            assert_eq!(f.judge(&argon2(variant, 1_048_576, 4)), Ok(()));
        }
        let why = f
            .judge(&argon2("argon2id", 32, 4))
            .expect_err("weak")
            .to_string();
        assert!(why.contains("19456 KiB with 2 passes"), "{why}");
    }

    #[test]
    fn pbkdf2_below_and_at_the_floor_by_hash() {
        let f = &OWASP_FLOOR;
        for (hash, need) in [
            ("sha512", 210_000),
            ("sha256", 600_000),
            ("sha1", 1_300_000),
            // No OWASP number: the highest.
            ("whirlpool", 1_300_000),
            ("", 1_300_000),
        ] {
            assert_eq!(f.judge(&pbkdf2(hash, need)), Ok(()), "{hash}");
            assert!(f.judge(&pbkdf2(hash, need - 1)).is_err(), "{hash}");
        }
        let why = f
            .judge(&pbkdf2("sha256", 1000))
            .expect_err("weak")
            .to_string();
        assert_eq!(
            why,
            "pbkdf2-sha256 needs at least 600000 iterations (OWASP minimum)"
        );
    }

    #[test]
    fn what_cannot_be_read_is_never_strong() {
        let f = &OWASP_FLOOR;
        // Costs missing or not numbers read as 0.
        assert!(f
            .judge(&SlotKdf::from_luks2(&json!({"type": "pbkdf2"})))
            .is_err());
        let odd = json!({"type": "argon2id", "time": "4", "memory": -1});
        assert!(f.judge(&SlotKdf::from_luks2(&odd)).is_err());
        // A type keyward does not know, however it is spelled.
        let other = SlotKdf::from_luks2(&json!({"type": "scrypt\u{1b}[31m"}));
        assert_eq!(other.label(), "scrypt31m");
        assert!(f.judge(&other).is_err());
        assert!(f.judge(&SlotKdf::from_luks2(&json!({}))).is_err());
        // A FileVault holder is macOS's business.
        assert_eq!(f.judge(&SlotKdf::NotLuks2), Ok(()));
    }

    #[test]
    fn the_fast_test_floor_accepts_what_danger_fast_kdf_makes_and_no_less() {
        let f = &FAST_TEST_FLOOR;
        assert_eq!(f.judge(&pbkdf2("sha512", 1000)), Ok(()));
        assert_eq!(f.judge(&pbkdf2("sha256", 1000)), Ok(()));
        assert!(f.judge(&pbkdf2("sha512", 999)).is_err());
        assert_eq!(f.judge(&argon2("argon2id", 32, 4)), Ok(()));
        assert!(f.judge(&argon2("argon2id", 32, 3)).is_err());
        assert!(f.judge(&SlotKdf::Unknown { kind: "x".into() }).is_err());
    }
}
