//! Users and groups through NSS (`getpwnam_r`, `getgrnam_r`).

use keyward_core::{Uid, UserName};

/// A user's uid and primary gid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Account {
    /// uid.
    pub uid: Uid,
    /// Primary gid.
    pub gid: u32,
}

/// Look a user up by name; `Ok(None)` if there is no such user.
pub fn user(name: &UserName) -> std::io::Result<Option<Account>> {
    let u = nix::unistd::User::from_name(name.as_str()).map_err(std::io::Error::from)?;
    Ok(match u {
        Some(u) => Some(Account {
            uid: Uid::new(u.uid.as_raw())
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()))?,
            gid: u.gid.as_raw(),
        }),
        None => None,
    })
}

/// Look a user up before creating it. An NSS source that is configured but not answering
/// (`sss` in nsswitch.conf with sssd down) makes `getpwnam_r` fail with ENOENT or ESRCH — codes
/// getpwnam_r(3) also lists for "not found" — for every name the local files lack, such as the
/// service account about to be made. `useradd` works on the local files only, so here such an
/// answer means "not there yet". Never use this to decide that a user is gone: [`user`] keeps
/// it an error (unknown), which never triggers a revoke.
pub fn user_for_creation(name: &UserName) -> std::io::Result<Option<Account>> {
    match user(name) {
        Err(e) if not_found_or_unavailable(&e) => Ok(None),
        other => other,
    }
}

fn not_found_or_unavailable(e: &std::io::Error) -> bool {
    use rustix::io::Errno;
    [Errno::NOENT, Errno::SRCH]
        .iter()
        .any(|n| e.raw_os_error() == Some(n.raw_os_error()))
}

/// The group that may read the audit log: `adm` (Debian's log readers), or root's group.
pub fn log_reader_gid() -> std::io::Result<u32> {
    Ok(group("adm")?.map_or(0, |(gid, _)| gid))
}

/// A group's gid and members; `Ok(None)` if there is no such group.
pub fn group(name: &str) -> std::io::Result<Option<(u32, Vec<String>)>> {
    let g = nix::unistd::Group::from_name(name).map_err(std::io::Error::from)?;
    Ok(g.map(|g| (g.gid.as_raw(), g.mem)))
}

/// Is the user (with primary group `primary_gid`) a member of `group`?
pub fn is_member(user: &UserName, primary_gid: u32, group: &str) -> std::io::Result<bool> {
    Ok(match self::group(group)? {
        Some((gid, members)) => gid == primary_gid || members.iter().any(|m| m == user.as_str()),
        None => false,
    })
}
