//! Who may do what: the four roles of web UI accounts and API tokens, and the rights each one
//! carries. Pure (no I/O); every page, form and API route asks [`Role::may`] before it acts.
//!
//! | right                 | viewer | helpdesk | approver | admin |
//! |-----------------------|:------:|:--------:|:--------:|:-----:|
//! | see devices, audit    |   ✓    |    ✓     |    ✓     |   ✓   |
//! | request a reveal      |        |    ✓     |          |   ✓   |
//! | approve or deny       |        |          |    ✓     |   ✓   |
//! | accounts and tokens   |        |          |          |   ✓   |
//!
//! Nobody approves their own request, whatever their role (`reveal_flow.rs`).

use std::fmt;
use std::str::FromStr;

/// A role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Role {
    /// Devices, escrow state and the audit trail; never a key.
    Viewer,
    /// A viewer who may request a key's reveal, with a reason, and reveal it once approved.
    Helpdesk,
    /// A viewer who may approve or deny other people's requests.
    Approver,
    /// Everything: the rights above, accounts, tokens and settings.
    Admin,
}

/// Something a role may or may not do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Right {
    /// See devices, their escrow state and the audit trail.
    View,
    /// Ask for a recovery key (and, once approved, reveal it; or reveal it at once when
    /// `[reveal] require_approval = false`).
    RequestReveal,
    /// Approve or deny someone else's request.
    Decide,
    /// Manage accounts, API tokens and settings.
    Administer,
}

impl Role {
    /// Every role, least first.
    pub const ALL: [Role; 4] = [Role::Viewer, Role::Helpdesk, Role::Approver, Role::Admin];

    /// Whether this role carries `right`.
    pub fn may(self, right: Right) -> bool {
        match right {
            Right::View => true,
            Right::RequestReveal => matches!(self, Role::Helpdesk | Role::Admin),
            Right::Decide => matches!(self, Role::Approver | Role::Admin),
            Right::Administer => self == Role::Admin,
        }
    }

    /// The name the CLI, the database and the pages use.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Helpdesk => "helpdesk",
            Role::Approver => "approver",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A word that names no role.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown role {0:?}: one of viewer, helpdesk, approver, admin")]
pub struct UnknownRole(pub String);

impl FromStr for Role {
    type Err = UnknownRole;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| UnknownRole(s.chars().take(32).collect()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_role_has_exactly_its_rights() {
        let rights = |r: Role| {
            [
                Right::View,
                Right::RequestReveal,
                Right::Decide,
                Right::Administer,
            ]
            .map(|right| r.may(right))
        };
        assert_eq!(rights(Role::Viewer), [true, false, false, false]);
        assert_eq!(rights(Role::Helpdesk), [true, true, false, false]);
        assert_eq!(rights(Role::Approver), [true, false, true, false]);
        assert_eq!(rights(Role::Admin), [true, true, true, true]);
    }

    #[test]
    fn roles_round_trip_through_their_names() {
        for r in Role::ALL {
            assert_eq!(r.as_str().parse::<Role>(), Ok(r));
        }
        assert!("Admin".parse::<Role>().is_err());
        assert!("root".parse::<Role>().is_err());
        assert!("".parse::<Role>().is_err());
    }
}
