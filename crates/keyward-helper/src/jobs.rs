//! PAM events, handled off the request path: the helper answers the PAM module at once and a
//! worker thread per user does the work — one job per user at a time, later events folding
//! into the pending one. A login grants a missing slot or heals one the password no longer
//! opens; a password change moves the user's slots to the new password via the service secret.
//!
//! A login by a user whose slot already works costs no KDF run: the helper remembers, per slot,
//! a keyed digest of the password that last opened it (in memory only, keyed by a secret drawn
//! at start, so nothing on disk or in a core dump helps an attacker), and compares digests.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use keyward_core::audit::Record;
use keyward_core::config::Volume;
use keyward_core::store::GrantRequest;
use keyward_core::{Authority, HolderRole, Secret, SlotId, Uid, UnlockStore, UserName, VolumeName};
use keyward_sys::audit_file::now_rfc3339;
use sha2::{Digest, Sha256};

use crate::accounts::{self, Standing};
use crate::ops;
use crate::server::Ctx;

/// One PAM event.
#[derive(Debug)]
pub enum Job {
    /// A login with this password.
    Login(Secret),
    /// A password change to `new`.
    Change {
        /// The new password.
        new: Secret,
    },
}

/// Who handed the event over (the PAM module's process), for the audit record. The request
/// itself is not audited on arrival: the job writes one record with its outcome, so a login
/// costs the PAM stack no fsync.
pub type Caller = keyward_sys::peer::Peer;

#[derive(Debug, Default)]
struct Pending {
    running: bool,
    next: Option<(Job, Option<Caller>)>,
    /// Events folded into `next` since the last record.
    folded: u32,
}

/// The queue and the verification memory.
#[derive(Debug)]
pub struct Jobs {
    queue: Mutex<HashMap<UserName, Pending>>,
    verified: Mutex<HashMap<(VolumeName, SlotId), [u8; 32]>>,
    key: Secret,
}

impl Jobs {
    /// An empty queue with a fresh digest key.
    pub fn new() -> Result<Self, String> {
        let key = keyward_sys::random::service_secret().map_err(|e| e.to_string())?;
        Ok(Jobs {
            queue: Mutex::default(),
            verified: Mutex::default(),
            key,
        })
    }

    fn digest(&self, password: &Secret) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.key.expose());
        h.update(password.expose());
        h.finalize().into()
    }

    fn remember(&self, v: &VolumeName, slot: SlotId, password: &Secret) {
        let d = self.digest(password);
        lock(&self.verified).insert((v.clone(), slot), d);
    }

    fn recently_verified(&self, v: &VolumeName, slot: SlotId, password: &Secret) -> bool {
        let d = self.digest(password);
        lock(&self.verified)
            .get(&(v.clone(), slot))
            .is_some_and(|known| known == &d)
    }

    fn forget(&self, v: &VolumeName, slot: SlotId) {
        lock(&self.verified).remove(&(v.clone(), slot));
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Queue a job for `user`, starting a worker if none runs for them.
pub fn submit(ctx: &Arc<Ctx>, user: UserName, job: Job, caller: Caller) {
    let mut queue = lock(&ctx.jobs.queue);
    let entry = queue.entry(user.clone()).or_default();
    // A pending password change is not displaced by a login; otherwise the newest event wins.
    let keep_change =
        matches!(entry.next, Some((Job::Change { .. }, _))) && matches!(job, Job::Login(_));
    if entry.next.is_some() {
        entry.folded += 1;
    }
    if !keep_change {
        entry.next = Some((job, Some(caller)));
    }
    if entry.running {
        return;
    }
    entry.running = true;
    drop(queue);
    let ctx = Arc::clone(ctx);
    let spawned = std::thread::Builder::new()
        .name("job".into())
        .spawn(move || work(&ctx, &user));
    if let Err(e) = spawned {
        eprintln!("keyward-helper: cannot start a job thread: {e}");
    }
}

fn work(ctx: &Arc<Ctx>, user: &UserName) {
    loop {
        let (job, caller, folded) = {
            let mut queue = lock(&ctx.jobs.queue);
            let Some(pending) = queue.get_mut(user) else {
                return;
            };
            match pending.next.take() {
                Some((j, c)) => (j, c, std::mem::take(&mut pending.folded)),
                None => {
                    queue.remove(user);
                    return;
                }
            }
        };
        let (op, result) = match job {
            Job::Login(password) => ("login-capture", login(ctx, user, &password, false)),
            Job::Change { new } => ("password-change", login(ctx, user, &new, true)),
        };
        let record = Record {
            seq: 0,
            time: now_rfc3339(),
            prev: String::new(),
            caller: "admin".into(),
            uid: caller.map_or(0, |c| c.uid.get()),
            pid: caller.map_or(0, |c| c.pid),
            op: op.into(),
            volume: None,
            user: Some(user.to_string()),
            result: match (result, folded) {
                (Ok(done), 0) => format!("ok: {done}"),
                (Ok(done), n) => format!("ok: {done} (and {n} earlier event(s) folded in)"),
                (Err(why), _) => format!("error:Refused: {why}"),
            },
            folded: None,
        };
        if let Err(e) = lock(&ctx.audit).append(record) {
            eprintln!("keyward-helper: audit log: {e}");
        }
    }
}

#[cfg(target_os = "linux")]
use crate::password_check::verify as verify_password;

/// A Mac's logins reach keyward through an authorization plugin (issue 19), not PAM.
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
    let uid = match accounts::standing(c, user, None)? {
        Standing::Managed(uid) => Some(uid),
        _ if admin => None,
        other => return Err(format!("not managed ({})", other.label())),
    };
    verify_password(user, password, after_change)?;
    let mut done = Vec::new();
    if admin && !after_change {
        // An admin's login bootstraps any volume that has no service slot yet, from a password
        // that opens an existing slot. The password is used once and not kept.
        for v in luks2_volumes(c) {
            match ops::bootstrap(c, &v.name, None, password) {
                Ok(keyward_core::ipc::Reply::Bootstrapped {
                    slot,
                    created: true,
                }) => {
                    done.push(format!(
                        "{}: bootstrapped service slot {slot} at an admin's login",
                        v.name
                    ));
                }
                Err(keyward_core::ipc::Response::Error { message, .. }) => {
                    done.push(format!("{}: no bootstrap: {message}", v.name));
                }
                Ok(_) | Err(_) => {}
            }
        }
    }
    let Some(uid) = uid else {
        return Ok(done.join("; "));
    };
    done.extend(
        luks2_volumes(c).map(|v| match on_volume(ctx, v, user, uid, password) {
            Ok(s) => match crate::boot_order::after_login(c, v, user) {
                Ok(order) => format!("{}: {s}{order}", v.name),
                Err(e) => format!("{}: {s}; boot order not changed: {e}", v.name),
            },
            Err(e) => format!("{}: failed: {e}", v.name),
        }),
    );
    Ok(done.join("; "))
}

