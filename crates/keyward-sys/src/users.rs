//! Users and groups through NSS (`getpwnam_r`, `getgrnam_r`), and what nsswitch.conf says of
//! their sources: whether an absence can be believed, and whether the local account files
//! alone answer (then their stamps tell whether any answer may have changed).

use std::path::Path;
use std::sync::{Mutex, PoisonError};

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

/// Is the user (with primary group `primary_gid`) a member of `group`? Their primary group, the
/// group's member list, then — as `id` asks — the user's group list from every NSS source
/// (`getgrouplist`, which sssd answers from its initgroups lookup, nested AD groups included,
/// where a directory group's member list may be partial).
pub fn is_member(user: &UserName, primary_gid: u32, group: &str) -> std::io::Result<bool> {
    let Some((gid, members)) = self::group(group)? else {
        return Ok(false);
    };
    if gid == primary_gid || members.iter().any(|m| m == user.as_str()) {
        return Ok(true);
    }
    in_group_list(user, primary_gid, gid)
}

#[cfg(not(target_os = "macos"))]
fn in_group_list(user: &UserName, primary_gid: u32, gid: u32) -> std::io::Result<bool> {
    let name = std::ffi::CString::new(user.as_str())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let list = nix::unistd::getgrouplist(&name, nix::unistd::Gid::from_raw(primary_gid))
        .map_err(std::io::Error::from)?;
    Ok(list.iter().any(|g| g.as_raw() == gid))
}

/// macOS's getgrouplist takes `int` gids and nix does not wrap it: the member list decides.
#[cfg(target_os = "macos")]
fn in_group_list(_user: &UserName, _primary_gid: u32, _gid: u32) -> std::io::Result<bool> {
    Ok(false)
}

/// Can "no such user" (`database` = "passwd") or "no such group" ("group") be believed now?
/// Only if every source nsswitch.conf lists for it is local (`files`, `systemd`, `compat`,
/// `mymachines`) or is sssd answering on its NSS socket. When sssd is not running, glibc reports
/// a directory user as simply absent (getpwnam_r returns 0 with no entry); a source keyward
/// cannot probe (ldap, winbind, nis) is never believed. Callers treat an unbelieved absence as
/// unknown: it never revokes anything.
pub fn absence_is_authoritative(database: &str) -> bool {
    absence_is_authoritative_in(
        &std::fs::read_to_string("/etc/nsswitch.conf").unwrap_or_default(),
        database,
        sssd_answers,
    )
}

/// sssd's NSS responder accepts a connection.
fn sssd_answers() -> bool {
    std::os::unix::net::UnixStream::connect("/var/lib/sss/pipes/nss").is_ok()
}

fn absence_is_authoritative_in(nsswitch: &str, database: &str, sssd: impl Fn() -> bool) -> bool {
    sources(nsswitch, database).all(|s| match s {
        "files" | "systemd" | "compat" | "mymachines" => true,
        "sss" => sssd(),
        _ => false,
    })
}

/// The sources nsswitch.conf lists for `database` on every line that names it (glibc's default,
/// `files`, when none does), without `[STATUS=action]` items and comments.
fn sources<'a>(nsswitch: &'a str, database: &str) -> impl Iterator<Item = &'a str> + 'a {
    let listed: Vec<&'a str> = nsswitch
        .lines()
        .map(|l| l.split('#').next().unwrap_or(""))
        .filter_map(|l| l.split_once(':'))
        .filter(|(db, _)| db.trim() == database)
        .flat_map(|(_, rest)| rest.split_whitespace())
        .filter(|s| !s.starts_with('['))
        .collect();
    let default = listed.is_empty().then_some("files");
    listed.into_iter().chain(default)
}

/// Whether passwd, group and shadow are answered from local files alone (`files`, `systemd`,
/// `compat`): a directory (sss, ldap, winbind) changes without touching a file.
fn files_only(nsswitch: &str) -> bool {
    ["passwd", "group", "shadow"]
        .iter()
        .all(|db| sources(nsswitch, db).all(|s| matches!(s, "files" | "systemd" | "compat")))
}

/// The files account lookups are answered from when [`files_only`] holds, nsswitch.conf last.
const ACCOUNT_FILES: [&str; 4] = ["passwd", "group", "shadow", "nsswitch.conf"];

/// One file's identity and content stamps: useradd, usermod, passwd and chpasswd replace or
/// rewrite the account files, which changes one of them.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FileStamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl FileStamp {
    fn of(path: &Path) -> Option<Self> {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(path).ok().map(|m| FileStamp {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        })
    }
}

/// The account files' stamps (a missing file stamped as missing). Two equal stamps: no account
/// lookup can have changed its answer in between.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountsStamp(Vec<Option<FileStamp>>);

/// The stamp of /etc's account files (/etc/passwd, /etc/group, /etc/shadow, /etc/nsswitch.conf),
/// or `None` when nsswitch.conf lists a source other than local files for passwd, group or
/// shadow: then no stamp says whether an answer changed.
pub fn accounts_stamp() -> Option<AccountsStamp> {
    accounts_stamp_in(Path::new("/etc"))
}

/// [`accounts_stamp`] of the account files in `etc`. nsswitch.conf is parsed again only when
/// its own stamp changes.
fn accounts_stamp_in(etc: &Path) -> Option<AccountsStamp> {
    static LAST: Mutex<Option<(FileStamp, bool)>> = Mutex::new(None);
    let stamps: Vec<Option<FileStamp>> = ACCOUNT_FILES
        .iter()
        .map(|f| FileStamp::of(&etc.join(f)))
        .collect();
    let nsswitch = stamps.last().cloned().flatten();
    let mut last = LAST.lock().unwrap_or_else(PoisonError::into_inner);
    let local = match (last.as_ref(), &nsswitch) {
        (Some((kept, verdict)), Some(now)) if kept == now => *verdict,
        _ => {
            let text = std::fs::read_to_string(etc.join("nsswitch.conf")).unwrap_or_default();
            let verdict = files_only(&text);
            *last = nsswitch.map(|now| (now, verdict));
            verdict
        }
    };
    local.then_some(AccountsStamp(stamps))
}

#[cfg(test)]
#[path = "users_tests.rs"]
mod stamp_tests;

#[cfg(test)]
mod tests {
    use super::absence_is_authoritative_in as judge;

    #[test]
    fn absence_is_believed_only_from_sources_that_answer() {
        let local = "passwd:         files systemd\ngroup: files systemd\n";
        assert!(judge(local, "passwd", || false));
        assert!(judge("", "passwd", || false), "no file: files only");
        let sss = "# comment: passwd: ldap\npasswd: files sss [NOTFOUND=return] systemd\n";
        assert!(judge(sss, "passwd", || true));
        assert!(!judge(sss, "passwd", || false), "sssd down");
        assert!(judge(sss, "group", || false), "group not listed: files");
        assert!(!judge("passwd: files ldap\n", "passwd", || true));
        assert!(!judge("passwd: files winbind\n", "passwd", || true));
    }
}
