//! A simulated Mac: a [`Runner`] that keeps a small model of local accounts, Secure Tokens,
//! FileVault and its recovery key, applies each command's effect the way the public record says
//! macOS does, and answers with the transcribed output from `fixtures/`. It also models the traps:
//! a root password reset leaves FileVault on the old password, an account given a password while
//! no token holder exists becomes the first holder, `-secureTokenOn` on a tagged account prints
//! "Done!" and does nothing, and `fdesetup list` need not match the token holders.
//!
//! Tests can script one-shot answers ([`FakeMac::script`]) for failure modes and torn states.

use std::collections::BTreeMap;

use zeroize::Zeroizing;

mod directory;
pub mod persist;

use crate::command::{Invocation, Purpose};
use crate::fixture;
use crate::runner::{Output, RunError, Runner};

/// One simulated account.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct FakeAccount {
    /// Short name.
    pub name: String,
    /// RealName (what `-secureTokenStatus` prints).
    pub real_name: String,
    /// UniqueID.
    pub uid: i64,
    /// GeneratedUID.
    pub generated_uid: String,
    /// The directory (login) password.
    pub login_password: Option<Vec<u8>>,
    /// The password FileVault unlocks with (set when a token is granted, re-wrapped by a change
    /// with the old password, untouched by a reset).
    pub unlock_password: Option<Vec<u8>>,
    /// Holds a Secure Token.
    pub token: bool,
    /// Member of `admin`.
    pub admin: bool,
    /// `IsHidden 1`.
    pub hidden: bool,
    /// `AuthenticationAuthority` values.
    pub authority: Vec<String>,
    /// Other attributes written with `dscl -create`.
    pub attrs: BTreeMap<String, String>,
}

impl FakeAccount {
    /// A regular user (uid ≥ 500) with a password; `token` gives it a Secure Token on the same
    /// password.
    pub fn user(name: &str, real_name: &str, uid: i64, password: &str, token: bool) -> Self {
        FakeAccount {
            name: name.into(),
            real_name: real_name.into(),
            uid,
            generated_uid: format!("{:08X}-0000-4000-8000-{:012X}", uid, uid),
            login_password: Some(password.as_bytes().to_vec()),
            unlock_password: token.then(|| password.as_bytes().to_vec()),
            token,
            admin: true,
            ..FakeAccount::default()
        }
    }
}

/// One recorded call. stdin is kept (wiped on drop) so tests can check what reached stdin.
#[derive(Debug)]
pub struct Call {
    /// What for.
    pub purpose: Purpose,
    /// argv.
    pub argv: Vec<String>,
    /// stdin.
    pub stdin: Zeroizing<Vec<u8>>,
}

#[derive(Debug)]
struct Scripted {
    purpose: Purpose,
    fixture: &'static str,
    apply: bool,
}

/// The simulated Mac. Its model (not the calls or the scripted answers, which belong to one
/// test) is what [`persist`] saves.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct FakeMac {
    /// Accounts.
    pub accounts: Vec<FakeAccount>,
    /// Groups: name → PrimaryGroupID.
    pub groups: BTreeMap<String, i64>,
    /// FileVault is on.
    pub filevault_on: bool,
    /// The personal recovery key.
    pub recovery_key: Option<String>,
    /// Users `fdesetup list` shows although they hold no token (`short,UUID`).
    pub listed_without_token: Vec<String>,
    /// Token holders `fdesetup list` leaves out.
    pub unlisted_holders: Vec<String>,
    /// The next password change re-wraps the login password but not FileVault's (torn).
    pub tear_next_password_change: bool,
    /// `system.login.console` as the authorization database holds it (the bytes last written);
    /// `None`: the simulated Mac has no authorization database and `security` is unscripted.
    pub login_right: Option<Vec<u8>>,
    /// Every call, in order.
    #[serde(skip)]
    pub calls: Vec<Call>,
    #[serde(skip)]
    scripted: Vec<Scripted>,
    keys_made: u32,
}

fn field(argv: &[String], i: usize) -> Result<&str, RunError> {
    argv.get(i)
        .map(String::as_str)
        .ok_or_else(|| RunError::Unscripted(format!("argv too short: {argv:?}")))
}

fn render(name: &'static str, vars: &[(&str, &str)]) -> Result<Output, RunError> {
    fixture::render(name, vars).map_err(|e| RunError::Unscripted(e.to_string()))
}

fn no_authdb() -> RunError {
    RunError::Unscripted("the simulated Mac has no authorization database (set login_right)".into())
}

fn plist_password(stdin: &[u8]) -> Option<Vec<u8>> {
    let v = plist::Value::from_reader_xml(stdin).ok()?;
    v.as_dictionary()?
        .get("Password")?
        .as_string()
        .map(|s| s.as_bytes().to_vec())
}

