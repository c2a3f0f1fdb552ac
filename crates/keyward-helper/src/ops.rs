//! The catalog's helper-side operations. Each takes typed, already-validated input (names were
//! parsed while decoding), resolves the volume from the root-owned config, and answers with a
//! response that never contains a secret.

use crate::luks::LuksStore;
use keyward_core::config::{Config, Volume, VolumeKind};
use keyward_core::ipc::{Reply, Request, UserReport, VerifyReport, VolumeReport};
use keyward_core::policy::AccountState;
use keyward_core::store::GrantRequest;
use keyward_core::token::Role;
use keyward_core::{
    invariants, Authority, HolderRole, Secret, SlotId, UnlockStore, UserName, VolumeName,
};

use std::sync::Arc;

use crate::accounts::{self, Standing};
use crate::commands;
use crate::error::OpError;
use crate::filevault;
use crate::jobs::{self, Job};
use crate::policy_override;
use crate::recovery;
use crate::server::Ctx;
use crate::service::{self, Settled};
use crate::service_secret;

/// Run one request.
pub fn dispatch(ctx: &Arc<Ctx>, request: Request, caller: jobs::Caller) -> Result<Reply, OpError> {
    let c = &ctx.config;
    match request {
        Request::Status { volume } => volumes(c, volume.as_ref())
            .map(|vs| Reply::Status(vs.iter().map(|v| status(c, v)).collect())),
        Request::Verify { volume } => volumes(c, volume.as_ref())
            .map(|vs| Reply::Verified(vs.iter().map(|v| verify(c, v)).collect())),
        Request::Bootstrap { volume, passphrase } => {
            bootstrap(c, &volume, None, &passphrase.into_secret())
        }
        Request::BootstrapFrom {
            volume,
            holder,
            passphrase,
        } => bootstrap(c, &volume, Some(&holder), &passphrase.into_secret()),
        Request::Grant {
            volume,
            user,
            passphrase,
        } => grant(c, &volume, &user, &passphrase.into_secret()),
        Request::Revoke { volume, user } => revoke(c, &volume, &user),
        Request::Release { volume, dry_run } => release(c, &volume, dry_run),
        Request::ServiceRotate { volume } => service::rotate(c, &volume),
        Request::ServiceRepair { volume, passphrase } => {
            service_repair(c, &volume, &passphrase.into_secret())
        }
        Request::RecoveryBegin { volume } => recovery::begin(c, &volume),
        Request::RecoveryCommit {
            volume,
            slot,
            confirm,
        } => recovery::commit(c, &volume, slot, &confirm.into_secret()),
        Request::RecoveryAbort { volume } => recovery::abort(c, &volume),
        Request::SetDevice { device_id } => recovery::set_device(c, &device_id),
        Request::RecoveryEscrowBegin { volume } => recovery::escrow_begin(c, &volume),
        Request::RecoveryEscrowCommit { volume, receipt } => {
            recovery::escrow_commit(c, &volume, &receipt)
        }
        Request::LoginCapture { user, password } => {
            jobs::submit(ctx, user, Job::Login(password.into_secret()), caller);
            Ok(Reply::Queued)
        }
        Request::PasswordChange { user, new, old } => {
            // The old password is not needed: the service secret opens the way. Drop it now.
            drop(old);
            jobs::submit(
                ctx,
                user,
                Job::Change {
                    new: new.into_secret(),
                },
                caller,
            );
            Ok(Reply::Queued)
        }
        Request::Command { signed } => commands::run(c, &signed),
        Request::Policy => Ok(Reply::Policy(policy_override::report(c))),
        Request::Hello { .. } => Err(OpError::Usage("unexpected hello".into())),
        _ => Err(OpError::Usage(
            "operation not supported by this helper".into(),
        )),
    }
}

fn volumes<'a>(c: &'a Config, name: Option<&VolumeName>) -> Result<Vec<&'a Volume>, OpError> {
    match name {
        None => Ok(c.volumes.iter().collect()),
        Some(n) => configured(c, n).map(|v| vec![v]),
    }
}

pub(crate) fn open(c: &Config, v: &Volume) -> Result<LuksStore, OpError> {
    crate::luks::open(&v.device, &c.lock_path(&v.name), c.kdf).map_err(OpError::Store)
}

