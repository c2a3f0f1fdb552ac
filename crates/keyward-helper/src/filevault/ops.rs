//! The catalog's volume operations on a Mac: what a Secure Token and the hidden service account
//! make of status, verify, bootstrap, grant, revoke, uninstall and the service rotation.

use keyward_core::config::{Config, Volume};
use keyward_core::ipc::{Reply, VerifyReport, VolumeReport};
use keyward_core::store::GrantRequest;
use keyward_core::{Authority, HolderRole, Secret, SlotId, Uid, UnlockStore, UserName};
use keyward_macos::keychain::{Keychain, KeychainItem};
use keyward_macos::names::ShortName;
use keyward_macos::service::generate_service_password;

use super::{mac_failure, standing, with_store, working, Standing, Store};
use crate::error::OpError;

fn short_name(user: &UserName) -> Result<ShortName, OpError> {
    ShortName::parse(user.as_str()).map_err(mac_failure)
}

/// `keyward status`: the same report as for a LUKS2 volume.
pub fn status(c: &Config, v: &Volume) -> VolumeReport {
    with_store(c, v, |s| Ok(s.report(v.name.as_str())))
        .unwrap_or_else(|e| crate::ops::failed_report(v, &e))
}

/// Start-up: finish what a crash interrupted, and say how the service account stands.
pub fn settle(c: &Config, v: &Volume) -> Result<(), OpError> {
    with_store(c, v, |s| match standing(s)? {
        Standing::Drift(slot) => Err(OpError::Failed(format!(
            "the keychain's service password does not unlock slot {slot}"
        ))),
        Standing::Working(_) | Standing::Missing => Ok(()),
    })
}

/// `keyward verify`: does the keychain's service password still unlock the volume?
pub fn verify(c: &Config, v: &Volume) -> VerifyReport {
    let (service, detail) = match with_store(c, v, standing) {
        Ok(Standing::Working(_)) => ("ok", None),
        Ok(Standing::Missing) => (
            "missing",
            Some(format!(
                "the service account holds no Secure Token: run `keyward bootstrap {} --holder ADMIN`",
                v.name
            )),
        ),
        Ok(Standing::Drift(slot)) => (
            "drift",
            Some(format!(
                "the keychain's service password does not unlock the service account's token (slot {slot})"
            )),
        ),
        Err(e) => ("error", Some(e.to_string())),
    };
    let violations =
        with_store(c, v, |s| Ok(s.report(v.name.as_str()).violations)).unwrap_or_default();
    VerifyReport {
        volume: v.name.to_string(),
        service: service.into(),
        detail,
        // Users' standing needs a revocation macOS allows only with the user's own password.
        users: Vec::new(),
        violations,
        // The KDF floor is LUKS2's: macOS derives FileVault's keys itself.
        findings: Vec::new(),
    }
}

/// `keyward bootstrap VOLUME --holder ADMIN`: create the hidden service account (if needed)
/// and give it a Secure Token authorised by a current holder's name and password.
pub fn bootstrap(
    c: &Config,
    v: &Volume,
    holder: Option<&UserName>,
    password: &Secret,
) -> Result<Reply, OpError> {
    let holder = holder.ok_or_else(|| {
        OpError::Usage(format!(
                "{} is a FileVault volume: name the Secure Token holder whose password this is (keyward bootstrap {} --holder NAME)",
                v.name, v.name
            ),
        )
    })?;
    let holder = short_name(holder)?;
    with_store(c, v, |s| {
        match standing(s)? {
            Standing::Working(slot) => {
                return Ok(Reply::Bootstrapped {
                    slot: slot.get(),
                    created: false,
                })
            }
            Standing::Drift(slot) => {
                return Err(OpError::Refused(format!("the service account holds a Secure Token (slot {slot}) that the keychain's password does not unlock; keyward will not replace it blindly (see `keyward service repair`)"),
                ))
            }
            Standing::Missing => {}
        }
        // A password made by an interrupted bootstrap is kept: the account may already have it.
        let stored = s
            .keychain_mut()
            .read(KeychainItem::ServiceCurrent)
            .map_err(mac_failure)?;
        let service_password = match stored {
            Some(p) => p,
            None => generate_service_password().map_err(mac_failure)?,
        };
        s.create_service_account(&service_password)
            .map_err(mac_failure)?;
        let slot = s
            .grant_service_token(&holder, password)
            .map_err(mac_failure)?;
        Ok(Reply::Bootstrapped {
            slot: slot.get(),
            created: true,
        })
    })
}

