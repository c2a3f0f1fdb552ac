//! One line to the local syslog socket (`/dev/log`; `/var/run/syslog` on macOS, where syslogd
//! hands it on to the unified log), facility authpriv. Best effort: where no syslog daemon
//! listens (containers, tests) the line is dropped.

use std::os::unix::net::UnixDatagram;

#[cfg(not(target_os = "macos"))]
const SOCKET: &str = "/dev/log";
#[cfg(target_os = "macos")]
const SOCKET: &str = "/var/run/syslog";

/// Send `msg` as `ident[pid]: msg` at `authpriv.<severity>` (6 info, 5 notice, 4 warning).
pub fn send(ident: &str, severity: u8, msg: &str) {
    let Ok(sock) = UnixDatagram::unbound() else {
        return;
    };
    if sock.connect(SOCKET).is_err() {
        return;
    }
    let pri = (10u16 << 3) | u16::from(severity & 7);
    let line = format!("<{pri}>{ident}[{}]: {msg}", std::process::id());
    let _ = sock.send(line.as_bytes());
}
