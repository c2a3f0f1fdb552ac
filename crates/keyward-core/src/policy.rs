//! Who is a managed user (DESIGN.md section 7, `[policy]`): members of the managed group
//! and/or an explicit list — never root, never a system account — and the escrow server's
//! signed override of a few policy values. Pure: the caller looks the account and its groups
//! up, and reads the override.

use crate::config::Policy;
use crate::ids::{Uid, UserName};

/// `[policy] uid_min`'s default: accounts below it are system accounts (Debian's `UID_MIN`).
pub const DEFAULT_UID_MIN: u32 = 1000;
/// `[policy] uid_max`'s default: 2^31 - 1, the top of the ranges sssd gives directory users
/// (FreeIPA's id ranges, AD's `ldap_idmap_range_max` of 2000200000), below the uids many tools
/// mishandle (systemd's "UIDs and GIDs" notes: avoid 2^31 and up).
pub const DEFAULT_UID_MAX: u32 = 2_147_483_647;
/// Never managed, whatever `uid_min`/`uid_max` say: systemd's homed (60001..=60513), container
/// (60514..=61183), DynamicUser (61184..=65519) ranges, `nobody` (65534) and the 16-bit
/// "invalid" 65535. None of them is a person who logs in with a password.
pub const RESERVED_UIDS: std::ops::RangeInclusive<u32> = 60_000..=65_535;

/// Whether the system lets an account log in at all, from its shadow entry (issue 14: an
/// expired or locked account is refused by PAM, so it gets no unlock right either).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AccountState {
    /// Nothing in the shadow entry stops a login.
    Usable,
    /// The password is locked: a real hash with `!` in front (`usermod -L`, `passwd -l`).
    Locked,
    /// The account expired (`chage -E`): its expiry day has come.
    Expired,
}

impl AccountState {
    /// From a shadow entry's hash and account-expiry field (days since 1970-01-01, empty when
    /// none), judged on `today` (days since 1970-01-01). An expiry of day N means the account
    /// cannot be used from day N on (shadow(5)); `chage -E 0` expires it for good. A field of
    /// only `!`, `!!`, `*` or `!*` is an account that never had a password (what `useradd`
    /// leaves), not a locked one: no login with a password can succeed, so keyward grants
    /// nothing at login, but an admin may still give it a passphrase.
    pub fn judge(hash: &str, expire_field: &str, today: u64) -> Self {
        let unlocked = hash.trim_start_matches('!');
        if hash.starts_with('!') && !unlocked.is_empty() && unlocked != "*" {
            return AccountState::Locked;
        }
        match expire_field.trim().parse::<u64>() {
            Ok(day) if today >= day => AccountState::Expired,
            _ => AccountState::Usable,
        }
    }

    /// True unless locked or expired.
    pub fn is_usable(self) -> bool {
        self == AccountState::Usable
    }
}

/// Where a user stands with the policy now: what the helper's NSS and shadow lookups found,
/// judged by [`decide`] and [`AccountState`].
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
    /// The account is locked or expired: the system refuses its logins, so it holds no
    /// unlock right either (revoked by verify with `revoke_unmanaged`).
    Disabled(AccountState),
}

/// Why a user may not be granted a right, worded for the admin.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoGrant {
    /// There is no such user (a usage error, exit 2).
    #[error("no such user: {0}")]
    NoSuchUser(UserName),
    /// The policy or the system refuses the user (exit 4).
    #[error("{0}")]
    Refused(String),
}

impl Standing {
    /// The label `keyward verify` prints.
    pub fn label(&self) -> &'static str {
        match self {
            Standing::Managed(_) => "managed",
            Standing::NotManaged(_) => "not-managed",
            Standing::Deleted => "deleted",
            Standing::UidChanged => "uid-changed",
            Standing::Disabled(_) => "disabled",
        }
    }

    /// One rule for who may hold a user slot, at login, at `grant` and at `verify` (issue 14):
    /// a user the policy manages now, as the uid to grant it to. An admin's `grant` of anyone
    /// else is refused, so `verify` never finds a holder keyward itself let in and would revoke.
    pub fn grantee(&self, user: &UserName) -> Result<Uid, NoGrant> {
        let what = match self {
            Standing::Managed(uid) => return Ok(*uid),
            Standing::Deleted => return Err(NoGrant::NoSuchUser(user.clone())),
            Standing::Disabled(AccountState::Locked) => "locked",
            Standing::Disabled(AccountState::Expired | AccountState::Usable) => "expired",
            other => {
                return Err(NoGrant::Refused(format!(
                    "{user} is not managed ({}): add them to [policy] managed_group or \
                     managed_users first (root, system accounts and uids outside \
                     uid_min..=uid_max never are); keyward gives no unlock right that verify \
                     would then revoke",
                    other.label()
                )))
            }
        };
        Err(NoGrant::Refused(format!(
            "{user}'s account is {what}: the system refuses its logins, so keyward gives it no unlock right"
        )))
    }
}