impl FakeMac {
    /// A Mac with FileVault on, one admin token holder `admin` (password `admin-pw`), a user
    /// `alice` without a token (password `alice-pw`) and a personal recovery key.
    pub fn typical() -> Self {
        FakeMac {
            accounts: vec![
                FakeAccount::user("admin", "Site Admin", 501, "admin-pw", true),
                FakeAccount {
                    admin: false,
                    ..FakeAccount::user("alice", "Alice Appleseed", 502, "alice-pw", false)
                },
            ],
            groups: BTreeMap::new(),
            filevault_on: true,
            recovery_key: Some("AU2A-PHMK-WBGX-PWKX-M3X3-VAPY".into()),
            ..FakeMac::default()
        }
    }

    /// The account with this short name.
    pub fn account(&self, name: &str) -> Option<&FakeAccount> {
        self.accounts.iter().find(|a| a.name == name)
    }

    fn account_mut(&mut self, name: &str) -> Option<&mut FakeAccount> {
        self.accounts.iter_mut().find(|a| a.name == name)
    }

    /// Answer the next command for `purpose` with `fixture`; with `apply`, its effect happens
    /// as usual first (a tool that did the work but printed something else).
    pub fn script(&mut self, purpose: Purpose, fixture: &'static str, apply: bool) {
        self.scripted.push(Scripted {
            purpose,
            fixture,
            apply,
        });
    }

    /// The calls for one purpose.
    pub fn calls_for(&self, purpose: Purpose) -> impl Iterator<Item = &Call> {
        self.calls.iter().filter(move |c| c.purpose == purpose)
    }

    fn authenticates_admin(&self, admin: &str, password: &[u8]) -> bool {
        self.account(admin)
            .is_some_and(|a| a.admin && a.token && a.unlock_password.as_deref() == Some(password))
    }

    fn unlocks_filevault(&self, password: &[u8]) -> bool {
        self.recovery_key.as_deref().map(str::as_bytes) == Some(password)
            || self
                .accounts
                .iter()
                .any(|a| a.token && a.unlock_password.as_deref() == Some(password))
    }

    fn status(&self, name: &str) -> Result<Output, RunError> {
        let a = self
            .account(name)
            .ok_or_else(|| RunError::Unscripted(format!("no account {name}")))?;
        let fixture = if a.token {
            "token-status-enabled"
        } else {
            "token-status-disabled"
        };
        render(fixture, &[("realname", &a.real_name)])
    }

    fn token_change(
        &mut self,
        argv: &[String],
        stdin: &[u8],
        on: bool,
    ) -> Result<Output, RunError> {
        let user = field(argv, 1)?.to_owned();
        let admin = field(argv, 5)?.to_owned();
        let mut lines = stdin.split(|b| *b == b'\n');
        let (pw, admin_pw) = (lines.next().unwrap_or(&[]), lines.next().unwrap_or(&[]));
        if !self.authenticates_admin(&admin, admin_pw) {
            return render("token-on-not-permitted", &[]);
        }
        let done = if on {
            "token-on-done"
        } else {
            "token-off-done"
        };
        let any_holder = self.accounts.iter().any(|a| a.token);
        let Some(a) = self.account_mut(&user) else {
            return render("token-on-auth-failed", &[]);
        };
        if a.login_password.as_deref() != Some(pw) {
            return render("token-on-auth-failed", &[]);
        }
        let tagged = a
            .authority
            .iter()
            .any(|v| v == crate::build::dscl::DISABLED_TOKEN_TAG);
        if on && tagged && any_holder {
            // The phantom: "Done!", and no token.
            return render(done, &[]);
        }
        a.token = on;
        a.unlock_password = on.then(|| pw.to_vec());
        render(done, &[])
    }

    fn fdesetup_list(&self) -> Result<Output, RunError> {
        let mut list = String::new();
        if self.filevault_on {
            for a in self
                .accounts
                .iter()
                .filter(|a| a.token && !self.unlisted_holders.contains(&a.name))
            {
                list.push_str(&format!("{},{}\n", a.name, a.generated_uid));
            }
        }
        for extra in &self.listed_without_token {
            list.push_str(extra);
            list.push('\n');
        }
        render("fdesetup-list", &[("list", &list)])
    }

    fn change_recovery(&mut self, stdin: &[u8]) -> Result<Output, RunError> {
        if !self.filevault_on {
            return render("fdesetup-changerecovery-off", &[]);
        }
        let pw = plist_password(stdin).unwrap_or_default();
        if !self.unlocks_filevault(&pw) {
            return render("fdesetup-changerecovery-auth-failed", &[]);
        }
        self.keys_made += 1;
        let key = format!("K{:03}-PHMK-WBGX-PWKX-M3X3-VAPY", self.keys_made % 1000);
        self.recovery_key = Some(key.clone());
        render("fdesetup-changerecovery-ok", &[("key", &key)])
    }

