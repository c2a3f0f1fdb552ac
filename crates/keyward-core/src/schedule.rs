//! The agent's escrow schedule, pure: what it tells the server at check-in, what the server
//! answers, when a volume's recovery key is due for rotation, and how long to wait after a
//! failure. The agent feeds it the helper's status report, the clock and the server's answer.

use serde::{Deserialize, Serialize};

use crate::ids::VolumeName;
use crate::ipc::HolderReport;

/// Where a volume's recovery key stands, as the device reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum RecoveryState {
    /// An active recovery key whose ciphertext the server holds.
    Escrowed,
    /// A rotation begun and not yet committed (the previous key stays valid).
    Pending,
    /// An active recovery key that was never escrowed (standalone mode).
    Standalone,
    /// No recovery key.
    None,
    /// The volume could not be read.
    Unknown,
}

/// The service secret's health, from the helper's last verification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum ServiceHealth {
    /// The stored secret opens its slot.
    Ok,
    /// It no longer does.
    Drift,
    /// No service slot or no secret (not bootstrapped).
    Missing,
    /// Verification failed.
    Error,
    /// Not verified yet.
    Unknown,
}

impl ServiceHealth {
    /// From the helper's `VerifyReport::service` word.
    pub fn from_report(word: &str) -> Self {
        match word {
            "ok" => Self::Ok,
            "drift" => Self::Drift,
            "missing" => Self::Missing,
            "error" => Self::Error,
            _ => Self::Unknown,
        }
    }
}

/// One volume in a check-in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VolumeCheckIn {
    /// The volume.
    pub volume: VolumeName,
    /// Its recovery key.
    pub recovery: RecoveryState,
    /// The escrow id of the active recovery key, if escrowed.
    pub escrow_id: Option<String>,
    /// When the active recovery key's rotation began (Unix seconds).
    pub rotated_at: Option<u64>,
    /// The service secret's health.
    pub service: ServiceHealth,
    /// Unlock holders (slots), all roles.
    pub holders: u32,
    /// Invariant violations the helper found.
    pub violations: u32,
}

/// The body of `POST /v1/devices/{device}/checkin`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckIn {
    /// Every configured volume.
    pub volumes: Vec<VolumeCheckIn>,
    /// What became of the signed commands the server sent since the last check-in that
    /// reached it (absent when there is nothing to report).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub commands: Vec<CommandReport>,
}

/// The fate of one signed command at this device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandReport {
    /// The command's id, as the server sent it (the agent sends it back only if it is
    /// well-formed).
    pub id: String,
    /// What happened.
    pub status: CommandStatus,
    /// The helper's outcome or error message.
    pub detail: String,
}

/// What became of a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum CommandStatus {
    /// Verified, recorded as used, carried out.
    Done,
    /// The helper refused it (bad signature, another device, expired, already used, …).
    Refused,
    /// Verified and recorded as used, but the action failed (e.g. no such user slot, or the
    /// escrow upload failed and the rotation stays pending); it will not run again.
    Failed,
}

/// The server's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct CheckInReply {
    /// Volumes whose active recovery key an admin has seen: rotate them now.
    #[serde(default)]
    pub rotate: Vec<VolumeName>,
    /// Commands for this device, signed with the server's key; the agent relays each to the
    /// helper, which verifies it before acting.
    #[serde(default)]
    pub commands: Vec<crate::command::SignedCommand>,
}

/// Why a rotation is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Due {
    /// A begun rotation waits for its upload and commit.
    Resume,
    /// An admin has seen the key.
    AfterUse,
    /// The volume has no escrowed recovery key.
    NotEscrowed,
    /// The key is older than the policy interval.
    Interval,
}

fn recovery(holders: &[HolderReport]) -> impl Iterator<Item = &HolderReport> {
    holders.iter().filter(|h| h.role == "recovery")
}

/// Summarise a volume's holders for a check-in: the state, and the active escrowed key.
pub fn recovery_state(holders: &[HolderReport]) -> (RecoveryState, Option<&HolderReport>) {
    let escrowed = recovery(holders)
        .filter(|h| h.state == "active" && h.escrow_id.is_some())
        .max_by_key(|h| h.created);
    if recovery(holders).any(|h| h.state == "pending") {
        return (RecoveryState::Pending, escrowed);
    }
    if escrowed.is_some() {
        return (RecoveryState::Escrowed, escrowed);
    }
    if recovery(holders).any(|h| h.state == "active") {
        return (RecoveryState::Standalone, None);
    }
    (RecoveryState::None, None)
}

