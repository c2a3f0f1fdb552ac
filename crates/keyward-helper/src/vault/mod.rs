//! The one volume seam. [`Vault`] is what an operation may ask of a volume whatever its kind —
//! read its rights, settle and use the service right, grant and revoke a user's right, run a
//! recovery-key rotation's steps, uninstall keyward from it — and [`with_vault`] is the one
//! place that looks at a volume's kind to pick the implementation: LUKS2 ([`luks`]) or
//! FileVault (`filevault`, only on a Mac or with the `simulated-mac` test feature).
//!
//! The invariants (I1–I3) are checked by the store under each vault after every change it
//! makes (keyward-core's `SlotStore`, keyward-macos's `FileVaultStore`), and read back by
//! `verify` from the vault's state; the operations never write around them.
//!
//! May not: decide policy (who is managed: `accounts`), talk to the caller (`server`), or
//! know the protocol's requests (`dispatch`).

#[cfg(any(target_os = "macos", feature = "simulated-mac"))]
pub mod filevault;
pub mod luks;

use keyward_core::config::{Config, Volume, VolumeKind};
use keyward_core::ipc::{VerifyReport, VolumeReport};
use keyward_core::store::GrantRequest;
use keyward_core::token::EscrowRef;
use keyward_core::{
    Authority, Secret, SlotId, Uid, UnlockStore, UserName, VolumeName, VolumeState,
};

use crate::accounts::Standing;
use crate::error::OpError;

pub use keyward_core::login::VolumeLogin;

/// Where a volume's service right stands (one type, keyward-core's, for every kind).
pub use keyward_core::secret_orderings::ServiceStanding;

/// What a volume can do for the operations. Each method finishes what a crash interrupted
/// before it acts, and words its errors for its kind (a keyslot, a Secure Token).
pub trait Vault {
    /// The volume's name in the configuration.
    fn name(&self) -> &VolumeName;
    /// The kind's store, under which the invariants are checked after every change.
    fn store(&mut self) -> &mut dyn UnlockStore;
    /// Its rights now.
    fn state(&mut self) -> Result<VolumeState, OpError> {
        Ok(self.store().state()?)
    }
    /// Finish interrupted service work; where the service right stands.
    fn service(&mut self) -> Result<ServiceStanding, OpError>;
    /// Why a service right that is `Missing` or `Drift` cannot be used, and what to do, in the
    /// kind's words (a keyslot, the service account's Secure Token).
    fn unusable(&self, standing: &ServiceStanding) -> String;
    /// The working service right and its secret, or an error that says what to do.
    fn working(&mut self) -> Result<(SlotId, Secret), OpError> {
        match self.service()? {
            ServiceStanding::Working(slot, secret) => Ok((slot, secret)),
            other => Err(OpError::Failed(self.unusable(&other))),
        }
    }
    /// `verify`'s word for where the service right stands (`ok`, `missing`, `drift`, `error`)
    /// and the detail to show.
    fn service_verdict(
        &self,
        settled: Result<ServiceStanding, OpError>,
    ) -> (&'static str, Option<String>) {
        match settled {
            Ok(ServiceStanding::Working(..)) => ("ok", None),
            Ok(s @ ServiceStanding::Missing) => ("missing", Some(self.unusable(&s))),
            Ok(s @ ServiceStanding::Drift(_)) => ("drift", Some(self.unusable(&s))),
            Err(e) => ("error", Some(e.to_string())),
        }
    }
    /// Is `holder` the right thing to name at bootstrap (LUKS2: nobody; FileVault: the Secure
    /// Token holder whose password this is)? Asked before anything is read.
    fn check_bootstrap_holder(&self, holder: Option<&UserName>) -> Result<(), OpError>;
    /// The refusal to bootstrap over a service right no stored secret opens.
    fn refuse_blind_replace(&self, slot: SlotId) -> OpError;
    /// Make the service right, authorised by `holder`'s `passphrase`.
    fn create_service(
        &mut self,
        holder: Option<&UserName>,
        passphrase: &Secret,
    ) -> Result<SlotId, OpError>;
    /// Replace the service secret; the old right `old` opened by `current` goes.
    fn rotate_service(&mut self, old: SlotId, current: &Secret) -> Result<SlotId, OpError>;
    /// Replace a drifted service right (old, new), authorised by a holder's `passphrase`.
    fn repair_service(&mut self, passphrase: &Secret) -> Result<(SlotId, SlotId), OpError>;
    /// The uid `user` may be granted a right as (the kind's own account rules).
    fn grantee(&mut self, user: &UserName) -> Result<Uid, OpError>;
    /// Does `secret` open the right in `slot`?
    fn opens(&mut self, slot: SlotId, secret: &Secret) -> Result<bool, OpError> {
        Ok(self.store().verify(slot, secret)?)
    }
    /// Move the right in `slot` to `secret`, authorised by the service secret; its new slot.
    fn rekey(
        &mut self,
        slot: SlotId,
        service: &Secret,
        secret: &Secret,
    ) -> Result<SlotId, OpError> {
        Ok(self
            .store()
            .rekey(slot, Authority::Service(service), secret)?)
    }
    /// Grant `user` (as `uid`) a right with `password`, authorised by the service secret.
    fn grant_user(
        &mut self,
        user: &UserName,
        uid: Uid,
        service: &Secret,
        password: &Secret,
    ) -> Result<SlotId, OpError> {
        let req = GrantRequest::user(user.clone(), uid);
        Ok(self
            .store()
            .grant(&req, Authority::Service(service), password)?)
    }
    /// Remove `user`'s right in `slot` (or say why the kind cannot).
    fn revoke_user(&mut self, _user: &UserName, slot: SlotId) -> Result<(), OpError> {
        Ok(self.store().revoke(slot)?)
    }
    /// The error for a user who holds no keyward right here.
    fn no_right(&self, user: &UserName) -> OpError;
    /// Uninstall: remove keyward's rights (only if another way in remains); the slots.
    fn release(&mut self, dry_run: bool) -> Result<Vec<u32>, OpError>;
    /// The pending recovery key and its slot, if one is still good; strays are dropped.
    fn settle_pending_recovery(&mut self) -> Result<Option<(SlotId, Secret)>, OpError>;
    /// Make a new pending recovery key (sealed root-only) and its pending right.
    fn new_pending_recovery(&mut self, service: &Secret) -> Result<(SlotId, Secret), OpError>;
    /// Commit the pending key in `slot`; the recovery slots it retired.
    fn commit_recovery(
        &mut self,
        slot: SlotId,
        escrow: Option<EscrowRef>,
    ) -> Result<Vec<SlotId>, OpError>;
    /// Give up the pending key; its slot, if there was one.
    fn abort_recovery(&mut self) -> Result<Option<SlotId>, OpError>;
    /// `keyward verify` of this volume.
    fn verify(&mut self) -> VerifyReport;
    /// A login on a volume that authenticates the password itself (a Mac's): grant or revoke
    /// the user's right as the policy says. Elsewhere (LUKS2) a login goes through the system's
    /// password check first (`login_needs_password_check`) and nothing happens here.
    fn own_login(
        &mut self,
        _user: &UserName,
        _standing: &Standing,
        _password: &Secret,
    ) -> Result<VolumeLogin, OpError> {
        Ok(VolumeLogin::Skipped)
    }
}