/// Why a user is or is not managed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Decision {
    /// Listed in `managed_users`.
    Listed,
    /// A member of `managed_group`.
    GroupMember,
    /// Root is never managed.
    Root,
    /// A system or service account: a uid outside `uid_min..=uid_max`, or in
    /// [`RESERVED_UIDS`].
    SystemAccount,
    /// Neither listed nor a member.
    NotManaged,
}

impl Decision {
    /// True if the user gets unlock rights at login.
    pub fn is_managed(&self) -> bool {
        matches!(self, Decision::Listed | Decision::GroupMember)
    }
}

/// Decide for `user` (uid `uid`, member of `groups`, primary group included).
pub fn decide(policy: &Policy, user: &UserName, uid: Uid, groups: &[String]) -> Decision {
    if uid.get() == 0 {
        return Decision::Root;
    }
    if !policy.may_manage_uid(uid) {
        return Decision::SystemAccount;
    }
    if policy.managed_users.contains(user) {
        return Decision::Listed;
    }
    match &policy.managed_group {
        Some(g) if groups.iter().any(|m| m == g) => Decision::GroupMember,
        _ => Decision::NotManaged,
    }
}

/// The escrow server's policy override, set by a signed `set-policy` command and kept by the
/// helper in its root-only state (`state_dir/policy-override.json`). Only these keys can be
/// overridden; an absent value means `keyward.toml`'s applies. Each `set-policy` replaces the
/// whole override; one issued before the override in force is refused as superseded.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyOverride {
    /// The command that set it.
    pub command_id: String,
    /// When the server issued that command (Unix seconds): orders overrides.
    pub issued: u64,
    /// Overrides `[policy] recovery_rotation_days`.
    pub recovery_rotation_days: Option<u32>,
    /// Overrides `[policy] revoke_unmanaged`.
    pub revoke_unmanaged: Option<bool>,
}

