//! The server's clock, in the two forms it records: RFC 3339 timestamps (audit records,
//! escrows, check-ins) and Unix seconds (sessions, requests, the webhook outbox). A leaf.

/// Now, RFC 3339 with nanoseconds (fixed width, so text order is time order).
pub fn now() -> String {
    timestamp(std::time::SystemTime::now())
}

/// `t`, RFC 3339 with nanoseconds.
pub fn timestamp(t: std::time::SystemTime) -> String {
    humantime::format_rfc3339_nanos(t).to_string()
}

/// Now, in Unix seconds.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Now, in Unix seconds, unsigned.
pub fn unix_secs() -> u64 {
    u64::try_from(unix_now()).unwrap_or(0)
}