/// `keyward grant VOLUME USER`: a Secure Token for USER, authorised by the service account.
pub fn grant(c: &Config, v: &Volume, user: &UserName, password: &Secret) -> Result<Reply, OpError> {
    with_store(c, v, |s| {
        let slot = grant_in(s, v, user, password)?;
        Ok(Reply::Granted { slot: slot.get() })
    })
}

/// The grant itself, on a store the caller holds (an admin's `keyward grant`, a login capture):
/// `-secureTokenOn` with USER's `password`, authorised by the service account, proven by
/// `-secureTokenStatus`. sysadminctl refuses a wrong password, so nothing changes then.
pub(super) fn grant_in(
    s: &mut Store<'_>,
    v: &Volume,
    user: &UserName,
    password: &Secret,
) -> Result<SlotId, OpError> {
    let name = short_name(user)?;
    let (_, service) = working(s, v)?;
    let uid = s
        .read_account(&name)
        .map_err(mac_failure)?
        .and_then(|a| a.unique_id)
        .and_then(|u| u32::try_from(u.get()).ok())
        .and_then(|u| Uid::new(u).ok())
        .ok_or_else(|| OpError::Usage(format!("no such user: {user}")))?;
    let req = GrantRequest::user(user.clone(), uid);
    s.grant(&req, Authority::Service(&service), password)
        .map_err(OpError::Store)
}

/// `keyward revoke`: refused. macOS removes a Secure Token only with its holder's own password
/// (`sysadminctl -secureTokenOff USER -password …`), which keyward does not keep.
pub fn revoke(c: &Config, v: &Volume, user: &UserName) -> Result<Reply, OpError> {
    with_store(c, v, |s| {
        let state = s.state().map_err(OpError::Store)?;
        let holds = state
            .holders()
            .into_iter()
            .any(|h| matches!(&h.role, HolderRole::User { name, .. } if name == user));
        if !holds {
            return Err(OpError::Failed(format!(
                "{user} holds no keyward right on {}",
                v.name
            )));
        }
        Err(OpError::Refused(format!("{user}'s Secure Token on {} cannot be removed by keyward: macOS removes a token only with its holder's own password (sysadminctl -secureTokenOff), which keyward does not keep; nothing changed", v.name),
        ))
    })
}

/// `keyward uninstall`: delete the service account, only while another token holder or an
/// escrowed recovery key remains. Users keep their own tokens (macOS would need each user's
/// password to remove them).
pub fn release(c: &Config, v: &Volume, dry_run: bool) -> Result<Reply, OpError> {
    with_store(c, v, |s| {
        // delete_service_account reconciles and checks again before it deletes anything.
        let (slot, allowed) = s.service_account_removable().map_err(mac_failure)?;
        let slots: Vec<u32> = slot.iter().map(|s| s.get()).collect();
        if !allowed && slot.is_some() {
            return Err(mac_failure(keyward_macos::MacError::WouldStrand));
        }
        if !dry_run && slot.is_some() {
            s.delete_service_account().map_err(mac_failure)?;
        }
        Ok(Reply::Released { slots })
    })
}

/// `keyward service rotate`: the service password changes with the old one; the new one is in
/// the keychain (as `next`) before the account gets it.
pub fn service_rotate(c: &Config, v: &Volume) -> Result<Reply, OpError> {
    with_store(c, v, |s| {
        let (old, _) = working(s, v)?;
        let new = generate_service_password().map_err(mac_failure)?;
        let slot = s.rotate_service_password(&new).map_err(mac_failure)?;
        Ok(Reply::ServiceRotated {
            old: old.get(),
            new: slot.get(),
        })
    })
}

/// `keyward service repair`: refused on a Mac, with the way out. A token holder's password is
/// never reset (FileVault would keep the old one), so a service account whose password nobody
/// knows can only be deleted by an admin and bootstrapped again.
pub fn service_repair(c: &Config, v: &Volume) -> Result<Reply, OpError> {
    with_store(c, v, |s| {
        match standing(s)? {
        Standing::Working(slot) => Err(OpError::Refused(format!("the service account's token (slot {slot}) works; nothing to repair (rotate it with `keyward service rotate`)"),
        )),
        Standing::Missing => Err(OpError::Refused(format!("{} has no service token; run `keyward bootstrap {} --holder ADMIN`", v.name, v.name),
        )),
        Standing::Drift(_) => Err(OpError::Refused(format!(
                "on a Mac a drifted service account cannot be repaired in place (resetting a token holder's password breaks FileVault): delete it as an admin (sysadminctl -deleteUser {} -adminUser ADMIN -adminPassword -), then run `keyward bootstrap {} --holder ADMIN`",
                s.config().service_user, v.name
            ),
        )),
    }
    })
}
