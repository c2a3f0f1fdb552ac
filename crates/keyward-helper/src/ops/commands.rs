//! Signed commands from the escrow server, relayed by the agent (or handed over by an admin):
//! verified against the pinned `[escrow] server_signing_key`, this device's id and the clock;
//! their id recorded as used — durably, before anything is done — in the root-only journal
//! `state_dir/command-journal.json`; then carried out by the very code the admin's CLI runs
//! (service rotation, revoke, the escrowed recovery rotation's first step). A command that
//! fails a check changes nothing. `server.rs` audits each one with its id and outcome.
//!
//! The agent class may submit commands: relaying is all it can do, since it cannot sign,
//! redirect or reuse one.

use std::sync::{Mutex, PoisonError};

use keyward_core::command::{Action, Command, CommandError, SignedCommand};
use keyward_core::command_journal::Journal;
use keyward_core::config::Config;
use keyward_core::ipc::{CommandOutcome, Reply};
use keyward_core::policy::PolicyOverride;
use keyward_core::quote;
use keyward_sys::failpoint::failpoint;
use keyward_sys::safe_fs;

use super::recovery;
use crate::ctx::state_owner;
use crate::error::OpError;
use crate::policy_override;

/// The replay journal, in `state_dir`.
const JOURNAL: &str = "command-journal.json";
/// Its size limit when read (1024 entries take about 150 KiB).
const JOURNAL_LIMIT: u64 = 1 << 20;

/// Check-and-record is one step: two connections with the same command cannot both pass.
static JOURNAL_LOCK: Mutex<()> = Mutex::new(());

/// Verify, record, act.
pub fn run(c: &Config, signed: &SignedCommand) -> Result<Reply, OpError> {
    // Quoted: until verified, the id is whatever the caller sent.
    let id = quote(&signed.command.id);
    let kind = signed.command.action.kind();
    let refused = |why: &dyn std::fmt::Display| {
        OpError::Refused(format!(
            "command {id} ({kind}) refused: {why}; nothing changed"
        ))
    };
    let escrow = c.escrow.as_ref().ok_or_else(|| {
        OpError::Failed(format!("command {id} ({kind}): no [escrow] server is configured, so there is no key to verify it with; nothing changed"),
        )
    })?;
    let device = recovery::this_device(c, escrow)?;
    let now = keyward_sys::clock::unix_secs();
    let command = signed
        .verify(&escrow.server_signing_key, &device, now)
        .map_err(|e| match e {
            CommandError::BadServerKey => {
                OpError::Failed(format!("command {id} ({kind}): {e}; nothing changed"))
            }
            e => refused(&e),
        })?;
    record(c, command, now).map_err(|e| match e {
        OpError::Refused(why) => refused(&why),
        other => OpError::Failed(format!("command {id} ({kind}): {other}; nothing changed")),
    })?;
    failpoint("command.recorded");
    match act(c, command) {
        Ok(outcome) => Ok(Reply::CommandDone {
            id: command.id.clone(),
            outcome,
        }),
        // The id stays used: the server sends a new command if it still wants this done.
        Err(e) => Err(e.reworded(|message| format!("command {id} ({kind}) failed: {message}"))),
    }
}

/// Record `command`'s id as used, durably. An unreadable journal refuses every command (fail
/// closed): starting a fresh one would make every unexpired command replayable.
fn record(c: &Config, command: &Command, now: u64) -> Result<(), OpError> {
    let _one = JOURNAL_LOCK.lock().unwrap_or_else(PoisonError::into_inner);
    let path = c.state_dir.join(JOURNAL);
    let io = |e: std::io::Error| OpError::Failed(format!("command journal: {e}"));
    let expect = safe_fs::Expect::private(state_owner(c).0);
    let mut journal: Journal = safe_fs::read_json(&path, expect, JOURNAL_LIMIT)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::InvalidData => OpError::Failed(format!(
                "the command journal {} is unreadable ({e}); no command runs until an admin repairs it",
                path.display()
            )),
            _ => io(e),
        })?
        .unwrap_or_default();
    journal
        .record(command, now)
        .map_err(|e| OpError::Refused(e.to_string()))?;
    safe_fs::write_json(&c.state_dir, JOURNAL, &journal, 0o600).map_err(io)
}

