//! Where a user stands with the policy: managed, not managed (any more), deleted, or a name
//! now owned by another uid. Lookups through NSS; the decision is `keyward_core::policy`.

use keyward_core::config::Config;
use keyward_core::policy;
use keyward_core::{Uid, UserName};
use keyward_sys::users;

/// A user's standing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Standing {
    /// Managed; their uid now.
    Managed(Uid),
    /// Exists but is not managed (why).
    NotManaged(String),
    /// No such user.
    Deleted,
    /// The name belongs to a different uid than the one the slot was granted to.
    UidChanged,
}

impl Standing {
    /// The label `keyward verify` prints.
    pub fn label(&self) -> &'static str {
        match self {
            Standing::Managed(_) => "managed",
            Standing::NotManaged(_) => "not-managed",
            Standing::Deleted => "deleted",
            Standing::UidChanged => "uid-changed",
        }
    }
}

fn member(user: &UserName, gid: u32, group: Option<&str>) -> Result<bool, String> {
    match group {
        Some(g) => users::is_member(user, gid, g).map_err(|e| format!("group lookup: {e}")),
        None => Ok(false),
    }
}

/// The user's standing; `granted_uid` is the uid in their slot's token, if any.
pub fn standing(c: &Config, user: &UserName, granted_uid: Option<Uid>) -> Result<Standing, String> {
    let Some(account) = users::user(user).map_err(|e| format!("user lookup: {e}"))? else {
        return Ok(Standing::Deleted);
    };
    if granted_uid.is_some_and(|u| u != account.uid) {
        return Ok(Standing::UidChanged);
    }
    let group = c.policy.managed_group.as_deref();
    let groups: Vec<String> = if member(user, account.gid, group)? {
        group.map(str::to_owned).into_iter().collect()
    } else {
        Vec::new()
    };
    let decision = policy::decide(&c.policy, user, account.uid, &groups);
    Ok(if decision.is_managed() {
        Standing::Managed(account.uid)
    } else {
        Standing::NotManaged(format!("{decision:?}"))
    })
}

/// Is the user in the configured admin group (who may bootstrap by logging in)?
pub fn is_admin(c: &Config, user: &UserName) -> Result<bool, String> {
    let Some(account) = users::user(user).map_err(|e| format!("user lookup: {e}"))? else {
        return Ok(false);
    };
    if account.uid.get() == 0 {
        return Ok(false);
    }
    member(user, account.gid, c.policy.admin_group.as_deref())
}
