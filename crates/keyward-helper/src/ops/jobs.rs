//! Captured logins and password changes (pam_keyward.so; on a Mac, the authorization plugin),
//! handled off the request path: the helper answers the caller at once and a worker thread per
//! user does the work — one job per user at a time, later events folding into the pending one
//! (`keyward_core::login_queue`).
//! On a volume whose rights are granted through the service secret (LUKS2) a login grants a
//! missing right or heals one the password no longer opens, and a password change moves the
//! user's right to the new password; on a Mac, the vault's own login grants or revokes a Secure
//! Token (macOS authenticates the password itself).
//!
//! A login by a user whose slot already works costs no KDF run: the helper remembers, per slot,
//! a keyed digest of the password that last opened it (`keyward_core::slot_memory`, in memory
//! only, keyed by a secret drawn at start, so nothing on disk or in a core dump helps an attacker).

use std::sync::Arc;

use keyward_core::audit::Record;
use keyward_core::config::{Config, Volume};
use keyward_core::ipc::Reply;
use keyward_core::login::{self, VolumeLogin};
use keyward_core::login_queue::Event;
use keyward_core::{Secret, Uid, UserName};

use crate::accounts::{self, Standing};
use crate::audit;
use crate::ctx::{lock, Caller, Ctx};
use crate::error::OpError;
use crate::vault::{self, with_vault};
use keyward_sys::failpoint::failpoint;

/// Queue `event` for `user`, starting a worker if none runs for them.
pub fn submit(ctx: &Arc<Ctx>, user: UserName, event: Event, caller: Caller) {
    if !lock(&ctx.jobs.queue).submit(&user, event, caller) {
        return;
    }
    let ctx = Arc::clone(ctx);
    let spawned = std::thread::Builder::new()
        .name("job".into())
        .spawn(move || work(&ctx, &user));
    if let Err(e) = spawned {
        eprintln!("keyward-helper: cannot start a job thread: {e}");
    }
}

fn work(ctx: &Arc<Ctx>, user: &UserName) {
    // The lock is held only to take the next event (a `let`, not a `while let` scrutinee).
    loop {
        let Some((event, caller, folded)) = lock(&ctx.jobs.queue).next(user) else {
            return;
        };
        let (op, result) = match event {
            Event::Login(password) => ("login-capture", login(ctx, user, &password, false)),
            Event::Change(new) => ("password-change", login(ctx, user, &new, true)),
        };
        let result = login::job_result(result, folded);
        let record = Record {
            user: Some(user.to_string()),
            ..Record::new("admin", caller.uid.get(), caller.pid, op, &result)
        };
        if let Err(e) = lock(&ctx.audit).append(record) {
            eprintln!("keyward-helper: audit log: {e}");
        }
    }
}

#[cfg(target_os = "linux")]
use crate::password_check::verify as verify_password;

/// No system check of a password outside Linux. A Mac needs none for its own volume: a Secure
/// Token is granted or removed only by sysadminctl authenticating the password itself.
#[cfg(not(target_os = "linux"))]
fn verify_password(user: &UserName, _password: &Secret, _change: bool) -> Result<(), String> {
    Err(format!(
        "{user}: no password check on this system; nothing enrolled"
    ))
}

fn login(
    ctx: &Ctx,
    user: &UserName,
    password: &Secret,
    after_change: bool,
) -> Result<String, String> {
    let c = &ctx.config;
    let admin = accounts::is_admin(c, user)?;
    let standing = accounts::standing(c, user, None)?;
    // Who may hold a LUKS2 slot, and whether the system takes the password: both about the
    // user, so asked once, and only if a LUKS2 volume is configured (a Mac has no such check).
    let luks2 = c
        .volumes
        .iter()
        .any(vault::login_needs_password_check)
        .then(|| luks2_gate(user, &standing, admin, password, after_change));
    let done = match luks2 {
        Some(Ok(_)) if admin && !after_change => (c.volumes.iter())
            .filter(|v| vault::login_needs_password_check(v))
            .filter_map(|v| bootstrap_at_login(c, v, password))
            .collect(),
        _ => Vec::new(),
    };
    let outcomes = c
        .volumes
        .iter()
        .map(|v| {
            let outcome = match (vault::login_needs_password_check(v), &luks2) {
                // Nothing at a password change on a Mac: macOS moves a token to the new
                // password itself (and a Mac's plugin sends only logins).
                (false, _) if after_change => Ok(VolumeLogin::Skipped),
                (false, _) => with_vault(c, v, |vault| vault.own_login(user, &standing, password))
                    .map_err(|e| e.to_string()),
                (true, Some(Ok(Some(uid)))) => luks2_login(ctx, v, user, *uid, password),
                (true, Some(Err(why))) => Ok(VolumeLogin::Refused(why.clone())),
                (true, Some(Ok(None)) | None) => Ok(VolumeLogin::Skipped),
            };
            (v.name.to_string(), outcome)
        })
        .collect();
    login::summary(done, outcomes)
}

