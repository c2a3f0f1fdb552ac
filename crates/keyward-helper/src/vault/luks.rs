//! The LUKS2 vault: a keyward keyslot per right, over any [`UnlockStore`] (keyward-luks's
//! libcryptsetup store in the helper, keyward-core's in-memory one in unit tests), with the
//! service secret and a pending recovery key in root-only state ([`host`], `pending_key`). The
//! service slot's life and the recovery slots' are keyward-core's protocols
//! (`keyward_core::secret_orderings`), run over the store and the helper's state ([`host`]).
//! keyward-luks is libcryptsetup on Linux; elsewhere its store is uninhabited and opening one
//! is a clear error. The one thing about LUKS2 that is the helper's own is which KDF floor
//! this build judges its slots by ([`KDF_BUILD`]).

pub mod boot_order;
pub mod host;

use keyward_core::config::{Config, Volume};
use keyward_core::ipc::{FindingReport, UserReport, VerifyReport, VolumeReport};
use keyward_core::kdf::{KdfBuild, KdfPolicy};
use keyward_core::policy::NoGrant;
use keyward_core::secret_orderings::{recovery, service, ProtocolError};
use keyward_core::token::EscrowRef;
use keyward_core::{
    invariants, HolderRole, Secret, SlotId, Uid, UnlockStore, UserName, VolumeName, VolumeState,
};
use keyward_luks::header_cache::HeaderCache;
pub use keyward_luks::{repair_interrupted_write, LuksStore};

use self::host::LuksHost;
use super::{ServiceStanding, Vault};
use crate::accounts;
use crate::error::OpError;
use crate::policy_override;

/// Whether this build honours `[kdf] danger_fast_kdf`: only with the `test-kdf` feature (which
/// `failpoints` turns on). A shipped helper refuses the setting at start, and never lowers the
/// KDF floor whatever a config says.
pub const KDF_BUILD: KdfBuild = if cfg!(feature = "test-kdf") {
    KdfBuild::Test
} else {
    KdfBuild::Shipped
};

/// The `weak-kdf` and boot-budget findings of a LUKS2 volume in this build.
fn weak_kdfs(kdf: &KdfPolicy, state: &VolumeState) -> Vec<FindingReport> {
    keyward_luks::kdf_findings(kdf, KDF_BUILD, state)
}

/// Open `v`'s LUKS2 store, holding its per-volume lock.
pub fn open(c: &Config, v: &Volume) -> Result<LuksStore, OpError> {
    Ok(keyward_luks::open(&v.device, &c.lock_path(&v.name), c.kdf)?)
}

/// Run `f` on `v`'s LUKS2 vault, holding the volume's lock. (No LUKS2 store exists off Linux:
/// `open` always fails there, so what follows it is unreachable.)
#[cfg_attr(not(target_os = "linux"), allow(unreachable_code))]
pub fn with_vault<T>(
    c: &Config,
    v: &Volume,
    f: impl FnOnce(&mut dyn Vault) -> Result<T, OpError>,
) -> Result<T, OpError> {
    let store = open(c, v)?;
    f(&mut LuksVault::new(c, v, store))
}

/// A LUKS2 volume and its store.
pub struct LuksVault<'c, S> {
    pub(super) c: &'c Config,
    pub(super) v: &'c Volume,
    pub(crate) store: S,
}

impl<'c, S: UnlockStore> LuksVault<'c, S> {
    /// The vault of `v`, over `store` (opened and locked by the caller).
    pub fn new(c: &'c Config, v: &'c Volume, store: S) -> Self {
        LuksVault { c, v, store }
    }

    /// Run one of keyward-core's secret orderings on this volume's store and state.
    fn run<T>(
        &mut self,
        protocol: impl FnOnce(&mut S, &mut LuksHost<'c>) -> Result<T, ProtocolError<OpError>>,
    ) -> Result<T, OpError> {
        let mut host = LuksHost::new(self.c, &self.v.name);
        Ok(protocol(&mut self.store, &mut host)?)
    }

    /// Start-up: finish a recovery commit a crash cut short; what was done, for the record.
    pub fn settle_recovery_at_start(&mut self) -> Result<Vec<String>, OpError> {
        self.run(recovery::settle_at_start)
    }

    /// Every user slot with its holder's standing; with `revoke_unmanaged`, the slots of users
    /// who are no longer managed are revoked (never the last way in: revoke checks I1).
    fn user_standing(&mut self) -> Vec<UserReport> {
        let Ok(state) = self.store.state() else {
            return Vec::new();
        };
        // The server's signed override, if any, decides too.
        let revoke_unmanaged = policy_override::effective(self.c).revoke_unmanaged;
        let mut out = Vec::new();
        for h in state.holders() {
            let HolderRole::User { name, uid } = &h.role else {
                continue;
            };
            let (status, why) = match accounts::standing(self.c, name, Some(*uid)) {
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
                match self.store.revoke(h.slot) {
                    Ok(()) => report.revoked = true,
                    Err(e) => report.detail = Some(e.to_string()),
                }
            }
            out.push(report);
        }
        out
    }
}

impl<S: UnlockStore> Vault for LuksVault<'_, S> {
    fn name(&self) -> &VolumeName {
        &self.v.name
    }

