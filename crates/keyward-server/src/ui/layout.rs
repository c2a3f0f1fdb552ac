//! The page shell and the small pieces every page uses: the header with the signed-in admin
//! and the logout form, badges, times, links to devices. Markup only (maud escapes every
//! value); no data access.

use std::time::UNIX_EPOCH;

use maud::{html, Markup, DOCTYPE};

use super::health::Tone;
use super::session::Admin;
use crate::roles::Right;

/// A whole page.
pub fn page(title: &str, admin: Option<&Admin>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="referrer" content="no-referrer";
                title { (title) " · keyward escrow" }
                link rel="stylesheet" href="/ui/style.css";
                link rel="icon" type="image/svg+xml" href="/ui/favicon.svg";
            }
            body {
                header.top {
                    a.brand href="/ui/devices" { "keyward" span { "escrow" } }
                    @if let Some(admin) = admin {
                        nav {
                            a href="/ui/devices" { "Devices" }
                            @if admin.role.may(Right::Decide) {
                                a href="/ui/requests" { "Requests" }
                            }
                            @if admin.role.may(Right::RequestReveal) {
                                a href="/ui/requests/mine" { "My requests" }
                            }
                            a href="/ui/audit" { "Audit log" }
                            @if admin.role.may(Right::Administer) {
                                a href="/ui/accounts" { "Accounts" }
                            }
                        }
                        form.logout method="post" action="/ui/logout" {
                            span.who { "Signed in as " strong { (admin.name) }
                                " " span.role #role { (admin.role.as_str()) } }
                            input type="hidden" name="csrf" value=(admin.csrf);
                            button type="submit" { "Log out" }
                        }
                    }
                }
                main { (body) }
            }
        }
    }
}

/// A coloured word.
pub fn badge(label: &str, tone: Tone, title: &str) -> Markup {
    html! { span class={ "badge " (tone.class()) } title=(title) { (label) } }
}

/// The link to a device's page (the id percent-encoded: it is a path segment).
pub fn device_href(id: &str) -> String {
    format!("/ui/devices/{}", encode_segment(id))
}

fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Seconds since the epoch of an RFC 3339 time, if it parses.
pub fn unix_of(rfc3339: &str) -> Option<u64> {
    humantime::parse_rfc3339(rfc3339)
        .ok()?
        .duration_since(UNIX_EPOCH)
        .ok()
        .map(|d| d.as_secs())
}

/// `SECS` as a short span: "45 s", "12 min", "5 h", "3 d".
pub fn span(secs: u64) -> String {
    match secs {
        0..=119 => format!("{secs} s"),
        120..=7_199 => format!("{} min", secs / 60),
        7_200..=172_799 => format!("{} h", secs / 3600),
        _ => format!("{} d", secs / 86_400),
    }
}

/// A stored time as "2025-01-02 03:04:05 UTC", with how long ago (or how soon) it is.
pub fn when(rfc3339: &str, now: u64) -> Markup {
    let shown = rfc3339.get(..19).unwrap_or(rfc3339).replace('T', " ");
    let relative = unix_of(rfc3339).map(|t| {
        if t > now {
            format!("in {}", span(t - now))
        } else {
            format!("{} ago", span(now - t))
        }
    });
    html! {
        time datetime=(rfc3339) title=(rfc3339) {
            (shown) " UTC"
            @if let Some(relative) = relative { span.ago { " · " (relative) } }
        }
    }
}

/// A time in Unix seconds, as [`when`] shows it.
pub fn when_unix(secs: i64, now: u64) -> Markup {
    let t = UNIX_EPOCH + std::time::Duration::from_secs(u64::try_from(secs).unwrap_or(0));
    when(&humantime::format_rfc3339_seconds(t).to_string(), now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_links_encode_everything_but_unreserved() {
        assert_eq!(device_href("dev-0a1b"), "/ui/devices/dev-0a1b");
        assert_eq!(
            device_href("<x>/../'; DROP"),
            "/ui/devices/%3Cx%3E%2F..%2F%27%3B%20DROP"
        );
    }

    #[test]
    fn spans_and_times_read_well() {
        assert_eq!(span(5), "5 s");
        assert_eq!(span(600), "10 min");
        assert_eq!(span(4 * 3600), "4 h");
        assert_eq!(span(3 * 86_400), "3 d");
        assert_eq!(unix_of("1970-01-01T00:01:00.000000000Z"), Some(60));
        let t = when("1970-01-01T00:01:00.000000000Z", 120).into_string();
        assert!(t.contains("1970-01-01 00:01:00 UTC"), "{t}");
        assert!(t.contains("60 s ago"), "{t}");
        assert_eq!(unix_of("yesterday"), None);
    }
}
