//! What the admin UI says about a device's escrow, decided in one place and pure: from the
//! device's last check-in (when, and per volume the recovery state and active escrow id it
//! reported), what the server holds of those escrows, the clock and the staleness limit. No
//! I/O and no clock here: the pages pass everything in, the tests below pass made-up values.

use keyward_core::schedule::RecoveryState;

/// One volume as its device last reported it.
#[derive(Debug, Clone, Copy)]
pub struct Reported<'a> {
    /// Its recovery key's state.
    pub recovery: RecoveryState,
    /// The escrow id of its active recovery key, if it reported one.
    pub escrow_id: Option<&'a str>,
}

/// What the server holds of an escrow the device named.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Held {
    /// No such escrow for this device (lost in a restore, or never stored).
    Missing,
    /// Stored; `seen`: an admin has revealed it, so the device is asked to rotate it.
    Stored {
        /// An admin has seen it.
        seen: bool,
    },
}

/// A volume's escrow health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VolumeHealth {
    /// The active key is escrowed here and nobody has seen it.
    Verified,
    /// An admin has seen the active key; the device rotates it at its next check-in.
    RotationRequested,
    /// A rotation has begun and is not committed yet (the previous key stays valid).
    Pending,
    /// The device reported a key this server does not hold.
    EscrowMissing,
    /// No escrowed key: none, standalone, or unreadable.
    NotEscrowed,
}

/// A device's health: the worst of its volumes, unless its reports stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceHealth {
    /// Revoked by an admin: its requests are refused, whatever it last reported.
    Revoked,
    /// Enrolled and never reported.
    NeverCheckedIn,
    /// Its last report is older than the limit; what it said then may no longer hold.
    Stale {
        /// Seconds since that report.
        silent_secs: u64,
    },
    /// A volume has no escrowed key, or one the server does not hold.
    Attention,
    /// It reported no volumes.
    NoVolumes,
    /// A rotation is pending or requested.
    Pending,
    /// Every volume's active key is escrowed here.
    Verified,
}

/// One volume's health.
pub fn volume_health(v: Reported<'_>, held: impl Fn(&str) -> Held) -> VolumeHealth {
    match v.recovery {
        RecoveryState::Pending => VolumeHealth::Pending,
        RecoveryState::Escrowed => match v.escrow_id.map(held) {
            Some(Held::Stored { seen: false }) => VolumeHealth::Verified,
            Some(Held::Stored { seen: true }) => VolumeHealth::RotationRequested,
            Some(Held::Missing) | None => VolumeHealth::EscrowMissing,
        },
        _ => VolumeHealth::NotEscrowed,
    }
}

/// A device's health at `now` (Unix seconds), given when it last checked in (Unix seconds)
/// and its volumes' health from that check-in.
pub fn device_health(
    now: u64,
    last_checkin: Option<u64>,
    volumes: &[VolumeHealth],
    stale_after_secs: u64,
) -> DeviceHealth {
    let Some(at) = last_checkin else {
        return DeviceHealth::NeverCheckedIn;
    };
    let silent_secs = now.saturating_sub(at);
    if silent_secs > stale_after_secs {
        return DeviceHealth::Stale { silent_secs };
    }
    if volumes.is_empty() {
        return DeviceHealth::NoVolumes;
    }
    let any = |f: fn(&VolumeHealth) -> bool| volumes.iter().any(f);
    if any(|v| matches!(v, VolumeHealth::EscrowMissing | VolumeHealth::NotEscrowed)) {
        DeviceHealth::Attention
    } else if any(|v| matches!(v, VolumeHealth::Pending | VolumeHealth::RotationRequested)) {
        DeviceHealth::Pending
    } else {
        DeviceHealth::Verified
    }
}

impl VolumeHealth {
    /// A word for a badge.
    pub fn label(self) -> &'static str {
        match self {
            Self::Verified => "escrow verified",
            Self::RotationRequested => "rotation requested",
            Self::Pending => "rotation pending",
            Self::EscrowMissing => "escrow missing",
            Self::NotEscrowed => "not escrowed",
        }
    }

    /// What it means, for the admin.
    pub fn explain(self) -> &'static str {
        match self {
            Self::Verified => "the active recovery key is escrowed here and nobody has seen it",
            Self::RotationRequested => {
                "an admin has seen the active key; the device replaces it at its next check-in"
            }
            Self::Pending => {
                "a new key is being escrowed; the previous key stays valid until it commits"
            }
            Self::EscrowMissing => {
                "the device reported an escrowed key this server does not hold (restored backup?)"
            }
            Self::NotEscrowed => "the volume has no recovery key escrowed here",
        }
    }

    /// Its badge's style.
    pub fn tone(self) -> Tone {
        match self {
            Self::Verified => Tone::Good,
            Self::RotationRequested | Self::Pending => Tone::Busy,
            Self::EscrowMissing | Self::NotEscrowed => Tone::Bad,
        }
    }
}

