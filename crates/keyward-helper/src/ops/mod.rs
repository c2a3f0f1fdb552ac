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

use keyward_core::config::{Config, Volume};
use keyward_core::ipc::{Reply, VerifyReport, VolumeReport};
use keyward_core::{Secret, UserName, VolumeName};

use crate::error::OpError;
use crate::vault::{self, with_vault, ServiceStanding, Vault};

/// The configured volume named `name`.
pub fn configured<'a>(c: &'a Config, name: &VolumeName) -> Result<&'a Volume, OpError> {
    c.volume(name)
        .ok_or_else(|| OpError::NoSuchVolume(name.clone()))
}

/// Run `f` on the vault of the configured volume `name`.
pub fn on_volume<T>(
    c: &Config,
    name: &VolumeName,
    f: impl FnOnce(&mut dyn Vault) -> Result<T, OpError>,
) -> Result<T, OpError> {
    with_vault(c, configured(c, name)?, f)
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
    with_vault(c, v, |vault| Ok(vault.verify()))
        .unwrap_or_else(|e| VerifyReport::service(v.name.as_str(), "error", Some(e.to_string())))
}

/// `keyward bootstrap`: the service right, authorised by a current holder's passphrase
/// (`holder` names the account on a FileVault volume). Idempotent.
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
pub fn service_repair_on(vault: &mut dyn Vault, passphrase: &Secret) -> Result<Reply, OpError> {
    let (old, new) = vault.repair_service(passphrase)?;
    Ok(Reply::ServiceRotated {
        old: old.get(),
        new: new.get(),
    })
}

/// `keyward service rotate`: a new service secret; the old right goes.
pub fn service_rotate_on(vault: &mut dyn Vault) -> Result<Reply, OpError> {
    let (old, current) = vault.working()?;
    let new = vault.rotate_service(old, &current)?;
    Ok(Reply::ServiceRotated {
        old: old.get(),
        new: new.get(),
    })
}

/// `keyward grant`: a right for `user` with `passphrase`, authorised by the service secret.
pub fn grant_on(
    vault: &mut dyn Vault,
    user: &UserName,
    passphrase: &Secret,
) -> Result<Reply, OpError> {
    let uid = vault.grantee(user)?;
    let (_, service) = vault.working()?;
    let slot = vault.grant_user(user, uid, &service, passphrase)?;
    Ok(Reply::Granted { slot: slot.get() })
}

/// `keyward revoke`: the user's keyward right goes.
pub fn revoke_on(vault: &mut dyn Vault, user: &UserName) -> Result<Reply, OpError> {
    let Some((slot, _)) = vault.state()?.user_slot(user) else {
        return Err(vault.no_right(user));
    };
    vault.revoke_user(user, slot)?;
    Ok(Reply::Revoked { slot: slot.get() })
}

/// `keyward uninstall` of one volume: keyward's rights go, only while another way in remains.
pub fn release_on(vault: &mut dyn Vault, dry_run: bool) -> Result<Reply, OpError> {
    let slots = vault.release(dry_run)?;
    Ok(Reply::Released { slots })
}

#[cfg(test)]
mod tests;
