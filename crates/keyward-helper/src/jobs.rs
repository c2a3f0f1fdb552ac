//! Captured logins and password changes (pam_keyward.so; on a Mac, the authorization plugin),
//! handled off the request path: the helper answers the caller at once and a worker thread per
//! user does the work — one job per user at a time, later events folding into the pending one.
//! Each volume gets its kind's login: on LUKS2 a login grants a missing slot or heals one the
//! password no longer opens, and a password change moves the user's slot to the new password via
//! the service secret; on FileVault, `filevault::login` grants or revokes a Secure Token.
//!
//! A login by a user whose slot already works costs no KDF run: the helper remembers, per slot,
//! a keyed digest of the password that last opened it (in memory only, keyed by a secret drawn
//! at start, so nothing on disk or in a core dump helps an attacker), and compares digests.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use keyward_core::audit::Record;
use keyward_core::config::{Volume, VolumeKind};
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

/// No system check of a password outside Linux. A Mac needs none for its own volume: a Secure
/// Token is granted or removed only by sysadminctl authenticating the password itself.
#[cfg(not(target_os = "linux"))]
fn verify_password(user: &UserName, _password: &Secret, _change: bool) -> Result<(), String> {
    Err(format!(
        "{user}: no password check on this system; nothing enrolled"
    ))
}

/// What a login or password change did on one volume.
#[derive(Debug)]
pub(crate) enum VolumeLogin {
    /// What happened there, for the record.
    Done(String),
    /// Nothing for this user, for a reason about the user rather than the volume (not managed,
    /// the system refused the password); nothing on the volume was touched.
    Refused(String),
    /// The event does not concern this kind of volume.
    Skipped,
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
        .any(|v| v.kind == VolumeKind::Luks2)
        .then(|| luks2_gate(user, &standing, admin, password, after_change));
    let mut done = Vec::new();
    if admin && !after_change && matches!(luks2, Some(Ok(_))) {
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
                Err(message) => {
                    done.push(format!("{}: no bootstrap: {message}", v.name));
                }
                Ok(_) => {}
            }
        }
    }
    let outcomes: Vec<(&Volume, Result<VolumeLogin, String>)> = c
        .volumes
        .iter()
        .map(|v| {
            let outcome = match (v.kind, &luks2) {
                (VolumeKind::FileVault, _) => {
                    crate::filevault::login(c, v, user, &standing, password, after_change)
                }
                (_, Some(Ok(Some(uid)))) => luks2_login(ctx, v, user, *uid, password),
                (_, Some(Err(why))) => Ok(VolumeLogin::Refused(why.clone())),
                (_, Some(Ok(None)) | None) => Ok(VolumeLogin::Skipped),
            };
            (v, outcome)
        })
        .collect();
    // A user-level refusal with nothing done anywhere is the job's error, as it always was.
    let nothing_done = done.is_empty()
        && outcomes
            .iter()
            .all(|(_, o)| matches!(o, Ok(VolumeLogin::Refused(_) | VolumeLogin::Skipped)));
    if nothing_done {
        if let Some((_, Ok(VolumeLogin::Refused(why)))) = outcomes
            .iter()
            .find(|(_, o)| matches!(o, Ok(VolumeLogin::Refused(_))))
        {
            return Err(why.clone());
        }
    }
    done.extend(outcomes.into_iter().filter_map(|(v, o)| match o {
        Ok(VolumeLogin::Done(s)) => Some(format!("{}: {s}", v.name)),
        Ok(VolumeLogin::Refused(why)) => Some(format!("{}: nothing done: {why}", v.name)),
        Ok(VolumeLogin::Skipped) => None,
        Err(e) => Some(format!("{}: failed: {e}", v.name)),
    }));
    Ok(done.join("; "))
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

/// A login or password change on one LUKS2 volume: the slot, then the boot order.
fn luks2_login(
    ctx: &Ctx,
    v: &Volume,
    user: &UserName,
    uid: Uid,
    password: &Secret,
) -> Result<VolumeLogin, String> {
    let s = on_volume(ctx, v, user, uid, password)?;
    Ok(VolumeLogin::Done(
        match crate::boot_order::after_login(&ctx.config, v, user) {
            Ok(order) => format!("{s}{order}"),
            Err(e) => format!("{s}; boot order not changed: {e}"),
        },
    ))
}

/// The LUKS2 volumes, which an admin's login may bootstrap (a Mac's bootstrap needs the token
/// holder's name: `keyward bootstrap VOLUME --holder`).
fn luks2_volumes(c: &keyward_core::config::Config) -> impl Iterator<Item = &Volume> {
    c.volumes.iter().filter(|v| v.kind == VolumeKind::Luks2)
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
    let msg = |e: crate::error::OpError| e.to_string();
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
