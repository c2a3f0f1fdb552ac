//! keyward-core: the sans-IO heart of keyward.
//!
//! It owns the model of "who can unlock this volume" (slots, tokens, holders), the `Secret`
//! type, the closed operation catalog with its privilege classes, invariants I1–I3, the
//! orderings that change keyslots without ever losing a working one, the recovery-key
//! format, and the escrow server's signed receipts and device commands. It performs no I/O:
//! clocks, randomness and devices come in through traits (`SlotBackend`), so everything here
//! is unit- and property-tested without root.
#![forbid(unsafe_code)]

pub mod access;
pub mod audit;
pub mod catalog;
pub mod command;
pub mod command_journal;
pub mod config;
pub mod error;
pub mod escrow;
#[cfg(feature = "fake")]
pub mod fake;
pub mod fuzz_entry;
pub mod ids;
pub mod invariants;
pub mod ipc;
pub mod kdf;
pub mod model;
pub mod orderings;
pub mod policy;
pub mod recovery_key;
pub mod schedule;
pub mod secret;
pub mod store;
pub mod token;

pub use error::{InputError, Refusal, StoreError};
pub use ids::{SlotId, TokenId, Uid, UserName, VolumeName};
pub use model::{Holder, HolderRole, SlotInfo, SlotOwner, SlotPriority, TokenEntry, VolumeState};
pub use secret::Secret;
pub use store::{Authority, GrantRequest, UnlockStore};
pub use token::{KeywardToken, Role, TokenState};

/// Quote a caller-supplied string for a message or log line: control characters, quotes and
/// backslashes escaped, long strings cut at 64 characters. Never use it on secrets.
pub fn quote(s: &str) -> String {
    const MAX: usize = 64;
    let mut out = String::with_capacity(s.len().min(MAX) + 2);
    out.push('"');
    for (i, c) in s.chars().enumerate() {
        if i == MAX {
            out.push('…');
            break;
        }
        out.extend(c.escape_debug());
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn quote_escapes_and_truncates() {
        assert_eq!(super::quote("a\nb\"\0"), r#""a\nb\"\0""#);
        assert_eq!(super::quote(&"x".repeat(100)).chars().count(), 64 + 3);
        assert_eq!(super::quote("\u{1b}[2J"), r#""\u{1b}[2J""#);
    }
}
