//! `keyward-server admin add|remove|list|set-role|reset-totp`: the web UI's accounts, their
//! roles (`roles.rs`) and their TOTP second factor (`totp.rs`). A password is read from
//! standard input only (never argv, where `ps` and shell history see it) and stored as an
//! argon2id hash; a TOTP secret is made here, sealed to the server's identity and printed once
//! as an `otpauth://` URI on standard output (never in the audit trail or a log). Every change
//! is audited. A role change applies to the account's next request; a new or removed TOTP
//! secret ends the account's sessions.

use std::io::BufRead;

use zeroize::Zeroizing;

use super::totp::Secret;
use super::{db, password};
use crate::roles::Role;
use crate::store::Store;

/// Admin account commands.
#[derive(clap::Subcommand, Debug)]
pub enum AdminAction {
    /// Add a web UI account; the password is read from standard input.
    Add {
        /// Name (letters, digits, `.`, `_`, `-`, `@`; at most 64).
        name: String,
        /// viewer, helpdesk, approver or admin.
        #[arg(long, default_value = "admin", value_parser = parse_role)]
        role: Role,
        /// Read the password (one line, at least 12 characters) from standard input: never in argv.
        #[arg(long, required = true)]
        password_stdin: bool,
        /// Also require a TOTP code at login; prints the otpauth:// URI for an authenticator
        /// app, once, on standard output. Needs the server identity in --state.
        #[arg(long)]
        totp: bool,
        #[command(flatten)]
        at: crate::Where,
    },
    /// Give an account a new TOTP secret (prints its otpauth:// URI once) and end its sessions;
    /// the old secret's codes stop working at once.
    ResetTotp {
        /// Name.
        name: String,
        /// Remove TOTP from the account instead (its login needs the password only).
        #[arg(long)]
        off: bool,
        #[command(flatten)]
        at: crate::Where,
    },
    /// Remove a web UI admin and end their sessions.
    Remove {
        /// Name.
        name: String,
        #[command(flatten)]
        at: crate::Where,
    },
    /// End every web UI session of NAME at once: an account, or `sso:NAME` for a person who
    /// signed in with SSO (their role comes from their groups again at their next sign-in).
    EndSessions {
        /// Name (`sso:NAME` for single sign-on).
        name: String,
        #[command(flatten)]
        at: crate::Where,
    },
    /// List the web UI accounts, their roles and whether they have TOTP.
    List {
        #[command(flatten)]
        at: crate::Where,
    },
    /// Give an account another role (from its next request on).
    SetRole {
        /// Name.
        name: String,
        /// viewer, helpdesk, approver or admin.
        #[arg(value_parser = parse_role)]
        role: Role,
        #[command(flatten)]
        at: crate::Where,
    },
}

/// A role from the command line.
pub fn parse_role(s: &str) -> Result<Role, String> {
    s.parse()
        .map_err(|e: crate::roles::UnknownRole| e.to_string())
}

/// Whether `name` may name an admin.
pub fn name_ok(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'@'))
}

fn read_password() -> Result<Zeroizing<String>, String> {
    let mut line = Zeroizing::new(String::new());
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| format!("reading the password: {e}"))?;
    let password = Zeroizing::new(line.trim_end_matches(['\r', '\n']).to_owned());
    let length = password.chars().count();
    if length < password::MIN_LEN {
        return Err(format!(
            "the password must have at least {} characters",
            password::MIN_LEN
        ));
    }
    if length > 1024 {
        return Err("the password is longer than 1024 characters".into());
    }
    Ok(password)
}

async fn audit(store: &Store, action: &str, what: String) -> Result<(), String> {
    crate::operator::audit_cli(store, action, what).await
}

/// A fresh TOTP secret for `name`: sealed to the server's identity in `state` for the
/// database, and its URI for the operator.
fn new_totp(state: &std::path::Path, name: &str) -> Result<(String, Zeroizing<String>), String> {
    let identity = crate::identity::Identity::load(state)?;
    let secret = Secret::generate().map_err(|e| e.to_string())?;
    let sealed = secret
        .seal(&identity.age.to_public())
        .map_err(|e| e.to_string())?;
    Ok((sealed, secret.uri(name)))
}

/// Print a TOTP URI on standard output, the one place it ever goes.
fn show_uri(uri: &str) -> Result<(), String> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{uri}")
        .and_then(|()| out.flush())
        .map_err(|e| format!("printing the TOTP URI: {e}"))
}