/// The volumes PAM events act on. A Mac's logins reach keyward through an authorization
/// plugin, not PAM (not built yet), and macOS itself moves a token to a user's new password.
fn luks2_volumes(c: &keyward_core::config::Config) -> impl Iterator<Item = &Volume> {
    c.volumes
        .iter()
        .filter(|v| v.kind == keyward_core::config::VolumeKind::Luks2)
}

/// Grant, heal, or leave alone the user's slot on one volume.
fn on_volume(
    ctx: &Ctx,
    v: &Volume,
    user: &UserName,
    uid: Uid,
    password: &Secret,
) -> Result<String, String> {
    let c = &ctx.config;
    let msg = |r: keyward_core::ipc::Response| match r {
        keyward_core::ipc::Response::Error { message, .. } => message,
        keyward_core::ipc::Response::Ok(_) => String::new(),
    };
    let mut store = ops::open(c, v).map_err(msg)?;
    let state = store.state().map_err(|e| e.to_string())?;
    let mine = state.holders().into_iter().find_map(|h| match h.role {
        HolderRole::User { name, .. } if &name == user => Some(h.slot),
        _ => None,
    });
    if let Some(slot) = mine {
        if ctx.jobs.recently_verified(&v.name, slot, password) {
            return Ok(format!("slot {slot} works (verified earlier)"));
        }
        if store.verify(slot, password).map_err(|e| e.to_string())? {
            ctx.jobs.remember(&v.name, slot, password);
            return Ok(format!("slot {slot} works"));
        }
    }
    let (_, service) = crate::service::working(c, v, &mut store).map_err(msg)?;
    let authority = Authority::Service(&service);
    match mine {
        Some(old) => {
            let new = store
                .rekey(old, authority, password)
                .map_err(|e| e.to_string())?;
            crate::service::failpoint("login.rekeyed");
            ctx.jobs.forget(&v.name, old);
            ctx.jobs.remember(&v.name, new, password);
            Ok(format!("rekeyed slot {old} to slot {new}"))
        }
        None => {
            let req = GrantRequest::user(user.clone(), uid);
            let new = store
                .grant(&req, authority, password)
                .map_err(|e| e.to_string())?;
            ctx.jobs.remember(&v.name, new, password);
            Ok(format!("granted slot {new}"))
        }
    }
}
