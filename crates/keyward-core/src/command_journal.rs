//! The replay journal of signed commands, pure: which command ids this device has used, each
//! kept until its command could no longer verify anyway (its expiry plus the clock skew
//! allowance), so the set stays small and bounded. The helper loads it from its root-only state
//! directory, records an id here, and writes it back durably *before* acting. Pure: no I/O, the
//! caller supplies the clock.

use serde::{Deserialize, Serialize};

use crate::command::{Command, CommandError};

/// At most this many unexpired ids. A genuine server sends a device a handful of commands a
/// week; reaching this refuses new commands (never forgets an unexpired id, which would let
/// it be replayed).
pub const MAX_USED: usize = 1024;

/// One used command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Used {
    /// The command's id.
    pub id: String,
    /// Its expiry (Unix seconds): the id is forgotten once the command could not verify.
    pub expires: u64,
    /// Its action's kind, for whoever reads the file.
    pub action: String,
    /// When this device accepted it (Unix seconds).
    pub used_at: u64,
}

/// The journal.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Journal {
    /// Used ids, oldest first.
    pub used: Vec<Used>,
}

impl Journal {
    /// Forget ids whose commands can no longer verify at `now`; how many were dropped.
    pub fn prune(&mut self, now: u64) -> usize {
        let before = self.used.len();
        self.used.retain(|u| !Command::expired_at(u.expires, now));
        before - self.used.len()
    }

    /// Whether `id` was used (and is still remembered).
    pub fn contains(&self, id: &str) -> bool {
        self.used.iter().any(|u| u.id == id)
    }

    /// Record `command` as used at `now`: refused if its id was used before, or if the journal
    /// is full of unexpired ids. Prunes first.
    pub fn record(&mut self, command: &Command, now: u64) -> Result<(), CommandError> {
        self.prune(now);
        if self.contains(&command.id) {
            return Err(CommandError::Replayed);
        }
        if self.used.len() >= MAX_USED {
            return Err(CommandError::JournalFull);
        }
        self.used.push(Used {
            id: command.id.clone(),
            expires: command.expires,
            action: command.action.kind().to_owned(),
            used_at: now,
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::{Action, CLOCK_SKEW_SECS};

    fn cmd(id: &str, expires: u64) -> Command {
        Command {
            id: id.into(),
            device: "dev-1".into(),
            issued: 0,
            expires,
            action: Action::RotateService {
                volume: crate::VolumeName::parse("data").expect("valid"),
            },
        }
    }

    #[test]
    fn an_id_is_used_once_and_forgotten_only_after_it_expired() {
        let mut j = Journal::default();
        let a = cmd("aaaaaaaaaaaaaaaa", 100);
        assert_eq!(j.record(&a, 10), Ok(()));
        assert_eq!(j.record(&a, 11), Err(CommandError::Replayed));
        // Still remembered while it could verify (skew included)…
        assert_eq!(
            j.record(&a, 100 + CLOCK_SKEW_SECS),
            Err(CommandError::Replayed)
        );
        // …and forgotten once it could not.
        assert_eq!(j.prune(101 + CLOCK_SKEW_SECS), 1);
        assert!(j.used.is_empty());
    }

    #[test]
    fn the_journal_stays_bounded_without_forgetting_live_ids() {
        let mut j = Journal::default();
        for i in 0..MAX_USED {
            j.record(&cmd(&format!("{i:016}"), 1000), 0).expect("room");
        }
        assert_eq!(
            j.record(&cmd("ffffffffffffffff", 1000), 0),
            Err(CommandError::JournalFull)
        );
        assert!(j.contains(&format!("{:016}", 0)));
        // Once they expire there is room again.
        let later = 1001 + CLOCK_SKEW_SECS;
        assert_eq!(
            j.record(&cmd("ffffffffffffffff", later + 10), later),
            Ok(())
        );
        assert_eq!(j.used.len(), 1);
    }

    #[test]
    fn serde_roundtrip() {
        let mut j = Journal::default();
        j.record(&cmd("aaaaaaaaaaaaaaaa", 100), 1).expect("room");
        let text = serde_json::to_string(&j).expect("encodes");
        assert_eq!(serde_json::from_str::<Journal>(&text).expect("decodes"), j);
    }
}
