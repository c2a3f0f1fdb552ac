//! The catalog's operations, each written once against the volume seam ([`Vault`]): the
//! volume is resolved from the root-owned config by name, and the answer never holds a secret
//! except the one a standalone recovery begin shows the admin. Login capture is [`jobs`],
//! signed commands [`commands`], recovery rotation [`recovery`].
//!
//! May not: read the socket or build a wire `Response` (that is `server`), or look at a
//! volume's kind (that is `vault`).

pub mod commands;
pub mod jobs;
pub mod recovery;
#[cfg(test)]
mod tests;

use keyward_core::config::{Config, Volume};
use keyward_core::ipc::{Reply, VerifyReport, VolumeReport};
use keyward_core::store::GrantRequest;
use keyward_core::{HolderRole, Secret, UserName, VolumeName};

use crate::error::OpError;
use crate::vault::{self, with_vault, ServiceStanding, Vault};

/// The configured volume named `name`.
pub fn configured<'a>(c: &'a Config, name: &VolumeName) -> Result<&'a Volume, OpError> {
    c.volume(name)
        .ok_or_else(|| OpError::NoSuchVolume(name.clone()))
}

/// The configured volumes, or the one named.
pub fn volumes<'a>(c: &'a Config, name: Option<&VolumeName>) -> Result<Vec<&'a Volume>, OpError> {
    match name {
        None => Ok(c.volumes.iter().collect()),
        Some(n) => configured(c, n).map(|v| vec![v]),
    }
}

/// `keyward status` of one volume, with where each holder stands now (issue 14: a disabled
/// account shows as such): NSS and /etc/shadow, kept while the account files are unchanged
/// (`status_cache::standing`).
pub fn status(c: &Config, v: &Volume) -> VolumeReport {
    let mut report = vault::status(c, v);
    for h in &mut report.holders {
        if let (Some(name), Some(uid)) = (&h.user, h.uid) {
            let standing = match (UserName::parse(name), keyward_core::Uid::new(uid)) {
                (Ok(name), Ok(uid)) => crate::status_cache::standing(c, &name, uid),
                _ => "unknown",
            };
            h.standing = Some(standing.to_owned());
        }
    }
    report
}

/// `keyward verify` of one volume; a volume that cannot be opened reports why.
pub fn verify(c: &Config, v: &Volume) -> VerifyReport {
    with_vault(c, v, |vault| Ok(vault.verify())).unwrap_or_else(|e| VerifyReport {
        volume: v.name.to_string(),
        service: "error".into(),
        detail: Some(e.to_string()),
        users: Vec::new(),
        violations: Vec::new(),
        findings: Vec::new(),
    })
}

/// `keyward bootstrap`: the service right, authorised by a current holder's passphrase
/// (`holder` names the account on a FileVault volume). Idempotent.
pub fn bootstrap(
    c: &Config,
    name: &VolumeName,
    holder: Option<&UserName>,
    passphrase: &Secret,
) -> Result<Reply, OpError> {
    let v = configured(c, name)?;
    with_vault(c, v, |vault| bootstrap_on(vault, holder, passphrase))
}

/// Bootstrap on an open vault.
pub fn bootstrap_on(
    vault: &mut dyn Vault,
    holder: Option<&UserName>,
    passphrase: &Secret,
) -> Result<Reply, OpError> {
    vault.check_bootstrap_holder(holder)?;
    match vault.service()? {
        ServiceStanding::Working(slot, _) => {
            return Ok(Reply::Bootstrapped {
                slot: slot.get(),
                created: false,
            })
        }
        ServiceStanding::Drift(slot) => return Err(vault.refuse_blind_replace(slot)),
        ServiceStanding::Missing => {}
    }
    let slot = vault.create_service(holder, passphrase)?;
    Ok(Reply::Bootstrapped {
        slot: slot.get(),
        created: true,
    })
}

/// `keyward service repair`: replace a service right no stored secret opens.
pub fn service_repair(
    c: &Config,
    name: &VolumeName,
    passphrase: &Secret,
) -> Result<Reply, OpError> {
    let v = configured(c, name)?;
    let (old, new) = with_vault(c, v, |vault| vault.repair_service(passphrase))?;
    Ok(Reply::ServiceRotated {
        old: old.get(),
        new: new.get(),
    })
}

/// `keyward service rotate`: a new service secret; the old right goes.
pub fn service_rotate(c: &Config, name: &VolumeName) -> Result<Reply, OpError> {
    let v = configured(c, name)?;
    with_vault(c, v, service_rotate_on)
}

/// Service rotation on an open vault.
pub fn service_rotate_on(vault: &mut dyn Vault) -> Result<Reply, OpError> {
    let (old, current) = vault.working()?;
    let new = vault.rotate_service(old, &current)?;
    Ok(Reply::ServiceRotated {
        old: old.get(),
        new: new.get(),
    })
}

/// `keyward grant`: a right for `user` with `passphrase`, authorised by the service secret.
pub fn grant(
    c: &Config,
    name: &VolumeName,
    user: &UserName,
    passphrase: &Secret,
) -> Result<Reply, OpError> {
    let v = configured(c, name)?;
    with_vault(c, v, |vault| grant_on(vault, user, passphrase))
}

/// Grant on an open vault.
pub fn grant_on(
    vault: &mut dyn Vault,
    user: &UserName,
    passphrase: &Secret,
) -> Result<Reply, OpError> {
    let uid = vault.grantee(user)?;
    let (_, service) = vault.working()?;
    let req = GrantRequest::user(user.clone(), uid);
    let slot = vault.grant(&req, &service, passphrase)?;
    Ok(Reply::Granted { slot: slot.get() })
}

/// `keyward revoke`: the user's keyward right goes.
pub fn revoke(c: &Config, name: &VolumeName, user: &UserName) -> Result<Reply, OpError> {
    let v = configured(c, name)?;
    with_vault(c, v, |vault| revoke_on(vault, user))
}

/// Revoke on an open vault.
pub fn revoke_on(vault: &mut dyn Vault, user: &UserName) -> Result<Reply, OpError> {
    let state = vault.state()?;
    let slot = state
        .holders()
        .into_iter()
        .find(|h| matches!(&h.role, HolderRole::User { name: n, .. } if n == user))
        .map(|h| h.slot)
        .ok_or_else(|| vault.no_right(user))?;
    vault.revoke_user(user, slot)?;
    Ok(Reply::Revoked { slot: slot.get() })
}

/// `keyward uninstall` of one volume: keyward's rights go, only while another way in remains.
pub fn release(c: &Config, name: &VolumeName, dry_run: bool) -> Result<Reply, OpError> {
    let v = configured(c, name)?;
    let slots = with_vault(c, v, |vault| vault.release(dry_run))?;
    Ok(Reply::Released { slots })
}
