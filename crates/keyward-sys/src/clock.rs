//! The wall clock, in the two forms keyward records: RFC 3339 seconds (audit records) and Unix
//! seconds (command journals, fold windows, shadow's days). A clock before 1970 reads as 0.

use std::time::{SystemTime, UNIX_EPOCH};

/// The current time as RFC 3339 (seconds).
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

/// Seconds since the Unix epoch.
pub fn unix_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
