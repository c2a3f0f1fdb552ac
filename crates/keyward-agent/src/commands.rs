//! Signed commands from the escrow server, as the agent handles them: relay each one from a
//! check-in answer to the helper — which alone decides, after checking the signature against
//! the pinned key, the device, the validity window and that the id was never used — log what
//! became of it, carry on an escrowed recovery rotation the helper began, and keep the outcomes
//! until a check-in has reported them to the server. Nothing here is a security check: a
//! compromised agent could skip any of it, and gains nothing by doing so.

use std::sync::{Mutex, PoisonError};

use keyward_core::command::SignedCommand;
use keyward_core::config::Config;
use keyward_core::ipc::{CommandOutcome, Reply, Request};
use keyward_core::schedule::{CommandReport, CommandStatus};
use keyward_core::{quote, VolumeName};
use keyward_sys::helper_client;

use crate::escrow::{self, Failure};

/// At most this many commands from one answer are relayed; the rest wait for the next round
/// (a server re-sends a command until a check-in reports it).
const MAX_PER_ROUND: usize = 32;
/// At most this many outcomes wait to be reported; the oldest go first.
const MAX_UNREPORTED: usize = 256;

/// Outcomes not yet reported to the server.
static UNREPORTED: Mutex<Vec<CommandReport>> = Mutex::new(Vec::new());

/// What one batch of commands did.
#[derive(Debug, Default)]
pub struct Relayed {
    /// Volumes whose recovery key a command rotated (the round does not rotate them again).
    pub rotated: Vec<VolumeName>,
    /// True if any command changed something (the round reports again).
    pub changed: bool,
    /// The first escrowed rotation that failed (the round retries with backoff; the pending
    /// rotation is resumed).
    pub error: Option<Failure>,
}

/// Relay `commands` to the helper, in order.
pub fn relay(c: &Config, commands: &[SignedCommand]) -> Relayed {
    let mut out = Relayed::default();
    if commands.len() > MAX_PER_ROUND {
        eprintln!(
            "keywardd: the server sent {} commands; relaying {MAX_PER_ROUND} now, the rest later",
            commands.len()
        );
    }
    for signed in commands.iter().take(MAX_PER_ROUND) {
        let shown = quote(&signed.command.id);
        let request = Request::Command {
            signed: signed.clone(),
        };
        let (status, detail) = match helper_client::call(&c.helper_socket(), request) {
            Ok(Reply::CommandDone { outcome, .. }) => {
                out.changed = true;
                eprintln!("keywardd: command {shown}: {outcome}");
                match outcome {
                    CommandOutcome::RecoveryRotationBegun { volume, .. } => {
                        carry_rotation(c, &volume, &shown, &mut out)
                    }
                    other => (CommandStatus::Done, other.to_string()),
                }
            }
            Ok(other) => (CommandStatus::Failed, format!("unexpected reply {other:?}")),
            Err(e) if e.code == 5 => {
                // Not seen by the helper: not reported, so the server sends it again.
                eprintln!("keywardd: command {shown} not relayed: {}", e.message);
                continue;
            }
            Err(e) => {
                eprintln!("keywardd: command {shown}: {}", e.message);
                let status = if e.code == 4 {
                    CommandStatus::Refused
                } else {
                    CommandStatus::Failed
                };
                (status, e.message)
            }
        };
        remember(&signed.command.id, status, detail);
    }
    out
}

/// The helper began an escrowed recovery rotation for a command: upload, receipt, commit.
fn carry_rotation(
    c: &Config,
    volume: &VolumeName,
    shown: &str,
    out: &mut Relayed,
) -> (CommandStatus, String) {
    match escrow::rotate(c, volume) {
        Ok((slot, escrow_id)) => {
            out.rotated.push(volume.clone());
            let done =
                format!("{volume}: recovery key rotated: keyslot {slot}, escrowed as {escrow_id}");
            eprintln!("keywardd: command {shown}: {done}");
            (CommandStatus::Done, done)
        }
        Err((code, message)) => {
            let why = format!(
                "{volume}: recovery rotation begun but not finished ({message}); it is resumed at the next round"
            );
            eprintln!("keywardd: command {shown}: {why}");
            out.error.get_or_insert((code, message));
            (CommandStatus::Failed, why)
        }
    }
}

fn unreported() -> std::sync::MutexGuard<'static, Vec<CommandReport>> {
    UNREPORTED.lock().unwrap_or_else(PoisonError::into_inner)
}

fn remember(id: &str, status: CommandStatus, detail: String) {
    // An id the helper could not have accepted is not echoed to the server.
    let well_formed = (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !well_formed {
        return;
    }
    let mut pending = unreported();
    if pending.len() >= MAX_UNREPORTED {
        pending.remove(0);
    }
    pending.push(CommandReport {
        id: id.to_owned(),
        status,
        detail,
    });
}

/// The outcomes waiting to be reported.
pub fn to_report() -> Vec<CommandReport> {
    unreported().clone()
}

/// The first `n` outcomes reached the server.
pub fn reported(n: usize) {
    let mut pending = unreported();
    let n = n.min(pending.len());
    pending.drain(..n);
}
