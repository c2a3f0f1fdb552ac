//! keyward-core: the sans-IO heart of keyward.
//!
//! It owns the model of "who can unlock this volume" (slots, tokens, holders), the `Secret`
//! type, the closed operation catalog with its privilege classes, invariants I1–I3, the
//! orderings that change keyslots without ever losing a working one (`orderings`, and
//! `secret_orderings` for those that also keep a secret at rest), the recovery-key format,
//! the escrow server's signed receipts and device commands, and (feature `seal`) the age
//! encryptor the helper escrows recovery keys with. It performs no I/O: clocks, randomness,
//! stored secrets and devices come in through traits (`SlotBackend`, `secret_orderings::Host`),
//! so everything here is unit- and property-tested without root.
#![forbid(unsafe_code)]

pub mod access;
pub mod audit;
pub mod boot_budget;
pub mod boot_order;
pub mod catalog;
pub mod command;
pub mod command_journal;
pub mod config;
pub mod enrollment;
pub mod error;
pub mod escrow;
#[cfg(feature = "fake")]
pub mod fake;
pub mod fuzz_entry;
pub mod hex;
pub mod ids;
pub mod interrupted;
pub mod invariants;
pub mod ipc;
pub mod json_view;
pub mod kdf;
pub mod kdf_floor;
pub mod login;
pub mod login_queue;
pub mod model;
pub mod orderings;
pub mod policy;
pub mod recovery_key;
pub mod schedule;
#[cfg(feature = "seal")]
pub mod seal;
pub mod secret;
pub mod secret_orderings;
pub mod slot_memory;
pub mod store;
pub mod token;
pub mod unlock_cost;
pub mod weak_kdf;

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

/// Text from elsewhere (the escrow server, the agent, the helper) made safe for root's terminal:
/// control characters and bidirectional overrides are shown escaped, so a hostile server cannot
/// move the cursor, clear the screen, set the title or reorder what root reads. Newlines and
/// tabs stay.
pub fn printable(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        let hostile = (c.is_control() && c != '\n' && c != '\t')
            || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
        if hostile {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn printable_escapes_terminal_controls() {
        assert_eq!(super::printable("ok\tfine\n"), "ok\tfine\n");
        assert_eq!(super::printable("a\u{1b}[2Jb"), "a\\u{1b}[2Jb");
        assert_eq!(super::printable("x\u{7}\u{9b}y"), "x\\u{7}\\u{9b}y");
        assert_eq!(super::printable("id\u{202e}exe"), "id\\u{202e}exe");
        assert_eq!(super::printable("naïve ünïcødé"), "naïve ünïcødé");
    }

    #[test]
    fn quote_escapes_and_truncates() {
        assert_eq!(super::quote("a\nb\"\0"), r#""a\nb\"\0""#);
        assert_eq!(super::quote(&"x".repeat(100)).chars().count(), 64 + 3);
        assert_eq!(super::quote("\u{1b}[2J"), r#""\u{1b}[2J""#);
    }
}
