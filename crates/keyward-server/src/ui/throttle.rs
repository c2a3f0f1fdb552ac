//! The web UI's login throttle: pure rules over the times of earlier failed logins (no I/O,
//! no clock; `login.rs` reads the failures, `db.rs` keeps them). Failures are counted three
//! ways, each with its own answer:
//!
//! * **a name from one address**: 5 within 15 minutes lock that name *from that address* for
//!   15 minutes from the fifth (even with the right password) — the old lock-out, no longer
//!   global, so an attacker can lock only themselves out;
//! * **an address**: 20 within 15 minutes, over any names, lock the address for 15 minutes
//!   (one address trying many names);
//! * **a name from everywhere**: from the 5th failure within 15 minutes on, the next attempt for
//!   that name, from any address, must wait after the latest failure — 1 s, doubling with each
//!   further failure, at most 60 s. A delay, never a lock: the right password from anywhere
//!   else gets in once it has waited. One address can cause 5 such failures per 15 minutes,
//!   so at most about a second of delay; many addresses slow the name's guessing to one a
//!   minute, and its owner to that minute, never more.
//!
//! Addresses are the client's socket address: IPv4 whole, IPv6 by /64 (a host has a whole /64
//! to pick from). Behind a reverse proxy every client is the proxy: see docs/OPERATIONS.md.

use std::net::IpAddr;

/// Failures for a name from one address that lock it there...
pub const MAX_FAILURES: usize = 5;
/// ...when they fall within this long; and how long a lock-out lasts after the last of them.
pub const LOCKOUT_SECS: i64 = 15 * 60;
/// Failures from one address, any names, that lock the address.
pub const MAX_SOURCE_FAILURES: usize = 20;
/// The longest wait a name's failures from everywhere impose.
pub const MAX_NAME_WAIT_SECS: i64 = 60;
/// A name's failures read to size its wait: enough for the doubling to reach the cap.
pub const NAME_FAILURES_READ: usize = MAX_FAILURES + 6;

/// What to do with a login attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Verdict {
    /// Check the password.
    Try,
    /// This address failed too often, for any names.
    SourceLocked,
    /// This address failed too often for this name.
    NameLockedHere,
    /// The name failed too often from everywhere: try again in this many seconds.
    Wait {
        /// Seconds left.
        secs: i64,
    },
}

/// The failures that bear on one attempt, each newest first (Unix seconds).
#[derive(Debug, Clone, Copy, Default)]
pub struct Failures<'a> {
    /// For this name from this address (at least [`MAX_FAILURES`] read).
    pub name_here: &'a [i64],
    /// From this address, any name (at least [`MAX_SOURCE_FAILURES`] read).
    pub source: &'a [i64],
    /// For this name from anywhere (at least [`NAME_FAILURES_READ`] read).
    pub name: &'a [i64],
}

/// Whether `max` failures (newest first) within the window lock at `now`.
fn locked(now: i64, latest: &[i64], max: usize) -> bool {
    match (
        latest.first(),
        max.checked_sub(1).and_then(|i| latest.get(i)),
    ) {
        (Some(&newest), Some(&oldest)) => {
            newest - oldest <= LOCKOUT_SECS && now < newest + LOCKOUT_SECS
        }
        _ => false,
    }
}

/// Seconds an attempt for a name must still wait at `now`, given its failures from everywhere.
pub fn name_wait(now: i64, name_failures: &[i64]) -> i64 {
    let recent = name_failures
        .iter()
        .take_while(|&&t| now - t < LOCKOUT_SECS)
        .count();
    let Some(beyond) = recent.checked_sub(MAX_FAILURES) else {
        return 0;
    };
    let wait = 1i64
        .checked_shl(u32::try_from(beyond).unwrap_or(u32::MAX))
        .unwrap_or(MAX_NAME_WAIT_SECS)
        .min(MAX_NAME_WAIT_SECS);
    let newest = name_failures.first().copied().unwrap_or(now);
    (newest + wait - now).max(0)
}