fn status(c: &Config, v: &Volume) -> VolumeReport {
    let mut report = if v.kind == VolumeKind::FileVault {
        filevault::status(c, v)
    } else {
        crate::status_cache::report(v.name.as_str(), &v.device, || {
            match open(c, v).and_then(|mut s| s.state().map_err(OpError::Store)) {
                Ok(state) => VolumeReport {
                    findings: crate::luks::weak_kdfs(&c.kdf, &state),
                    ..VolumeReport::from_state(v.name.as_str(), &state)
                },
                Err(e) => failed_report(v, &e),
            }
        })
    };
    // Where each user stands now (issue 14: a disabled account shows as such): NSS and
    // /etc/shadow, not the header, so never cached.
    for h in &mut report.holders {
        if let (Some(name), Some(uid)) = (&h.user, h.uid) {
            let standing = match (UserName::parse(name), keyward_core::Uid::new(uid)) {
                (Ok(name), Ok(uid)) => {
                    accounts::standing(c, &name, Some(uid)).map_or("unknown", |s| s.label())
                }
                _ => "unknown",
            };
            h.standing = Some(standing.to_owned());
        }
    }
    report
}

/// The status report of a volume that could not be read.
pub(crate) fn failed_report(v: &Volume, e: &OpError) -> VolumeReport {
    VolumeReport::failed(v.name.as_str(), e.to_string())
}

fn verify(c: &Config, v: &Volume) -> VerifyReport {
    if v.kind == VolumeKind::FileVault {
        return filevault::verify(c, v);
    }
    let mut r = VerifyReport {
        volume: v.name.to_string(),
        service: "ok".into(),
        detail: None,
        users: user_standing(c, v),
        violations: Vec::new(),
        findings: Vec::new(),
    };
    let outcome = open(c, v).and_then(|mut store| {
        Ok(match service::settle(c, v, &mut store)? {
            Settled::Working(..) => ("ok", None),
            Settled::Missing => (
                "missing",
                Some("no service slot: run `keyward bootstrap`".to_owned()),
            ),
            Settled::Drift(slot) => (
                "drift",
                Some(format!(
                    "the stored service secret does not open service slot {slot}"
                )),
            ),
        })
    });
    match outcome {
        Ok((s, d)) => {
            r.service = s.into();
            r.detail = d;
        }
        Err(e) => {
            r.service = "error".into();
            r.detail = Some(e.to_string());
        }
    }
    // After any revocation above: is there still a way in a person can use without keyward?
    // And is every passphrase slot, whoever made it, above the KDF floor?
    if let Ok(state) = open(c, v).and_then(|mut s| s.state().map_err(OpError::Store)) {
        r.violations = invariants::check_state(&state)
            .iter()
            .map(ToString::to_string)
            .collect();
        r.findings = crate::luks::weak_kdfs(&c.kdf, &state);
    }
    r
}

/// Every user slot with its holder's standing; with `revoke_unmanaged`, the slots of users who
/// are no longer managed are revoked (never the last way in: revoke checks I1).
fn user_standing(c: &Config, v: &Volume) -> Vec<UserReport> {
    let Ok(mut store) = open(c, v) else {
        return Vec::new();
    };
    let Ok(state) = store.state() else {
        return Vec::new();
    };
    // The server's signed override, if any, decides too.
    let revoke_unmanaged = policy_override::effective(c).revoke_unmanaged;
    let mut out = Vec::new();
    for h in state.holders() {
        let HolderRole::User { name, uid } = &h.role else {
            continue;
        };
        let (status, why) = match accounts::standing(c, name, Some(*uid)) {
            Ok(s) => (s.label(), None),
            Err(e) => ("unknown", Some(e)),
        };
        let mut report = UserReport {
            user: name.to_string(),
            slot: h.slot.get(),
            status: status.into(),
            revoked: false,
            detail: why,
        };
        if status != "managed" && status != "unknown" && revoke_unmanaged {
            match store.revoke(h.slot) {
                Ok(()) => report.revoked = true,
                Err(e) => report.detail = Some(e.to_string()),
            }
        }
        out.push(report);
    }
    out
}