impl DeviceHealth {
    /// A word for a badge.
    pub fn label(self) -> &'static str {
        match self {
            Self::Revoked => "revoked",
            Self::NeverCheckedIn => "never checked in",
            Self::Stale { .. } => "stale",
            Self::Attention => "needs attention",
            Self::NoVolumes => "no volumes",
            Self::Pending => "pending",
            Self::Verified => "escrow verified",
        }
    }

    /// Its badge's style.
    pub fn tone(self) -> Tone {
        match self {
            Self::Verified => Tone::Good,
            Self::Pending => Tone::Busy,
            Self::NoVolumes | Self::NeverCheckedIn | Self::Revoked => Tone::Quiet,
            Self::Stale { .. } | Self::Attention => Tone::Bad,
        }
    }

    /// Sort key: the devices that need someone first.
    pub fn urgency(self) -> u8 {
        match self {
            Self::Attention => 0,
            Self::Stale { .. } => 1,
            Self::NeverCheckedIn => 2,
            Self::Pending => 3,
            Self::NoVolumes => 4,
            Self::Verified => 5,
            // Nothing left to do for one: last.
            Self::Revoked => 6,
        }
    }
}

/// How a badge looks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tone {
    /// Nothing to do.
    Good,
    /// Something is under way.
    Busy,
    /// Someone should look.
    Bad,
    /// Nothing known.
    Quiet,
}

impl Tone {
    /// The CSS class.
    pub fn class(self) -> &'static str {
        match self {
            Self::Good => "good",
            Self::Busy => "busy",
            Self::Bad => "bad",
            Self::Quiet => "quiet",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: u64 = 3600;

    fn held(id: &str) -> Held {
        match id {
            "esc-new" => Held::Stored { seen: false },
            "esc-seen" => Held::Stored { seen: true },
            _ => Held::Missing,
        }
    }

    fn vol(recovery: RecoveryState, escrow_id: Option<&str>) -> VolumeHealth {
        volume_health(
            Reported {
                recovery,
                escrow_id,
            },
            held,
        )
    }

    #[test]
    fn an_escrowed_key_is_verified_only_if_the_server_holds_it() {
        assert_eq!(
            vol(RecoveryState::Escrowed, Some("esc-new")),
            VolumeHealth::Verified
        );
        assert_eq!(
            vol(RecoveryState::Escrowed, Some("esc-gone")),
            VolumeHealth::EscrowMissing
        );
        assert_eq!(
            vol(RecoveryState::Escrowed, None),
            VolumeHealth::EscrowMissing
        );
    }

    #[test]
    fn a_seen_key_asks_for_rotation_and_a_begun_one_is_pending() {
        assert_eq!(
            vol(RecoveryState::Escrowed, Some("esc-seen")),
            VolumeHealth::RotationRequested
        );
        // Pending wins over what the active key is: the device is already rotating.
        assert_eq!(
            vol(RecoveryState::Pending, Some("esc-new")),
            VolumeHealth::Pending
        );
    }

    #[test]
    fn keys_not_escrowed_here_need_attention() {
        for state in [
            RecoveryState::Standalone,
            RecoveryState::None,
            RecoveryState::Unknown,
        ] {
            assert_eq!(vol(state, None), VolumeHealth::NotEscrowed);
        }
    }

    #[test]
    fn a_device_is_as_healthy_as_its_worst_volume() {
        let now = 100 * HOUR;
        let at = Some(now - 60);
        let v = VolumeHealth::Verified;
        let p = VolumeHealth::Pending;
        let r = VolumeHealth::RotationRequested;
        let n = VolumeHealth::NotEscrowed;
        let m = VolumeHealth::EscrowMissing;
        assert_eq!(
            device_health(now, at, &[v, v], 3 * HOUR),
            DeviceHealth::Verified
        );
        assert_eq!(
            device_health(now, at, &[v, p], 3 * HOUR),
            DeviceHealth::Pending
        );
        assert_eq!(
            device_health(now, at, &[r, v], 3 * HOUR),
            DeviceHealth::Pending
        );
        assert_eq!(
            device_health(now, at, &[p, n], 3 * HOUR),
            DeviceHealth::Attention
        );
        assert_eq!(
            device_health(now, at, &[m], 3 * HOUR),
            DeviceHealth::Attention
        );
        assert_eq!(
            device_health(now, at, &[], 3 * HOUR),
            DeviceHealth::NoVolumes
        );
    }

    #[test]
    fn silence_beyond_the_limit_is_stale_and_no_report_is_never() {
        let now = 100 * HOUR;
        let v = [VolumeHealth::Verified];
        assert_eq!(
            device_health(now, None, &v, 3 * HOUR),
            DeviceHealth::NeverCheckedIn
        );
        assert_eq!(
            device_health(now, Some(now - 3 * HOUR), &v, 3 * HOUR),
            DeviceHealth::Verified,
            "exactly at the limit is not stale yet"
        );
        assert_eq!(
            device_health(now, Some(now - 3 * HOUR - 1), &v, 3 * HOUR),
            DeviceHealth::Stale {
                silent_secs: 3 * HOUR + 1
            }
        );
        // A clock that went backwards does not make a device stale.
        assert_eq!(
            device_health(now, Some(now + 50), &v, 3 * HOUR),
            DeviceHealth::Verified
        );
    }

    #[test]
    fn the_devices_that_need_someone_sort_first() {
        let mut all = [
            DeviceHealth::Verified,
            DeviceHealth::Pending,
            DeviceHealth::Stale { silent_secs: 1 },
            DeviceHealth::NeverCheckedIn,
            DeviceHealth::Attention,
            DeviceHealth::NoVolumes,
        ];
        all.sort_by_key(|h| h.urgency());
        assert_eq!(all[0], DeviceHealth::Attention);
        assert_eq!(all[5], DeviceHealth::Verified);
        assert_eq!(DeviceHealth::Attention.tone(), Tone::Bad);
        assert_eq!(VolumeHealth::Pending.tone().class(), "busy");
    }
}