/// Carry out a verified, recorded command.
fn act(c: &Config, command: &Command) -> Result<CommandOutcome, OpError> {
    let unexpected = |r: Reply| OpError::Failed(format!("unexpected reply {r:?}"));
    match &command.action {
        Action::RotateRecovery { volume } => {
            // The helper cannot reach the server: it begins the rotation (a pending key,
            // sealed; ciphertext only for the server) and the agent carries it from here.
            // Should the agent not, its schedule resumes a pending rotation at the next round.
            match recovery::escrow_begin(c, super::configured(c, volume)?)? {
                Reply::RecoveryEscrow { slot, .. } => Ok(CommandOutcome::RecoveryRotationBegun {
                    volume: volume.clone(),
                    slot,
                }),
                other => Err(unexpected(other)),
            }
        }
        Action::RotateService { volume } => {
            match super::on_volume(c, volume, super::service_rotate_on)? {
                Reply::ServiceRotated { old, new } => Ok(CommandOutcome::ServiceRotated {
                    volume: volume.clone(),
                    old,
                    new,
                }),
                other => Err(unexpected(other)),
            }
        }
        Action::RevokeUser { volume, user } => {
            match super::on_volume(c, volume, |v| super::revoke_on(v, user))? {
                Reply::Revoked { slot } => Ok(CommandOutcome::UserRevoked {
                    volume: volume.clone(),
                    user: user.clone(),
                    slot,
                }),
                other => Err(unexpected(other)),
            }
        }
        Action::SetPolicy {
            recovery_rotation_days,
            revoke_unmanaged,
        } => policy_override::replace(
            c,
            &PolicyOverride {
                command_id: command.id.clone(),
                issued: command.issued,
                recovery_rotation_days: *recovery_rotation_days,
                revoke_unmanaged: *revoke_unmanaged,
            },
        )
        .map(CommandOutcome::PolicySet),
        _ => Err(OpError::Usage(
            "this helper does not know that action".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn a_damaged_journal_refuses_every_command_and_a_sound_one_records_each_id_once() {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "state_dir = \"{}\"\n[[volume]]\nname = \"root\"\ndevice = \"/dev/null\"\n",
            dir.path().display()
        );
        let c = Config::parse(&text).unwrap();
        let command = Command {
            id: "0123456789abcdef".into(),
            device: "this-device".into(),
            issued: 1,
            expires: 1000,
            action: Action::RotateService {
                volume: keyward_core::VolumeName::parse("root").unwrap(),
            },
        };
        record(&c, &command, 10).unwrap();
        let replayed = record(&c, &command, 10).unwrap_err();
        assert!(matches!(replayed, OpError::Refused(_)), "{replayed:?}");

        let path = c.state_dir.join(JOURNAL);
        for damaged in ["{\"used\": [", "not json", "[]"] {
            std::fs::write(&path, damaged).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
            let parser = serde_json::from_str::<Journal>(damaged).unwrap_err();
            let e = record(&c, &command, 10).unwrap_err();
            assert_eq!(
                e.to_string(),
                format!(
                    "the command journal {} is unreadable ({parser}); no command runs until an admin repairs it",
                    path.display()
                )
            );
            // Fail closed: not replaced by a fresh journal.
            assert_eq!(std::fs::read_to_string(&path).unwrap(), damaged);
        }

        // A journal that cannot be read at all is a plain I/O error, and refuses all the same.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = record(&c, &command, 10).unwrap_err();
        assert!(e.to_string().starts_with("command journal: "), "{e}");
    }
}