impl PolicyOverride {
    /// `policy` with the override applied.
    pub fn apply(&self, policy: &Policy) -> Policy {
        let mut p = policy.clone();
        if let Some(days) = self.recovery_rotation_days {
            p.recovery_rotation_days = days;
        }
        if let Some(revoke) = self.revoke_unmanaged {
            p.revoke_unmanaged = revoke;
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_managed_user_may_be_granted_and_the_refusal_says_why() {
        let alice = UserName::parse("alice").expect("name");
        let uid = Uid::new(1000).expect("uid");
        assert_eq!(Standing::Managed(uid).grantee(&alice), Ok(uid));
        assert_eq!(
            Standing::Deleted.grantee(&alice),
            Err(NoGrant::NoSuchUser(alice.clone()))
        );
        let locked = Standing::Disabled(AccountState::Locked).grantee(&alice);
        assert!(
            matches!(&locked, Err(NoGrant::Refused(m)) if m.starts_with("alice's account is locked:")),
            "{locked:?}"
        );
        let expired = Standing::Disabled(AccountState::Expired).grantee(&alice);
        assert!(
            matches!(&expired, Err(NoGrant::Refused(m)) if m.starts_with("alice's account is expired:")),
            "{expired:?}"
        );
        for (s, label) in [
            (Standing::NotManaged("x".into()), "not-managed"),
            (Standing::UidChanged, "uid-changed"),
        ] {
            let e = s.grantee(&alice).expect_err("refused").to_string();
            assert!(
                e.starts_with(&format!("alice is not managed ({label}): add them")),
                "{e}"
            );
        }
    }

    #[test]
    fn an_override_replaces_only_what_it_names() {
        let base = policy(&[]);
        let o = PolicyOverride {
            command_id: "0123456789abcdef".into(),
            issued: 1,
            recovery_rotation_days: Some(7),
            revoke_unmanaged: None,
        };
        let p = o.apply(&base);
        assert_eq!(p.recovery_rotation_days, 7);
        assert_eq!(p.revoke_unmanaged, base.revoke_unmanaged);
        assert_eq!(p.managed_group, base.managed_group);
    }

    #[test]
    fn locked_and_expired_accounts() {
        let today = 20_000;
        assert_eq!(
            AccountState::judge("$y$j9T$x", "", today),
            AccountState::Usable
        );
        assert_eq!(
            AccountState::judge("!$y$j9T$x", "", today),
            AccountState::Locked
        );
        assert_eq!(
            AccountState::judge("!!$y$j9T$x", "", today),
            AccountState::Locked
        );
        for never_set in ["!", "!!", "*", "!*"] {
            assert_eq!(
                AccountState::judge(never_set, "", today),
                AccountState::Usable
            );
        }
        assert_eq!(
            AccountState::judge("$y$x", "0", today),
            AccountState::Expired
        );
        assert_eq!(
            AccountState::judge("$y$x", "20000", today),
            AccountState::Expired
        );
        assert_eq!(
            AccountState::judge("$y$x", "20001", today),
            AccountState::Usable
        );
        assert_eq!(
            AccountState::judge("$y$x", "junk", today),
            AccountState::Usable
        );
    }

    fn policy(users: &[&str]) -> Policy {
        Policy {
            managed_group: Some("keyward-users".into()),
            managed_users: users
                .iter()
                .map(|u| UserName::parse(u).expect("valid"))
                .collect(),
            revoke_unmanaged: false,
            admin_group: None,
            recovery_rotation_days: 90,
            service_rotation_days: 30,
            pending_max_age_secs: 3 * 86_400,
            primary_user: None,
            uid_min: DEFAULT_UID_MIN,
            uid_max: DEFAULT_UID_MAX,
        }
    }

    #[test]
    fn decisions() {
        let u = |s: &str| UserName::parse(s).expect("valid");
        let uid = |n| Uid::new(n).expect("valid");
        let p = policy(&["bob"]);
        let groups = vec!["keyward-users".to_owned()];
        assert_eq!(
            decide(&p, &u("alice"), uid(1001), &groups),
            Decision::GroupMember
        );
        assert_eq!(decide(&p, &u("bob"), uid(1002), &[]), Decision::Listed);
        assert_eq!(
            decide(&p, &u("carol"), uid(1003), &[]),
            Decision::NotManaged
        );
        assert_eq!(decide(&p, &u("root"), uid(0), &groups), Decision::Root);
        assert_eq!(
            decide(&p, &u("bob"), uid(999), &groups),
            Decision::SystemAccount
        );
        assert_eq!(
            decide(&p, &u("nobody"), uid(65534), &groups),
            Decision::SystemAccount
        );
        // Directory users: sssd's AD and FreeIPA ranges are managed by default; systemd's
        // dynamic users and anything at 2^31 and up are not.
        for directory_uid in [200_001, 1_868_400_500, 2_147_483_647] {
            assert_eq!(
                decide(&p, &u("dave"), uid(directory_uid), &groups),
                Decision::GroupMember,
                "{directory_uid}"
            );
        }
        for service_uid in [
            59_999 + 1,
            61_184,
            65_519,
            65_535,
            2_147_483_648,
            4_294_967_294,
        ] {
            assert_eq!(
                decide(&p, &u("bob"), uid(service_uid), &groups),
                Decision::SystemAccount,
                "{service_uid}"
            );
        }
        assert_eq!(
            decide(&p, &u("bob"), uid(59_999), &groups),
            Decision::Listed
        );
        // A narrower range set by the admin.
        let narrow = Policy {
            uid_min: 500,
            uid_max: 300_000,
            ..p.clone()
        };
        assert_eq!(
            decide(&narrow, &u("gail"), uid(500), &groups),
            Decision::GroupMember
        );
        assert_eq!(
            decide(&narrow, &u("gail"), uid(499), &groups),
            Decision::SystemAccount
        );
        assert_eq!(
            decide(&narrow, &u("hugo"), uid(300_001), &groups),
            Decision::SystemAccount
        );
        assert!(!Decision::Root.is_managed());
    }
}
