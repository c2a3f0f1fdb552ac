//! `keyward-server admin add|remove|list|set-role`: the web UI's accounts and their roles
//! (`roles.rs`). A password is read from standard input only (never argv, where `ps` and shell
//! history see it) and stored as an argon2id hash; adding, removing and changing the role of
//! an account are audited. A role change applies to the account's next request.

use std::io::BufRead;

use zeroize::Zeroizing;

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
    /// List the web UI accounts and their roles.
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

/// Run an admin command.
pub async fn run(action: AdminAction) -> Result<(), String> {
    match action {
        AdminAction::Add { name, role, at, .. } => {
            if !name_ok(&name) {
                return Err(
                    "an admin name is 1 to 64 letters, digits, '.', '_', '-' or '@'".into(),
                );
            }
            let password = read_password()?;
            let store = Store::open(&crate::db_url(&at)?).await?;
            let phc = tokio::task::spawn_blocking(move || password::hash(password.as_bytes()))
                .await
                .map_err(|e| e.to_string())??;
            if !db::add_admin(store.pool(), &name, &phc, role.as_str()).await? {
                return Err(format!("account {name} already exists"));
            }
            audit(&store, "admin-add", format!("web UI {role} {name}")).await?;
            eprintln!("keyward-server: {role} {name} added; sign in at /ui/login");
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
        AdminAction::List { at } => {
            let store = Store::open(&crate::db_url(&at)?).await?;
            for (name, role) in db::admins(store.pool()).await? {
                println!("{name} {role}");
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
    }
}