    fn store(&mut self) -> &mut dyn UnlockStore {
        &mut self.store
    }

    fn service(&mut self) -> Result<ServiceStanding, OpError> {
        self.run(service::settle)
    }

    fn unusable(&self, standing: &ServiceStanding) -> String {
        let name = &self.v.name;
        match standing {
            ServiceStanding::Drift(slot) => {
                format!("the stored service secret does not open service slot {slot}")
            }
            _ => format!("volume {name} has no service slot: run `keyward bootstrap {name}`"),
        }
    }

    fn check_bootstrap_holder(&self, holder: Option<&UserName>) -> Result<(), OpError> {
        match holder {
            Some(_) => Err(OpError::Usage(format!(
                "{} is a LUKS2 volume: its passphrase opens a keyslot, not an account; leave out --holder",
                self.v.name
            ))),
            None => Ok(()),
        }
    }

    fn refuse_blind_replace(&self, slot: SlotId) -> OpError {
        OpError::Refused(format!(
            "service slot {slot} exists but no stored secret opens it; keyward will not replace it blindly"
        ))
    }

    fn create_service(
        &mut self,
        _: Option<&UserName>,
        passphrase: &Secret,
    ) -> Result<SlotId, OpError> {
        self.run(|s, h| service::create(s, h, passphrase))
    }

    fn rotate_service(&mut self, old: SlotId, current: &Secret) -> Result<SlotId, OpError> {
        self.run(|s, h| service::rotate(s, h, old, current))
    }

    fn repair_service(&mut self, passphrase: &Secret) -> Result<(SlotId, SlotId), OpError> {
        let v = self.v;
        self.run(|s, h| service::repair(s, h, &v.name, passphrase))
    }

    /// One rule for who may hold a user slot, at login, at `grant` and at `verify` (issue 14):
    /// a user the policy manages now. An admin's `grant` of anyone else is refused (exit 4),
    /// so `verify` never finds a holder keyward itself let in and would revoke.
    fn grantee(&mut self, user: &UserName) -> Result<Uid, OpError> {
        grantable(self.c, user)
    }

    fn no_right(&self, user: &UserName) -> OpError {
        OpError::Failed(format!("{user} holds no keyward slot on {}", self.v.name))
    }

    /// Every keyward slot goes (users and recovery first, the service slot last), but only if
    /// a slot keyward does not manage remains as a way in (I1); otherwise nothing is removed.
    fn release(&mut self, dry_run: bool) -> Result<Vec<u32>, OpError> {
        let v = self.v;
        let ours = self.run(|s, h| service::release(s, h, &v.name, dry_run))?;
        Ok(ours.iter().map(|s| s.get()).collect())
    }

    fn settle_pending_recovery(&mut self) -> Result<Option<(SlotId, Secret)>, OpError> {
        self.run(recovery::settle_pending)
    }

    fn new_pending_recovery(&mut self, service: &Secret) -> Result<(SlotId, Secret), OpError> {
        self.run(|s, h| recovery::new_pending(s, h, service))
    }

    fn commit_recovery(
        &mut self,
        slot: SlotId,
        escrow: Option<EscrowRef>,
    ) -> Result<Vec<SlotId>, OpError> {
        self.run(|s, h| recovery::commit(s, h, slot, escrow))
    }

    fn abort_recovery(&mut self) -> Result<Option<SlotId>, OpError> {
        self.run(recovery::abort)
    }

    fn verify(&mut self) -> VerifyReport {
        let users = self.user_standing();
        let settled = self.service();
        let (service, detail) = self.service_verdict(settled);
        let mut r = VerifyReport {
            users,
            ..VerifyReport::service(self.v.name.as_str(), service, detail)
        };
        // After any revocation above: is there still a way in a person can use without
        // keyward? And is every passphrase slot, whoever made it, above the KDF floor?
        if let Ok(state) = self.store.state() {
            r.violations = invariants::check_state(&state)
                .iter()
                .map(ToString::to_string)
                .collect();
            r.findings = weak_kdfs(&self.c.kdf, &state);
        }
        r
    }
}

/// Who may hold a user slot: a user the policy manages now (`Standing::grantee`).
pub fn grantable(c: &Config, user: &UserName) -> Result<Uid, OpError> {
    let standing = accounts::standing(c, user, None).map_err(OpError::Failed)?;
    standing.grantee(user).map_err(|e| match e {
        NoGrant::NoSuchUser(_) => OpError::Usage(e.to_string()),
        NoGrant::Refused(why) => OpError::Refused(why),
    })
}

/// `keyward status` of a LUKS2 volume, kept while its header is byte for byte the same
/// ([`keyward_luks::header_cache`]); a report of an error is computed again every time.
pub fn status(c: &Config, v: &Volume) -> VolumeReport {
    static REPORTS: HeaderCache<VolumeReport> = HeaderCache::new();
    let compute = || match open(c, v).and_then(|mut s| Ok(s.state()?)) {
        Ok(state) => VolumeReport {
            findings: weak_kdfs(&c.kdf, &state),
            ..VolumeReport::from_state(v.name.as_str(), &state)
        },
        Err(e) => VolumeReport::failed(v.name.as_str(), e.to_string()),
    };
    REPORTS.get(v.name.as_str(), &v.device, compute, |r| r.error.is_none())
}