/// Run an admin command.
pub async fn run(action: AdminAction) -> Result<(), String> {
    match action {
        AdminAction::Add {
            name,
            role,
            totp,
            at,
            ..
        } => {
            if !name_ok(&name) {
                return Err(
                    "an admin name is 1 to 64 letters, digits, '.', '_', '-' or '@'".into(),
                );
            }
            let password = read_password()?;
            let second = if totp {
                Some(new_totp(&at.state, &name)?)
            } else {
                None
            };
            let store = Store::open(&crate::db_url(&at)?).await?;
            let phc = tokio::task::spawn_blocking(move || password::hash(password.as_bytes()))
                .await
                .map_err(|e| e.to_string())??;
            let sealed = second.as_ref().map(|(sealed, _)| sealed.as_str());
            if !db::add_admin(store.pool(), &name, &phc, role.as_str(), sealed).await? {
                return Err(format!("account {name} already exists"));
            }
            let with = if totp { " with TOTP" } else { "" };
            audit(&store, "admin-add", format!("web UI {role} {name}{with}")).await?;
            if let Some((_, uri)) = second {
                show_uri(&uri)?;
                eprintln!(
                    "keyward-server: add that otpauth:// URI to {name}'s authenticator app now \
                     (it is not shown again; `admin reset-totp {name}` makes a new one)"
                );
            }
            eprintln!("keyward-server: {role} {name} added{with}; sign in at /ui/login");
            Ok(())
        }
        AdminAction::ResetTotp { name, off, at } => {
            let second = if off {
                None
            } else {
                Some(new_totp(&at.state, &name)?)
            };
            let store = Store::open(&crate::db_url(&at)?).await?;
            let sealed = second.as_ref().map(|(sealed, _)| sealed.as_str());
            if !db::set_totp(store.pool(), &name, sealed).await? {
                return Err(format!("no account named {}", keyward_core::quote(&name)));
            }
            let what = if off {
                "TOTP removed"
            } else {
                "new TOTP secret"
            };
            audit(
                &store,
                "admin-reset-totp",
                format!("web UI account {name}: {what}; sessions ended"),
            )
            .await?;
            if let Some((_, uri)) = second {
                show_uri(&uri)?;
                eprintln!(
                    "keyward-server: add that otpauth:// URI to {name}'s authenticator app now \
                     (it is not shown again); the old secret's codes no longer work"
                );
            } else {
                eprintln!("keyward-server: {name} signs in with the password only now");
            }
            eprintln!("keyward-server: {name}'s sessions are ended");
            Ok(())
        }
        AdminAction::Remove { name, at } => {
            let store = Store::open(&crate::db_url(&at)?).await?;
            if !db::remove_admin(store.pool(), &name).await? {
                return Err(format!("no admin named {}", keyward_core::quote(&name)));
            }
            audit(&store, "admin-remove", format!("web UI account {name}")).await?;
            eprintln!("keyward-server: admin {name} removed; their sessions are ended");
            Ok(())
        }
        AdminAction::EndSessions { name, at } => {
            let store = Store::open(&crate::db_url(&at)?).await?;
            let ended = db::end_sessions_of(store.pool(), &name).await?;
            audit(
                &store,
                "admin-end-sessions",
                format!("web UI sessions of {name}: {ended} ended"),
            )
            .await?;
            eprintln!("keyward-server: {ended} session(s) of {name} ended");
            Ok(())
        }
        AdminAction::List { at } => {
            let store = Store::open(&crate::db_url(&at)?).await?;
            for a in db::admins(store.pool()).await? {
                let totp = if a.totp { " totp" } else { "" };
                println!("{} {}{totp}", a.name, a.role);
            }
            Ok(())
        }
        AdminAction::SetRole { name, role, at } => {
            let store = Store::open(&crate::db_url(&at)?).await?;
            if !db::set_role(store.pool(), &name, role.as_str()).await? {
                return Err(format!("no account named {}", keyward_core::quote(&name)));
            }
            audit(
                &store,
                "admin-set-role",
                format!("web UI account {name} is now {role}"),
            )
            .await?;
            eprintln!("keyward-server: {name} is now {role}, from their next request");
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_names_are_plain() {
        assert!(name_ok("alice"));
        assert!(name_ok("ops.team-1@example"));
        assert!(!name_ok(""));
        assert!(!name_ok("a b"));
        assert!(!name_ok("<script>"));
        assert!(!name_ok(&"a".repeat(65)));
        // No colon: `sso:NAME` (a person signed in by single sign-on) is never an account's.
        assert!(!name_ok("sso:alice"));
    }
}
