//! What a Secure Token and the hidden service account make of the [`Vault`] operations:
//! verify, bootstrap, grant, revoke (refused: macOS needs the holder's own password), uninstall
//! and the service rotation (repair refused, with the way out).

use keyward_core::ipc::VerifyReport;
use keyward_core::token::EscrowRef;
use keyward_core::{Secret, SlotId, Uid, UnlockStore, UserName, VolumeName};
use keyward_macos::names::ShortName;
use keyward_macos::service::generate_service_password;

use super::{out_of_step, MacVault};
use crate::accounts::Standing;
use crate::error::OpError;
use crate::vault::{ServiceStanding, Vault, VolumeLogin};

impl Vault for MacVault<'_, '_, '_> {
    fn name(&self) -> &VolumeName {
        &self.v.name
    }

    fn store(&mut self) -> &mut dyn UnlockStore {
        &mut *self.s
    }

    fn service(&mut self) -> Result<ServiceStanding, OpError> {
        let standing = self.s.service_standing()?;
        self.drop_unpending()?;
        Ok(standing)
    }

    fn unusable(&self, standing: &ServiceStanding) -> String {
        let (name, account) = (&self.v.name, &self.s.config().service_user);
        match standing {
            ServiceStanding::Drift(slot) => format!(
                "the keychain's service password does not unlock {account}'s Secure Token (slot {slot})"
            ),
            _ => format!(
                "{account} holds no Secure Token on {name}: run `keyward bootstrap {name} --holder ADMIN`"
            ),
        }
    }

    fn check_bootstrap_holder(&self, holder: Option<&UserName>) -> Result<(), OpError> {
        let holder = holder.ok_or_else(|| {
            OpError::Usage(format!(
                "{} is a FileVault volume: name the Secure Token holder whose password this is (keyward bootstrap {} --holder NAME)",
                self.v.name, self.v.name
            ))
        })?;
        ShortName::parse(holder.as_str())?;
        Ok(())
    }

    fn refuse_blind_replace(&self, slot: SlotId) -> OpError {
        OpError::Refused(format!("the service account holds a Secure Token (slot {slot}) that the keychain's password does not unlock; keyward will not replace it blindly (see `keyward service repair`)"))
    }

    /// Create the hidden service account (if needed) and give it a Secure Token authorised
    /// by a current holder's name and password (keyward-macos's `bootstrap_service`).
    fn create_service(
        &mut self,
        holder: Option<&UserName>,
        password: &Secret,
    ) -> Result<SlotId, OpError> {
        let holder = holder.ok_or_else(|| OpError::Usage("no Secure Token holder named".into()))?;
        let holder = ShortName::parse(holder.as_str())?;
        Ok(self.s.bootstrap_service(&holder, password)?)
    }

    /// The service password changes with the old one; the new one is in the keychain (as
    /// `next`) before the account gets it.
    fn rotate_service(&mut self, _: SlotId, _: &Secret) -> Result<SlotId, OpError> {
        let new = generate_service_password()?;
        Ok(self.s.rotate_service_password(&new)?)
    }

    /// Refused on a Mac, with the way out. A token holder's password is never reset (FileVault
    /// would keep the old one), so a service account whose password nobody knows can only be
    /// deleted by an admin and bootstrapped again.
    fn repair_service(&mut self, _: &Secret) -> Result<(SlotId, SlotId), OpError> {
        let name = &self.v.name;
        Err(match self.s.service_standing()? {
            ServiceStanding::Working(slot, _) => OpError::Refused(format!("the service account's token (slot {slot}) works; nothing to repair (rotate it with `keyward service rotate`)")),
            ServiceStanding::Missing => OpError::Refused(format!("{name} has no service token; run `keyward bootstrap {name} --holder ADMIN`")),
            ServiceStanding::Drift(_) => OpError::Refused(format!(
                "on a Mac a drifted service account cannot be repaired in place (resetting a token holder's password breaks FileVault): delete it as an admin (sysadminctl -deleteUser {} -adminUser ADMIN -adminPassword -), then run `keyward bootstrap {name} --holder ADMIN`",
                self.s.config().service_user
            )),
        })
    }

    /// A Mac's accounts are judged by its own directory (no /etc/shadow there).
    fn grantee(&mut self, user: &UserName) -> Result<Uid, OpError> {
        let name = ShortName::parse(user.as_str())?;
        self.s
            .local_uid(&name)?
            .ok_or_else(|| OpError::Usage(format!("no such user: {user}")))
    }

    fn opens(&mut self, slot: SlotId, secret: &Secret) -> Result<bool, OpError> {
        Ok(self.s.verify_slot(slot, secret)?)
    }

    /// Refused: macOS removes a Secure Token only with its holder's own password
    /// (`sysadminctl -secureTokenOff USER -password …`), which keyward does not keep.
    fn revoke_user(&mut self, user: &UserName, _: SlotId) -> Result<(), OpError> {
        Err(OpError::Refused(format!("{user}'s Secure Token on {} cannot be removed by keyward: macOS removes a token only with its holder's own password (sysadminctl -secureTokenOff), which keyward does not keep; nothing changed", self.v.name)))
    }

    fn own_login(
        &mut self,
        user: &UserName,
        standing: &Standing,
        password: &Secret,
    ) -> Result<VolumeLogin, OpError> {
        self.capture_login(user, standing, password)
    }

    fn no_right(&self, user: &UserName) -> OpError {
        OpError::Failed(format!("{user} holds no keyward right on {}", self.v.name))
    }

    /// Delete the service account, only while another way in remains
    /// (keyward-macos's `release_service_account`).
    fn release(&mut self, dry_run: bool) -> Result<Vec<u32>, OpError> {
        let slot = self.s.release_service_account(dry_run)?;
        Ok(slot.into_iter().map(SlotId::get).collect())
    }

    fn settle_pending_recovery(&mut self) -> Result<Option<(SlotId, Secret)>, OpError> {
        self.settle_pending()
    }

    fn new_pending_recovery(&mut self, _: &Secret) -> Result<(SlotId, Secret), OpError> {
        self.new_pending()
    }

    /// FileVault already retired the previous key when it made this one: nothing else goes.
    fn commit_recovery(
        &mut self,
        slot: SlotId,
        escrow: Option<EscrowRef>,
    ) -> Result<Vec<SlotId>, OpError> {
        self.s.commit_recovery(slot, escrow)?;
        Ok(Vec::new())
    }

    fn abort_recovery(&mut self) -> Result<Option<SlotId>, OpError> {
        Ok(self.s.abandon_pending()?)
    }

    /// Does the keychain's service password still unlock the volume?
    /// No users: their standing needs a revocation macOS allows only with the user's own
    /// password.
    fn verify(&mut self) -> VerifyReport {
        let name = self.v.name.as_str();
        let settled = self.s.service_standing().map_err(OpError::from);
        let (service, detail) = self.service_verdict(settled);
        VerifyReport {
            violations: self.s.report(name).violations,
            // The KDF floor is LUKS2's (macOS derives FileVault's keys itself); what a Mac can
            // be found with is a user whose last login showed FileVault on an old password.
            findings: self.s.old_password_findings(&out_of_step(self.c), name),
            ..VerifyReport::service(name, service, detail)
        }
    }
}