/// Whether the volume's recovery key is due now (Unix seconds), and why. Nothing is due on
/// a volume without a service slot: the helper could not add the new key.
pub fn recovery_due(
    holders: &[HolderReport],
    now: u64,
    rotation_days: u32,
    flagged_by_server: bool,
) -> Option<Due> {
    let bootstrapped = holders
        .iter()
        .any(|h| h.role == "service" && h.state == "active");
    if !bootstrapped {
        return None;
    }
    let (state, escrowed) = recovery_state(holders);
    match state {
        RecoveryState::Pending => return Some(Due::Resume),
        _ if flagged_by_server => return Some(Due::AfterUse),
        RecoveryState::Escrowed => {}
        _ => return Some(Due::NotEscrowed),
    }
    let age_limit = u64::from(rotation_days).checked_mul(86_400)?;
    let created = escrowed.and_then(|h| h.created)?;
    (rotation_days > 0 && now.saturating_sub(created) >= age_limit).then_some(Due::Interval)
}

/// The delay before the next attempt after `failures` consecutive failures (at least 1):
/// `initial`, doubling, capped at `max`.
pub fn backoff_secs(initial: u64, max: u64, failures: u32) -> u64 {
    let shift = failures.saturating_sub(1).min(32);
    initial.saturating_mul(1u64 << shift).min(max).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(role: &str, state: &str, escrow: Option<&str>, created: u64) -> HolderReport {
        HolderReport {
            slot: 0,
            role: role.into(),
            user: None,
            uid: None,
            kdf: "pbkdf2".into(),
            state: state.into(),
            escrow_id: escrow.map(Into::into),
            created: Some(created),
            priority: "normal".into(),
            standing: None,
        }
    }

    const DAY: u64 = 86_400;

    #[test]
    fn nothing_is_due_before_bootstrap() {
        assert_eq!(recovery_due(&[], 0, 90, true), None);
        let holders = [h("unmanaged", "unmanaged", None, 0)];
        assert_eq!(recovery_due(&holders, 0, 90, false), None);
    }

    #[test]
    fn a_volume_without_an_escrowed_key_gets_one() {
        let svc = h("service", "active", None, 0);
        assert_eq!(
            recovery_due(std::slice::from_ref(&svc), 0, 90, false),
            Some(Due::NotEscrowed)
        );
        let standalone = h("recovery", "active", None, 0);
        let both = [svc, standalone];
        assert_eq!(recovery_due(&both, 0, 90, false), Some(Due::NotEscrowed));
        assert_eq!(recovery_state(&both).0, RecoveryState::Standalone);
    }

    #[test]
    fn pending_resumes_first_then_after_use_then_interval() {
        let svc = h("service", "active", None, 0);
        let key = h("recovery", "active", Some("esc-1"), 10 * DAY);
        let pending = h("recovery", "pending", None, 11 * DAY);
        let all = [svc.clone(), key.clone(), pending];
        assert_eq!(recovery_due(&all, 11 * DAY, 90, true), Some(Due::Resume));
        let two = [svc, key];
        assert_eq!(recovery_due(&two, 11 * DAY, 90, true), Some(Due::AfterUse));
        assert_eq!(recovery_due(&two, 11 * DAY, 90, false), None);
        assert_eq!(recovery_due(&two, 100 * DAY - 1, 90, false), None);
        assert_eq!(
            recovery_due(&two, 100 * DAY, 90, false),
            Some(Due::Interval)
        );
        assert_eq!(
            recovery_due(&two, 1000 * DAY, 0, false),
            None,
            "0 days: never"
        );
        let (state, active) = recovery_state(&two);
        assert_eq!(state, RecoveryState::Escrowed);
        assert_eq!(active.and_then(|a| a.escrow_id.as_deref()), Some("esc-1"));
    }

    #[test]
    fn backoff_doubles_and_caps() {
        assert_eq!(backoff_secs(30, 3600, 1), 30);
        assert_eq!(backoff_secs(30, 3600, 2), 60);
        assert_eq!(backoff_secs(30, 3600, 8), 3600);
        assert_eq!(backoff_secs(30, 3600, u32::MAX), 3600);
        assert_eq!(backoff_secs(0, 0, 1), 1);
    }
}