/// The verdict on an attempt at `now`.
pub fn judge(now: i64, f: Failures<'_>) -> Verdict {
    if locked(now, f.source, MAX_SOURCE_FAILURES) {
        return Verdict::SourceLocked;
    }
    if locked(now, f.name_here, MAX_FAILURES) {
        return Verdict::NameLockedHere;
    }
    match name_wait(now, f.name) {
        0 => Verdict::Try,
        secs => Verdict::Wait { secs },
    }
}

/// The address failures are counted by: IPv4 as is (also when mapped into IPv6), IPv6 by its
/// /64.
pub fn source_key(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const MIN: i64 = 60;
    const T: i64 = 1_000_000;

    /// `n` failures, one a minute, the newest at `T - ago`.
    fn failures(n: i64, ago: i64) -> Vec<i64> {
        (0..n).map(|i| T - ago - i * MIN).collect()
    }

    #[test]
    fn five_failures_for_a_name_from_one_address_lock_it_there_for_15_minutes() {
        let five = failures(5, 0);
        let f = |at| {
            judge(
                at,
                Failures {
                    name_here: &five,
                    source: &five,
                    name: &[],
                },
            )
        };
        assert_eq!(f(T), Verdict::NameLockedHere);
        assert_eq!(f(T + 15 * MIN - 1), Verdict::NameLockedHere);
        assert_eq!(
            f(T + 15 * MIN),
            Verdict::Try,
            "over 15 minutes after the fifth"
        );
        let four = failures(4, 0);
        assert!(!locked(T, &four, MAX_FAILURES), "four are not enough");
        let spread: Vec<i64> = (0..5).map(|i| T - i * 4 * MIN).collect();
        assert!(!locked(T, &spread, MAX_FAILURES), "spread over 16 minutes");
    }

    #[test]
    fn twenty_failures_from_one_address_lock_it_for_every_name() {
        let twenty: Vec<i64> = (0..20).map(|i| T - i * 10).collect();
        let v = judge(
            T,
            Failures {
                source: &twenty,
                ..Failures::default()
            },
        );
        assert_eq!(v, Verdict::SourceLocked);
        assert_eq!(
            judge(
                T,
                Failures {
                    source: &twenty[..19],
                    ..Failures::default()
                }
            ),
            Verdict::Try
        );
    }

    /// The name's own failures from everywhere only ever delay, by at most a minute.
    #[test]
    fn failures_for_a_name_from_elsewhere_delay_it_but_never_lock_it() {
        // Five (all one address could cause in 15 minutes): a second after the last.
        let five: Vec<i64> = (0..5).map(|i| T - i).collect();
        assert_eq!(name_wait(T, &five), 1);
        assert_eq!(name_wait(T + 1, &five), 0);
        let at_another_address = Failures {
            name: &five,
            ..Failures::default()
        };
        assert_eq!(judge(T, at_another_address), Verdict::Wait { secs: 1 });
        assert_eq!(judge(T + 1, at_another_address), Verdict::Try);
        // Many addresses: doubling, capped at a minute after the latest.
        let six: Vec<i64> = (0..6).map(|i| T - i).collect();
        assert_eq!(name_wait(T, &six), 2);
        let many: Vec<i64> = (0..11).map(|i| T - i).collect();
        assert_eq!(name_wait(T, &many), MAX_NAME_WAIT_SECS);
        assert_eq!(name_wait(T + MAX_NAME_WAIT_SECS, &many), 0);
        // Four, or old failures, delay nothing.
        assert_eq!(name_wait(T, &five[..4]), 0);
        assert_eq!(name_wait(T + LOCKOUT_SECS, &five), 0);
        assert_eq!(name_wait(T, &[]), 0);
    }

    #[test]
    fn ipv6_clients_are_counted_by_their_64() {
        let key = |s: &str| source_key(s.parse().unwrap());
        assert_eq!(key("192.0.2.7"), "192.0.2.7");
        assert_eq!(key("::ffff:192.0.2.7"), "192.0.2.7");
        assert_eq!(key("2001:db8:1:2:aaaa::1"), "2001:db8:1:2::/64");
        assert_eq!(key("2001:db8:1:2:bbbb::9"), key("2001:db8:1:2::1"));
        assert_ne!(key("2001:db8:1:3::1"), key("2001:db8:1:2::1"));
    }
}
