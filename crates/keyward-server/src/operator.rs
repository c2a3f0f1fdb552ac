//! Who is at the server's terminal, for its audit trail (issue 16). The kernel's login uid
//! (`/proc/self/loginuid`: set when the person logged in, kept across `sudo` and `su`, and not
//! something the caller can change) names them; `$SUDO_USER`, which whoever runs the command
//! sets as they like, is recorded only as the claim it is.

use crate::store::{AuditRecord, Store};

/// The audit trail's "who" for a command run at this terminal.
pub fn operator() -> String {
    describe(
        login_uid(),
        keyward_sys::hardening::effective_uid(),
        std::env::var("SUDO_USER").ok().as_deref(),
    )
}

/// `/proc/self/loginuid`, unless unset (4294967295: no login session, e.g. a service).
fn login_uid() -> Option<u32> {
    std::fs::read_to_string("/proc/self/loginuid")
        .ok()?
        .trim()
        .parse::<u32>()
        .ok()
        .filter(|u| *u != u32::MAX)
}

fn describe(login: Option<u32>, euid: u32, sudo_user: Option<&str>) -> String {
    let base = match login {
        Some(uid) => format!("login uid {uid}"),
        None => format!("uid {euid}"),
    };
    match sudo_user.filter(|s| !s.is_empty()) {
        Some(claim) => format!(
            "{base} (SUDO_USER {} claimed)",
            keyward_core::printable(claim)
        ),
        None => base,
    }
}

/// Record an administrative command run at this terminal.
pub async fn audit_cli(store: &Store, action: &str, what: String) -> Result<(), String> {
    store
        .audit(&AuditRecord {
            at: crate::clock::now(),
            who: operator(),
            action: action.into(),
            device: None,
            volume: None,
            reason: Some(what),
        })
        .await
        .map_err(String::from)
}

#[cfg(test)]
mod tests {
    use super::describe;

    #[test]
    fn the_login_uid_names_the_operator_and_sudo_user_is_only_a_claim() {
        assert_eq!(describe(Some(1000), 0, None), "login uid 1000");
        assert_eq!(
            describe(Some(1000), 0, Some("mallory")),
            "login uid 1000 (SUDO_USER mallory claimed)"
        );
        assert_eq!(describe(None, 0, Some("")), "uid 0");
        assert_eq!(
            describe(None, 0, Some("x\u{1b}[2J")),
            "uid 0 (SUDO_USER x\\u{1b}[2J claimed)"
        );
    }
}