pub(crate) fn configured<'a>(c: &'a Config, name: &VolumeName) -> Result<&'a Volume, OpError> {
    c.volume(name)
        .ok_or_else(|| OpError::NoSuchVolume(name.clone()))
}

pub(crate) fn bootstrap(
    c: &Config,
    name: &VolumeName,
    holder: Option<&UserName>,
    passphrase: &Secret,
) -> Result<Reply, OpError> {
    let v = configured(c, name)?;
    match v.kind {
        VolumeKind::FileVault => return filevault::bootstrap(c, v, holder, passphrase),
        _ if holder.is_some() => {
            return Err(OpError::Usage(format!("{name} is a LUKS2 volume: its passphrase opens a keyslot, not an account; leave out --holder"),
            ))
        }
        _ => {}
    }
    let mut store = open(c, v)?;
    match service::settle(c, v, &mut store)? {
        Settled::Working(slot, _) => return Ok(Reply::Bootstrapped { slot: slot.get(), created: false }),
        Settled::Drift(slot) => {
            return Err(OpError::Refused(format!("service slot {slot} exists but no stored secret opens it; keyward will not replace it blindly"),
            ))
        }
        Settled::Missing => {}
    }
    let io = OpError::io("service secret");
    let secret = keyward_sys::random::service_secret().map_err(OpError::Store)?;
    // The secret is durable before the slot that needs it exists.
    service_secret::store_next(c, name, &secret).map_err(io)?;
    service::failpoint("bootstrap.next-written");
    let req = GrantRequest {
        role: Role::Service,
        pending: false,
    };
    match store.grant(&req, Authority::Holder(passphrase), &secret) {
        Ok(slot) => {
            service::failpoint("bootstrap.slot-added");
            service_secret::promote_next(c, name).map_err(io)?;
            Ok(Reply::Bootstrapped {
                slot: slot.get(),
                created: true,
            })
        }
        Err(e) => {
            service_secret::discard_next(c, name).map_err(io)?;
            Err(OpError::Store(e))
        }
    }
}

/// `keyward service repair`: a drifted service slot (no stored secret opens it) is replaced.
/// The new secret is durable before its slot exists; the new slot is granted by the holder's
/// passphrase; only then does the reconcile pass revoke the stale one.
fn service_repair(c: &Config, name: &VolumeName, passphrase: &Secret) -> Result<Reply, OpError> {
    let v = configured(c, name)?;
    if v.kind == VolumeKind::FileVault {
        return filevault::service_repair(c, v);
    }
    let mut store = open(c, v)?;
    let stale = match service::settle(c, v, &mut store)? {
        Settled::Drift(slot) => slot,
        Settled::Working(slot, _) => {
            return Err(OpError::Refused(format!("service slot {slot} works; nothing to repair (rotate it with `keyward service rotate`)"),
            ))
        }
        Settled::Missing => {
            return Err(OpError::Refused(format!("{name} has no service slot; run `keyward bootstrap {name}`"),
            ))
        }
    };
    let io = OpError::io("service secret");
    let secret = keyward_sys::random::service_secret().map_err(OpError::Store)?;
    service_secret::store_next(c, name, &secret).map_err(io)?;
    service::failpoint("service-repair.next-written");
    let req = GrantRequest {
        role: Role::Service,
        pending: true,
    };
    let new = match store.grant(&req, Authority::Holder(passphrase), &secret) {
        Ok(slot) => slot,
        Err(e) => {
            service_secret::discard_next(c, name).map_err(io)?;
            return Err(OpError::Store(e));
        }
    };
    service::failpoint("service-repair.slot-added");
    // A pending slot beside the stale one (a volume has one committed service holder); the
    // new secret opens it, so settle promotes the secret, commits the slot, revokes the stale.
    match service::settle(c, v, &mut store)? {
        Settled::Working(slot, _) if slot == new => Ok(Reply::ServiceRotated {
            old: stale.get(),
            new: new.get(),
        }),
        other => Err(OpError::Failed(format!(
            "after repair the service slot is {other:?}; run `keyward verify`"
        ))),
    }
}

