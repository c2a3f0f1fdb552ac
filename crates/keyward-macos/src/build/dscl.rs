//! `dscl .` builders for the local directory: listing accounts, reading one, and creating the
//! hidden service account attribute by attribute. Attribute names and values are a closed set
//! ([`ServiceAttr`]), so no caller can write an arbitrary attribute.
//!
//! Passwords never go in argv (`dscl . -passwd USER OLD NEW` would show both in `ps`): they are
//! written to `dscl -q .` in interactive mode, which reads commands from stdin.

use keyward_core::Secret;
use zeroize::Zeroizing;

use crate::build::is_plain_word;
use crate::command::{Arg, Invocation, Program, Purpose};
use crate::error::MacError;
use crate::names::{ServiceUid, ShortName};

/// The value that keeps an account from being given a Secure Token automatically (by being
/// the first account to get a password on a volume without token holders).
pub const DISABLED_TOKEN_TAG: &str = ";DisabledTags;SecureToken";

/// One attribute of the service account, with its value.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub enum ServiceAttr {
    /// `UniqueID`, below 500.
    UniqueId(ServiceUid),
    /// `PrimaryGroupID`: the service group.
    PrimaryGroupId(ServiceUid),
    /// `UserShell /usr/bin/false`: no login.
    NoShell,
    /// `NFSHomeDirectory /var/empty`: no home.
    NoHome,
    /// `RealName`.
    RealName,
    /// `IsHidden 1`: not on the login window nor in System Settings.
    Hidden,
    /// `AuthenticationAuthority ;DisabledTags;SecureToken`, set before any password.
    TokenDisabledTag,
}

impl ServiceAttr {
    fn pair(self) -> (Arg, Arg) {
        match self {
            ServiceAttr::UniqueId(u) => (Arg::fixed("UniqueID"), Arg::uid(u)),
            ServiceAttr::PrimaryGroupId(g) => (Arg::fixed("PrimaryGroupID"), Arg::uid(g)),
            ServiceAttr::NoShell => (Arg::fixed("UserShell"), Arg::fixed("/usr/bin/false")),
            ServiceAttr::NoHome => (Arg::fixed("NFSHomeDirectory"), Arg::fixed("/var/empty")),
            ServiceAttr::RealName => (Arg::fixed("RealName"), Arg::fixed("keyward service")),
            ServiceAttr::Hidden => (Arg::fixed("IsHidden"), Arg::fixed("1")),
            ServiceAttr::TokenDisabledTag => (
                Arg::fixed("AuthenticationAuthority"),
                Arg::fixed(DISABLED_TOKEN_TAG),
            ),
        }
    }
}

fn dscl(purpose: Purpose, args: Vec<Arg>) -> Invocation {
    let mut all = vec![Arg::fixed(".")];
    all.extend(args);
    Invocation::new(purpose, Program::Dscl, all)
}

/// `dscl . -list /Users UniqueID`: every local account with its uid.
pub fn list_unique_ids() -> Invocation {
    dscl(
        Purpose::DirectoryList,
        vec![
            Arg::fixed("-list"),
            Arg::fixed("/Users"),
            Arg::fixed("UniqueID"),
        ],
    )
}

/// `dscl . -list /Users GeneratedUID`: every local account with its GeneratedUID.
pub fn list_generated_uids() -> Invocation {
    dscl(
        Purpose::DirectoryList,
        vec![
            Arg::fixed("-list"),
            Arg::fixed("/Users"),
            Arg::fixed("GeneratedUID"),
        ],
    )
}

/// `dscl . -read /Users/USER UniqueID GeneratedUID AuthenticationAuthority IsHidden`.
pub fn read_account(user: &ShortName) -> Invocation {
    dscl(
        Purpose::DirectoryRead,
        vec![
            Arg::fixed("-read"),
            Arg::user_path(user),
            Arg::fixed("UniqueID"),
            Arg::fixed("GeneratedUID"),
            Arg::fixed("AuthenticationAuthority"),
            Arg::fixed("IsHidden"),
        ],
    )
}

/// `dscl . -create /Users/USER`: the record itself.
pub fn create_account(user: &ShortName) -> Invocation {
    dscl(
        Purpose::DirectoryWrite,
        vec![Arg::fixed("-create"), Arg::user_path(user)],
    )
}

/// `dscl . -create /Users/USER ATTR VALUE`.
pub fn set_attr(user: &ShortName, attr: ServiceAttr) -> Invocation {
    let (name, value) = attr.pair();
    dscl(
        Purpose::DirectoryWrite,
        vec![Arg::fixed("-create"), Arg::user_path(user), name, value],
    )
}

