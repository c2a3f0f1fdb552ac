//! `security authorizationdb` builders for the one right keyward edits, `system.login.console`.
//! The right travels on stdin as a property list (`write` without a rule name reads it there);
//! nothing in it is secret.

use crate::command::{Arg, Invocation, Program, Purpose};

/// `security authorizationdb read system.login.console`: the right as an XML property list on
/// stdout (and `YES (0)` on stderr).
pub fn read_login_right() -> Invocation {
    Invocation::new(
        Purpose::ReadLoginRight,
        Program::Security,
        vec![
            Arg::fixed("authorizationdb"),
            Arg::fixed("read"),
            Arg::fixed(crate::login_right::RIGHT),
        ],
    )
}

/// `security authorizationdb write system.login.console`, the new definition on stdin.
pub fn write_login_right(plist: Vec<u8>) -> Invocation {
    Invocation::new(
        Purpose::WriteLoginRight,
        Program::Security,
        vec![
            Arg::fixed("authorizationdb"),
            Arg::fixed("write"),
            Arg::fixed(crate::login_right::RIGHT),
        ],
    )
    .with_data(plist)
}