/// An admin's login bootstraps a LUKS2 volume that has no service slot yet, from a password
/// that opens an existing slot (used once, not kept). What was done, if anything.
fn bootstrap_at_login(c: &Config, v: &Volume, password: &Secret) -> Option<String> {
    match with_vault(c, v, |vault| super::bootstrap_on(vault, None, password)) {
        Ok(Reply::Bootstrapped {
            slot,
            created: true,
        }) => Some(format!(
            "{}: bootstrapped service slot {slot} at an admin's login",
            v.name
        )),
        Ok(_) => None,
        Err(e) => Some(format!("{}: no bootstrap: {e}", v.name)),
    }
}

/// May `user` hold a LUKS2 slot (their uid), or only bootstrap as an admin (`None`), with this
/// password? A LUKS2 slot is granted through the service secret, which would take any password,
/// so the system must vouch for it first.
fn luks2_gate(
    user: &UserName,
    standing: &Standing,
    admin: bool,
    password: &Secret,
    after_change: bool,
) -> Result<Option<Uid>, String> {
    let uid = match standing {
        Standing::Managed(uid) => Some(*uid),
        _ if admin => None,
        other => return Err(format!("not managed ({})", other.label())),
    };
    verify_password(user, password, after_change)?;
    Ok(uid)
}

/// A login or password change on one LUKS2 volume: grant, heal, or leave alone the user's
/// slot, then the boot order.
fn luks2_login(
    ctx: &Ctx,
    v: &Volume,
    user: &UserName,
    uid: Uid,
    password: &Secret,
) -> Result<VolumeLogin, String> {
    let slot = with_vault(&ctx.config, v, |vault| {
        let mine = vault.state()?.user_slot(user).map(|(slot, _)| slot);
        if let Some(slot) = mine {
            if lock(&ctx.jobs.opened).opened_last(&v.name, slot, password) {
                return Ok(format!("slot {slot} works (verified earlier)"));
            }
            if vault.opens(slot, password)? {
                lock(&ctx.jobs.opened).remember(&v.name, slot, password);
                return Ok(format!("slot {slot} works"));
            }
        }
        // Nothing is begun, or recorded as begun, without a working service secret.
        let (_, service) = vault.working()?;
        match mine {
            Some(old) => {
                // Recorded durably before the rekey, so a crash after it and before the job's
                // own record still leaves the change in the chain; a change that cannot be
                // recorded is not made.
                let begun = Record {
                    volume: Some(v.name.to_string()),
                    user: Some(user.to_string()),
                    ..audit::event("slot-rekey", &format!("ok: begun: slot {old} follows {user}'s new password (the job's record follows)"))
                };
                lock(&ctx.audit)
                    .append(begun)
                    .map_err(|e| OpError::Failed(format!("audit log: {e}")))?;
                let new = vault.rekey(old, &service, password)?;
                failpoint("login.rekeyed");
                let mut opened = lock(&ctx.jobs.opened);
                opened.forget(&v.name, old);
                opened.remember(&v.name, new, password);
                Ok(format!("rekeyed slot {old} to slot {new}"))
            }
            None => {
                let new = vault.grant_user(user, uid, &service, password)?;
                lock(&ctx.jobs.opened).remember(&v.name, new, password);
                Ok(format!("granted slot {new}"))
            }
        }
    })
    .map_err(|e: OpError| e.to_string())?;
    let order = vault::luks::boot_order::after_login(&ctx.config, v, user)
        .unwrap_or_else(|e| format!("; boot order not changed: {e}"));
    Ok(VolumeLogin::Done(format!("{slot}{order}")))
}