/// `dscl . -delete /Users/USER AuthenticationAuthority ;DisabledTags;SecureToken`: lift the
/// tag just before keyward grants the token itself.
pub fn remove_token_disabled_tag(user: &ShortName) -> Invocation {
    dscl(
        Purpose::DirectoryWrite,
        vec![
            Arg::fixed("-delete"),
            Arg::user_path(user),
            Arg::fixed("AuthenticationAuthority"),
            Arg::fixed(DISABLED_TOKEN_TAG),
        ],
    )
}

/// `dscl . -append /Users/USER AuthenticationAuthority ;DisabledTags;SecureToken`: put the tag
/// back after a failed grant.
pub fn restore_token_disabled_tag(user: &ShortName) -> Invocation {
    dscl(
        Purpose::DirectoryWrite,
        vec![
            Arg::fixed("-append"),
            Arg::user_path(user),
            Arg::fixed("AuthenticationAuthority"),
            Arg::fixed(DISABLED_TOKEN_TAG),
        ],
    )
}

/// `dscl . -create /Groups/GROUP` and its `PrimaryGroupID`, `RealName`, `Password *`.
pub fn create_group(group: &ShortName, gid: ServiceUid) -> Vec<Invocation> {
    let path = || Arg::group_path(group);
    vec![
        dscl(Purpose::DirectoryWrite, vec![Arg::fixed("-create"), path()]),
        dscl(
            Purpose::DirectoryWrite,
            vec![
                Arg::fixed("-create"),
                path(),
                Arg::fixed("PrimaryGroupID"),
                Arg::uid(gid),
            ],
        ),
        dscl(
            Purpose::DirectoryWrite,
            vec![
                Arg::fixed("-create"),
                path(),
                Arg::fixed("RealName"),
                Arg::fixed("keyward service"),
            ],
        ),
        dscl(
            Purpose::DirectoryWrite,
            vec![
                Arg::fixed("-create"),
                path(),
                Arg::fixed("Password"),
                Arg::fixed("*"),
            ],
        ),
    ]
}

/// `dscl . -delete /Groups/GROUP`.
pub fn delete_group(group: &ShortName) -> Invocation {
    dscl(
        Purpose::DirectoryWrite,
        vec![Arg::fixed("-delete"), Arg::group_path(group)],
    )
}

/// `dscl . -append /Groups/admin GroupMembership USER`: `sysadminctl -secureTokenOn` takes
/// an administrator as `-adminUser`, so the service account must be one.
pub fn add_to_admin_group(user: &ShortName) -> Invocation {
    dscl(
        Purpose::DirectoryWrite,
        vec![
            Arg::fixed("-append"),
            Arg::fixed("/Groups/admin"),
            Arg::fixed("GroupMembership"),
            Arg::name(user),
        ],
    )
}

/// `dscl . -read /Groups/GROUP PrimaryGroupID`.
pub fn read_group(group: &ShortName) -> Invocation {
    dscl(
        Purpose::DirectoryRead,
        vec![
            Arg::fixed("-read"),
            Arg::group_path(group),
            Arg::fixed("PrimaryGroupID"),
        ],
    )
}

/// A password change with the old password, `passwd /Users/USER OLD NEW` on the stdin of
/// `dscl -q .`. With the old password it is a change (the account's FileVault unlock is
/// re-wrapped); a root reset without it would leave FileVault on the old password.
pub fn change_password(
    user: &ShortName,
    old: &Secret,
    new: &Secret,
) -> Result<Invocation, MacError> {
    interactive_passwd(Purpose::ChangePassword, user, &[old, new])
}

/// The first password of an account that holds no Secure Token (the new service account):
/// `passwd /Users/USER NEW` on stdin. Never used on a token holder.
pub fn set_initial_password(user: &ShortName, new: &Secret) -> Result<Invocation, MacError> {
    interactive_passwd(Purpose::SetInitialPassword, user, &[new])
}

fn interactive_passwd(
    purpose: Purpose,
    user: &ShortName,
    words: &[&Secret],
) -> Result<Invocation, MacError> {
    if !words.iter().all(|w| is_plain_word(w)) {
        return Err(MacError::PasswordNotRepresentable(
            "spaces, quotes, backslashes or non-ASCII characters",
        ));
    }
    let mut line = Zeroizing::new(format!("passwd {}", user.user_path()).into_bytes());
    for w in words {
        line.push(b' ');
        line.extend_from_slice(w.expose());
    }
    line.push(b'\n');
    Ok(Invocation::new(
        purpose,
        Program::Dscl,
        vec![Arg::fixed("-q"), Arg::fixed(".")],
    )
    .with_stdin(Secret::copy_from(&line)))
}
