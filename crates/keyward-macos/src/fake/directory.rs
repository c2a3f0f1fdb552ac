//! The simulated directory: `dscl` reads, lists and writes, and interactive `passwd` with the
//! traps the public record describes (a reset leaves FileVault on the old password; the first
//! account given a password on a volume without token holders gets a token).

use super::{field, render, FakeAccount, FakeMac};
use crate::runner::{Output, RunError};

impl FakeMac {
    pub(super) fn passwd(&mut self, stdin: &[u8], with_old: bool) -> Result<Output, RunError> {
        let line = std::str::from_utf8(stdin).map_err(|_| RunError::Unscripted("stdin".into()))?;
        let words: Vec<&str> = line.split_whitespace().collect();
        let (path, old, new) = match (with_old, words.as_slice()) {
            (true, ["passwd", p, o, n]) => (*p, Some(*o), *n),
            (false, ["passwd", p, n]) => (*p, None, *n),
            _ => {
                return Err(RunError::Unscripted(format!(
                    "dscl stdin has {} words",
                    words.len()
                )))
            }
        };
        let name = path.trim_start_matches("/Users/").to_owned();
        let tear = std::mem::take(&mut self.tear_next_password_change);
        let no_holder = !self.accounts.iter().any(|a| a.token);
        let Some(a) = self.account_mut(&name) else {
            return render("dscl-read-not-found", &[]);
        };
        if let Some(old) = old {
            if a.login_password.as_deref() != Some(old.as_bytes()) {
                return render("dscl-passwd-auth-failed", &[]);
            }
            if a.token && !tear {
                a.unlock_password = Some(new.as_bytes().to_vec());
            }
        }
        a.login_password = Some(new.as_bytes().to_vec());
        let tagged = a
            .authority
            .iter()
            .any(|v| v == crate::build::dscl::DISABLED_TOKEN_TAG);
        if no_holder && !tagged && !a.token {
            // macOS gives the first account that gets a password on a volume without token
            // holders a token of its own.
            a.token = true;
            a.unlock_password = Some(new.as_bytes().to_vec());
        }
        render("dscl-passwd-ok", &[])
    }

    pub(super) fn dscl_write(&mut self, argv: &[String]) -> Result<Output, RunError> {
        let (op, path) = (field(argv, 1)?, field(argv, 2)?);
        let attr = argv.get(3).cloned();
        let value = argv.get(4).cloned();
        if let Some(group) = path.strip_prefix("/Groups/") {
            match (op, group, attr.as_deref()) {
                ("-append", "admin", Some("GroupMembership")) => {
                    let who = value.unwrap_or_default();
                    if let Some(a) = self.account_mut(&who) {
                        a.admin = true;
                    }
                }
                ("-create", g, None) => {
                    self.groups.entry(g.to_owned()).or_insert(-1);
                }
                ("-create", g, Some("PrimaryGroupID")) => {
                    let gid = value.and_then(|v| v.parse().ok()).unwrap_or(-1);
                    self.groups.insert(g.to_owned(), gid);
                }
                ("-delete", g, None) => {
                    self.groups.remove(g);
                }
                _ => {}
            }
            return render("dscl-write-ok", &[]);
        }
        let name = path.trim_start_matches("/Users/").to_owned();
        if op == "-create" && attr.is_none() {
            if self.account(&name).is_none() {
                self.accounts.push(FakeAccount {
                    name: name.clone(),
                    real_name: name.clone(),
                    uid: -1,
                    generated_uid: format!(
                        "{:08X}-0000-4000-8000-{:012X}",
                        0xABCD_u32,
                        self.accounts.len()
                    ),
                    ..FakeAccount::default()
                });
            }
            return render("dscl-write-ok", &[]);
        }
        let Some(a) = self.account_mut(&name) else {
            return render("dscl-read-not-found", &[]);
        };
        match (op, attr.as_deref(), value) {
            ("-create", Some("UniqueID"), Some(v)) => a.uid = v.parse().unwrap_or(-1),
            ("-create", Some("IsHidden"), Some(v)) => a.hidden = v == "1",
            ("-create", Some("RealName"), Some(v)) => a.real_name = v,
            ("-create", Some("AuthenticationAuthority"), Some(v)) => a.authority = vec![v],
            ("-append", Some("AuthenticationAuthority"), Some(v)) => a.authority.push(v),
            ("-delete", Some("AuthenticationAuthority"), Some(v)) => {
                a.authority.retain(|x| *x != v)
            }
            ("-create", Some(k), Some(v)) => {
                a.attrs.insert(k.to_owned(), v);
            }
            _ => return Err(RunError::Unscripted(format!("dscl write {argv:?}"))),
        }
        render("dscl-write-ok", &[])
    }

    pub(super) fn dscl_read(&self, argv: &[String]) -> Result<Output, RunError> {
        let path = field(argv, 2)?;
        if let Some(g) = path.strip_prefix("/Groups/") {
            return match self.groups.get(g) {
                Some(gid) => render(
                    "dscl-read",
                    &[("record", &format!("PrimaryGroupID: {gid}\n"))],
                ),
                None => render("dscl-read-not-found", &[]),
            };
        }
        let Some(a) = self.account(path.trim_start_matches("/Users/")) else {
            return render("dscl-read-not-found", &[]);
        };
        let mut rec = String::new();
        if !a.authority.is_empty() {
            rec.push_str(&format!(
                "AuthenticationAuthority: {}\n",
                a.authority.join(" ")
            ));
        }
        rec.push_str(&format!("GeneratedUID: {}\n", a.generated_uid));
        if a.hidden {
            rec.push_str("IsHidden: 1\n");
        }
        rec.push_str(&format!("UniqueID: {}\n", a.uid));
        render("dscl-read", &[("record", &rec)])
    }

    pub(super) fn dscl_list(&self, argv: &[String]) -> Result<Output, RunError> {
        let mut list = String::from("_amavisd                 83\n_appleevents             55\nnobody                   -2\nroot                     0\n");
        if field(argv, 3)? == "GeneratedUID" {
            list.clear();
        }
        for a in &self.accounts {
            let v = if field(argv, 3)? == "GeneratedUID" {
                a.generated_uid.clone()
            } else {
                a.uid.to_string()
            };
            list.push_str(&format!("{:<24} {v}\n", a.name));
        }
        render("dscl-list", &[("list", &list)])
    }
}
