//! One line to the local syslog socket (`/dev/log`), facility authpriv. Best effort: where no
//! syslog daemon listens (containers, tests) the line is dropped.

use std::os::unix::net::UnixDatagram;

/// Send `msg` as `ident[pid]: msg` at `authpriv.<severity>` (6 info, 5 notice, 4 warning).
pub fn send(ident: &str, severity: u8, msg: &str) {
    let Ok(sock) = UnixDatagram::unbound() else {
        return;
    };
    if sock.connect("/dev/log").is_err() {
        return;
    }
    let pri = (10u16 << 3) | u16::from(severity & 7);
    let line = format!("<{pri}>{ident}[{}]: {msg}", std::process::id());
    let _ = sock.send(line.as_bytes());
}
