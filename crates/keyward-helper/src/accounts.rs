//! Where a user stands with the policy: managed, not managed (any more), deleted, or a name
//! now owned by another uid. Lookups through NSS; the decision is `keyward_core::policy`.

use keyward_core::config::Config;
pub use keyward_core::policy::Standing;
use keyward_core::policy::{self, AccountState};
use keyward_core::{Uid, UserName};
use keyward_sys::users;

fn member(user: &UserName, gid: u32, group: Option<&str>) -> Result<bool, String> {
    let Some(g) = group else {
        return Ok(false);
    };
    match users::group(g).map_err(|e| format!("group lookup: {e}"))? {
        None if !users::absence_is_authoritative("group") => Err(format!(
            "group lookup: {g} not found while a directory source is not answering (sssd \
             down?): membership unknown"
        )),
        None => Ok(false),
        Some(_) => users::is_member(user, gid, g).map_err(|e| format!("group lookup: {e}")),
    }
}

/// The user's standing; `granted_uid` is the uid in their slot's token, if any.
pub fn standing(c: &Config, user: &UserName, granted_uid: Option<Uid>) -> Result<Standing, String> {
    let Some(account) = users::user(user).map_err(|e| format!("user lookup: {e}"))? else {
        if !users::absence_is_authoritative("passwd") {
            return Err(format!(
                "user lookup: {user} not found while a directory source is not answering \
                 (sssd down?): not treated as deleted"
            ));
        }
        return Ok(Standing::Deleted);
    };
    if granted_uid.is_some_and(|u| u != account.uid) {
        return Ok(Standing::UidChanged);
    }
    let state = account_state(user)?;
    if !state.is_usable() {
        return Ok(Standing::Disabled(state));
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

/// Whether the system lets the account log in, from /etc/shadow. A user with no entry there (a
/// directory user through sssd) is not judged here: their directory decides at login.
pub fn account_state(user: &UserName) -> Result<AccountState, String> {
    let today = keyward_sys::clock::unix_secs() / 86_400;
    Ok(
        match keyward_sys::shadow::entry(std::path::Path::new(SHADOW), user) {
            Ok(Some((hash, expire))) => AccountState::judge(&hash, &expire, today),
            Ok(None) => AccountState::Usable,
            // No shadow file at all (macOS): the system keeps no local lock or expiry there.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => AccountState::Usable,
            Err(e) => return Err(format!("shadow: {e}")),
        },
    )
}

/// The system's shadow file.
pub const SHADOW: &str = "/etc/shadow";

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