/// Run `f` on `v`'s vault, holding whatever that kind of volume needs held (the LUKS2 header
/// lock; the one Mac).
pub fn with_vault<T>(
    c: &Config,
    v: &Volume,
    f: impl FnOnce(&mut dyn Vault) -> Result<T, OpError>,
) -> Result<T, OpError> {
    match v.kind {
        VolumeKind::FileVault => filevault::with_vault(c, v, f),
        VolumeKind::Luks2 => luks::with_vault(c, v, f),
    }
}

/// A Linux helper built without the simulated Mac has no FileVault code at all: a FileVault
/// volume in its config is refused with a clear error (worded as keyward-macos words it),
/// never served.
#[cfg(not(any(target_os = "macos", feature = "simulated-mac")))]
mod filevault {
    use super::*;

    fn refused() -> OpError {
        OpError::Refused("not supported on macOS: a kind = \"filevault\" volume needs macOS".into())
    }

    pub fn with_vault<T>(
        _: &Config,
        _: &Volume,
        _: impl FnOnce(&mut dyn Vault) -> Result<T, OpError>,
    ) -> Result<T, OpError> {
        Err(refused())
    }

    pub fn status(_: &Config, v: &Volume) -> VolumeReport {
        VolumeReport::failed(v.name.as_str(), refused().to_string())
    }
}

/// `keyward status` of one volume (a LUKS2 report is cached while its header is unchanged,
/// so it is read without opening the volume when it can be).
pub fn status(c: &Config, v: &Volume) -> VolumeReport {
    match v.kind {
        VolumeKind::FileVault => filevault::status(c, v),
        VolumeKind::Luks2 => luks::status(c, v),
    }
}

/// Is `v` settled at start-up step by step, each step on the record (LUKS2: `start`)? A Mac's
/// store finishes what a crash interrupted by itself, whenever the service standing is read.
pub fn settles_step_by_step(v: &Volume) -> bool {
    v.kind == VolumeKind::Luks2
}

/// Must the system vouch for a login's password before keyward enrolls it on `v`? Yes where a
/// right is granted through the service secret, which would take any password (LUKS2); no on
/// a Mac, whose sysadminctl authenticates the password itself for every grant and removal.
pub fn login_needs_password_check(v: &Volume) -> bool {
    v.kind != VolumeKind::FileVault
}

/// A helper built for Linux without the simulated Mac has no FileVault code: a FileVault
/// volume in its config is refused with a clear error, never served.
#[cfg(all(test, not(any(target_os = "macos", feature = "simulated-mac"))))]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use keyward_core::ipc::ErrorCode;

    fn mac_config() -> Config {
        Config::parse("[[volume]]\nname = \"mac\"\ndevice = \"/\"\nkind = \"filevault\"\n").unwrap()
    }

    #[test]
    fn a_filevault_volume_is_refused_where_there_is_no_mac() {
        let c = mac_config();
        let v = &c.volumes[0];
        let e = with_vault(&c, v, |_| Ok(())).unwrap_err();
        assert_eq!(e.code(), ErrorCode::Refused);
        assert!(e.to_string().contains("needs macOS"), "{e}");
        let report = status(&c, v);
        assert!(
            report
                .error
                .as_deref()
                .is_some_and(|m| m.contains("needs macOS")),
            "{report:?}"
        );
    }
}
