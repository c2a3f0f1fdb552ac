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
use keyward_sys::safe_fs;

use super::recovery;
use crate::error::OpError;
use crate::policy_override;
use keyward_sys::failpoint::failpoint;

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
    let io = |e: &dyn std::fmt::Display| OpError::Failed(format!("command journal: {e}"));
    let mut journal = match safe_fs::read_checked(&path, safe_fs::Expect::private(0), JOURNAL_LIMIT)
    {
        Ok(None) => Journal::default(),
        Ok(Some(bytes)) => serde_json::from_slice(&bytes).map_err(|e| {
            OpError::Failed(format!(
                "the command journal {} is unreadable ({e}); no command runs until an admin repairs it",
                path.display()
            ))
        })?,
        Err(e) => return Err(io(&e)),
    };
    journal
        .record(command, now)
        .map_err(|e| OpError::Refused(e.to_string()))?;
    let json = serde_json::to_vec(&journal).map_err(|e| OpError::Failed(e.to_string()))?;
    safe_fs::write_atomic(&c.state_dir, JOURNAL, &json, 0o600).map_err(|e| io(&e))
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
        } => {
            let current = policy_override::load(c).map_err(OpError::Failed)?;
            if let Some(newer) = current.filter(|o| o.issued > command.issued) {
                return Err(OpError::Refused(format!(
                    "superseded by the policy of command {}, issued later; nothing changed",
                    quote(&newer.command_id)
                )));
            }
            policy_override::store(
                c,
                &PolicyOverride {
                    command_id: command.id.clone(),
                    issued: command.issued,
                    recovery_rotation_days: *recovery_rotation_days,
                    revoke_unmanaged: *revoke_unmanaged,
                },
            )?;
            Ok(CommandOutcome::PolicySet(policy_override::report(c)))
        }
        _ => Err(OpError::Usage(
            "this helper does not know that action".into(),
        )),
    }
}
