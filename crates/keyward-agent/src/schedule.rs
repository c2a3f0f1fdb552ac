//! The escrow round, run on the check-in interval: read every volume's holders from the
//! helper, report them to the server, relay the signed commands in its answer to the helper
//! (`commands.rs`), then rotate each recovery key that is due (a pending rotation to finish, a
//! key an admin has seen, a volume without an escrowed key, or a key older than
//! `recovery_rotation_days` — the server's signed override of it included), and report again
//! if anything changed or a command's outcome waits to be reported. The rules are
//! `keyward_core::schedule`; this file only moves data between the helper and the server.

use std::collections::HashMap;

use keyward_core::config::Config;
use keyward_core::ipc::{Reply, Request, VolumeReport};
use keyward_core::schedule::{self, CheckIn, ServiceHealth, VolumeCheckIn};
use keyward_core::VolumeName;
use keyward_sys::helper_client;

use crate::commands;
use crate::escrow::{self, Failure};

/// The service secret's health per volume, from the last verification.
pub type Health = HashMap<String, ServiceHealth>;

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn status(c: &Config) -> Result<Vec<VolumeReport>, Failure> {
    match helper_client::call(&c.helper_socket(), Request::Status { volume: None }) {
        Ok(Reply::Status(reports)) => Ok(reports),
        Ok(other) => Err(escrow::failed(format!("unexpected reply {other:?}"))),
        Err(e) => Err(escrow::failed(format!("helper: {}", e.message))),
    }
}

fn report(reports: &[VolumeReport], health: &Health) -> Result<CheckIn, Failure> {
    let mut volumes = Vec::with_capacity(reports.len());
    for r in reports {
        let volume = VolumeName::parse(&r.volume).map_err(escrow::failed)?;
        let (recovery, active) = if r.error.is_some() {
            (schedule::RecoveryState::Unknown, None)
        } else {
            schedule::recovery_state(&r.holders)
        };
        volumes.push(VolumeCheckIn {
            volume,
            recovery,
            escrow_id: active.and_then(|h| h.escrow_id.clone()),
            rotated_at: active.and_then(|h| h.created),
            service: health
                .get(&r.volume)
                .copied()
                .unwrap_or(ServiceHealth::Unknown),
            holders: u32::try_from(r.holders.len()).unwrap_or(u32::MAX),
            violations: u32::try_from(r.violations.len()).unwrap_or(u32::MAX),
        });
    }
    Ok(CheckIn {
        volumes,
        commands: Vec::new(),
    })
}

/// Check in with `reports` and the command outcomes not yet reported; the server's answer.
fn checkin(
    c: &Config,
    reports: &[VolumeReport],
    health: &Health,
) -> Result<schedule::CheckInReply, Failure> {
    let mut body = report(reports, health)?;
    body.commands = commands::to_report();
    let answer = escrow::checkin(c, &body)?;
    commands::reported(body.commands.len());
    Ok(answer)
}

/// `recovery_rotation_days` in force: the helper applies the server's signed override (its
/// state is root-only); `keyward.toml`'s value if the helper cannot say.
fn rotation_days(c: &Config) -> u32 {
    match helper_client::call(&c.helper_socket(), Request::Policy) {
        Ok(Reply::Policy(p)) => p.recovery_rotation_days,
        _ => c.policy.recovery_rotation_days,
    }
}

/// One round. `Err` when the server could not be reached or a due rotation failed: the
/// caller retries with backoff; every key that was valid stays valid.
pub fn round(c: &Config, health: &Health) -> Result<(), Failure> {
    let reports = status(c)?;
    let answer = checkin(c, &reports, health)?;
    let relayed = commands::relay(c, &answer.commands);
    let mut first_error = relayed.error;
    let mut changed = relayed.changed;
    let days = rotation_days(c);
    for r in reports.iter().filter(|r| r.error.is_none()) {
        let flagged = answer.rotate.iter().any(|v| v.as_str() == r.volume);
        let Some(why) = schedule::recovery_due(&r.holders, now(), days, flagged) else {
            continue;
        };
        let volume = VolumeName::parse(&r.volume).map_err(escrow::failed)?;
        if relayed.rotated.contains(&volume) {
            continue;
        }
        match escrow::rotate(c, &volume) {
            Ok((slot, escrow_id)) => {
                changed = true;
                eprintln!(
                    "keywardd: {volume}: recovery key rotated ({why:?}): keyslot {slot}, escrow {escrow_id}"
                );
            }
            Err((code, message)) => {
                eprintln!("keywardd: {volume}: recovery rotation ({why:?}) failed: {message}");
                first_error.get_or_insert((code, message));
            }
        }
    }
    if changed || !commands::to_report().is_empty() {
        checkin(c, &status(c)?, health)?;
    }
    first_error.map_or(Ok(()), Err)
}