fn grant(
    c: &Config,
    name: &VolumeName,
    user: &UserName,
    passphrase: &Secret,
) -> Result<Reply, OpError> {
    let v = configured(c, name)?;
    // A Mac's accounts are judged by its own backend (no /etc/shadow there).
    if v.kind == VolumeKind::FileVault {
        return filevault::grant(c, v, user, passphrase);
    }
    let uid = grantable(c, user)?;
    let mut store = open(c, v)?;
    let (_, service) = service::working(c, v, &mut store)?;
    let req = GrantRequest::user(user.clone(), uid);
    let new = store
        .grant(&req, Authority::Service(&service), passphrase)
        .map_err(OpError::Store)?;
    Ok(Reply::Granted { slot: new.get() })
}

/// One rule for who may hold a user slot, at login, at `grant` and at `verify` (issue 14): a
/// user the policy manages now (`accounts::standing`). An admin's `grant` of anyone else is
/// refused (exit 4), so `verify` never finds a holder keyward itself let in and would revoke.
fn grantable(c: &Config, user: &UserName) -> Result<keyward_core::Uid, OpError> {
    match accounts::standing(c, user, None).map_err(|e| OpError::Failed(e))? {
        Standing::Managed(uid) => Ok(uid),
        Standing::Deleted => Err(OpError::Usage(format!("no such user: {user}"))),
        Standing::Disabled(state) => {
            let what = if state == AccountState::Locked {
                "locked"
            } else {
                "expired"
            };
            Err(OpError::Refused(format!("{user}'s account is {what}: the system refuses its logins, so keyward gives it no unlock right"),
            ))
        }
        other => Err(OpError::Refused(format!(
            "{user} is not managed ({}): add them to [policy] managed_group or managed_users \
                 first (root, system accounts and uids outside uid_min..=uid_max never are); \
                 keyward gives no unlock right that verify would then revoke",
            other.label()
        ))),
    }
}

pub(crate) fn revoke(c: &Config, name: &VolumeName, user: &UserName) -> Result<Reply, OpError> {
    let v = configured(c, name)?;
    if v.kind == VolumeKind::FileVault {
        return filevault::revoke(c, v, user);
    }
    let mut store = open(c, v)?;
    let state = store.state().map_err(OpError::Store)?;
    let slot = state
        .holders()
        .into_iter()
        .find(|h| matches!(&h.role, HolderRole::User { name: n, .. } if n == user))
        .map(|h| h.slot)
        .ok_or_else(|| OpError::Failed(format!("{user} holds no keyward slot on {name}")))?;
    store.revoke(slot).map_err(OpError::Store)?;
    Ok(Reply::Revoked { slot: slot.get() })
}

/// Uninstall one volume: every keyward slot goes (users and recovery first, the service slot
/// last), but only if a slot keyward does not manage remains as a way in (I1); otherwise
/// nothing is removed.
fn release(c: &Config, name: &VolumeName, dry_run: bool) -> Result<Reply, OpError> {
    let v = configured(c, name)?;
    if v.kind == VolumeKind::FileVault {
        return filevault::release(c, v, dry_run);
    }
    let mut store = open(c, v)?;
    if !dry_run {
        store.reconcile().map_err(OpError::Store)?;
    }
    let state = store.state().map_err(OpError::Store)?;
    let mut ours: Vec<(bool, SlotId)> = state
        .holders()
        .into_iter()
        .filter(|h| h.token.is_some())
        .map(|h| (h.role == HolderRole::Service, h.slot))
        .collect();
    ours.sort();
    let others = invariants::committed_paths(&state)
        .into_iter()
        .filter(|s| !ours.iter().any(|(_, o)| o == s))
        .count();
    if others == 0 && !ours.is_empty() {
        return Err(OpError::Refused(format!("{name}: every way in is keyward's; removing them would lock the volume. Add another key (cryptsetup luksAddKey) first"),
        ));
    }
    let slots: Vec<u32> = ours.iter().map(|(_, s)| s.get()).collect();
    if dry_run {
        return Ok(Reply::Released { slots });
    }
    for (_, slot) in &ours {
        store.revoke(*slot).map_err(OpError::Store)?;
    }
    service::failpoint("release.revoked");
    let io = OpError::io("service secret");
    service_secret::discard_next(c, name).map_err(io)?;
    service_secret::forget(c, name).map_err(io)?;
    Ok(Reply::Released { slots })
}