    fn act(&mut self, inv: &Invocation, argv: &[String], stdin: &[u8]) -> Result<Output, RunError> {
        match inv.purpose {
            Purpose::TokenStatus => self.status(field(argv, 1)?),
            Purpose::TokenOn => self.token_change(argv, stdin, true),
            Purpose::TokenOff => self.token_change(argv, stdin, false),
            Purpose::DeleteUser => {
                let (user, admin) = (field(argv, 1)?.to_owned(), field(argv, 4)?.to_owned());
                let admin_pw = stdin.strip_suffix(b"\n").unwrap_or(stdin);
                let ok = self
                    .account(&admin)
                    .is_some_and(|a| a.login_password.as_deref() == Some(admin_pw));
                if !ok {
                    return render("delete-user-auth-failed", &[]);
                }
                let uid = self
                    .account(&user)
                    .map(|a| a.uid.to_string())
                    .unwrap_or_default();
                self.accounts.retain(|a| a.name != user);
                render("delete-user-done", &[("uid", &uid), ("name", &user)])
            }
            Purpose::FileVaultStatus => render(
                if self.filevault_on {
                    "fdesetup-status-on"
                } else {
                    "fdesetup-status-off"
                },
                &[],
            ),
            Purpose::FileVaultList => self.fdesetup_list(),
            Purpose::HasRecoveryKey => render(
                if self.recovery_key.is_some() {
                    "fdesetup-has-prk-true"
                } else {
                    "fdesetup-has-prk-false"
                },
                &[],
            ),
            Purpose::ChangeRecovery => self.change_recovery(stdin),
            Purpose::ValidateRecovery => {
                let ok = plist_password(stdin).is_some_and(|k| {
                    self.recovery_key.as_deref().map(str::as_bytes) == Some(&k[..])
                });
                render(
                    if ok {
                        "fdesetup-validaterecovery-true"
                    } else {
                        "fdesetup-validaterecovery-false"
                    },
                    &[],
                )
            }
            Purpose::RemoveRecovery => {
                let pw = plist_password(stdin).unwrap_or_default();
                if !self.unlocks_filevault(&pw) {
                    return render("fdesetup-changerecovery-auth-failed", &[]);
                }
                self.recovery_key = None;
                render("fdesetup-removerecovery-ok", &[])
            }
            Purpose::DirectoryList => self.dscl_list(argv),
            Purpose::DirectoryRead => self.dscl_read(argv),
            Purpose::DirectoryWrite => self.dscl_write(argv),
            Purpose::ChangePassword => self.passwd(stdin, true),
            Purpose::SetInitialPassword => self.passwd(stdin, false),
            Purpose::ReadLoginRight => {
                let right = self.login_right.as_deref().ok_or_else(no_authdb)?;
                let text = String::from_utf8_lossy(right);
                render(
                    "security-authdb-read",
                    &[("right", text.strip_suffix('\n').unwrap_or(&text))],
                )
            }
            Purpose::WriteLoginRight => {
                if self.login_right.is_none() {
                    return Err(no_authdb());
                }
                // Like security: stdin must be a property list dictionary, or nothing is set.
                let is_dict =
                    plist::Value::from_reader_xml(stdin).is_ok_and(|v| v.as_dictionary().is_some());
                if !is_dict {
                    return render("security-authdb-write-unreadable", &[]);
                }
                self.login_right = Some(stdin.to_vec());
                render("security-authdb-write-ok", &[])
            }
            Purpose::VerifyUnlock => {
                let uuid = field(argv, 5)?;
                let ok = self.accounts.iter().any(|a| {
                    a.generated_uid == uuid
                        && a.token
                        && a.unlock_password.as_deref() == Some(stdin)
                });
                render(
                    if ok {
                        "diskutil-verify-ok"
                    } else {
                        "diskutil-verify-incorrect"
                    },
                    &[],
                )
            }
        }
    }
}

impl Runner for FakeMac {
    fn run(&mut self, inv: &Invocation) -> Result<Output, RunError> {
        let argv: Vec<String> = inv.argv().into_iter().map(str::to_owned).collect();
        let stdin = Zeroizing::new(inv.stdin.bytes().to_vec());
        let scripted = self
            .scripted
            .iter()
            .position(|s| s.purpose == inv.purpose)
            .map(|i| self.scripted.remove(i));
        let result = match scripted {
            Some(s) => {
                if s.apply {
                    self.act(inv, &argv, &stdin)?;
                }
                render(
                    s.fixture,
                    &[("realname", "Scripted"), ("list", ""), ("record", "")],
                )
            }
            None => self.act(inv, &argv, &stdin),
        };
        self.calls.push(Call {
            purpose: inv.purpose,
            argv,
            stdin,
        });
        result
    }
}
