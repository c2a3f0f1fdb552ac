//! The service slot and its secret: finding the pair that works, finishing or undoing what an
//! interrupted bootstrap or rotation left behind, and rotating the secret.
//!
//! Rotation (DESIGN.md section 5): generate → write `<volume>.next` (fsync) → add a *pending*
//! service slot, opened by the current secret → verify (part of the grant) → rename `.next`
//! over the current secret (fsync dir) → commit the new slot → revoke the old one. After a crash
//! at any step, [`settle`] tests which stored secret opens which service slot and goes forward
//! where a newer secret's slot exists, back where it does not; the volume always keeps a
//! service slot whose secret is stored.

use crate::luks::LuksStore;
use keyward_core::config::{Config, Volume};
use keyward_core::ipc::Reply;
use keyward_core::store::GrantRequest;
use keyward_core::token::{Role, TokenState};
use keyward_core::{Authority, Secret, SlotId, UnlockStore, VolumeName};

use crate::error::OpError;
use crate::ops::{configured, open};
use crate::service_secret;

/// Where a volume's service secret stands.
#[derive(Debug)]
pub enum Settled {
    /// This slot works with this stored secret.
    Working(SlotId, Secret),
    /// No service slot (bootstrap needed).
    Missing,
    /// Service slots exist, but no stored secret opens any of them.
    Drift(SlotId),
}

fn io(e: std::io::Error) -> OpError {
    OpError::Io {
        what: "service secret",
        source: e,
    }
}

/// A test build kills the process here (SIGKILL, as a power cut would) when
/// `KEYWARD_FAILPOINT` names this step.
pub(crate) fn failpoint(name: &str) {
    #[cfg(feature = "failpoints")]
    if std::env::var_os("KEYWARD_FAILPOINT").is_some_and(|v| v == name) {
        keyward_sys::hardening::die_like_power_loss();
    }
    let _ = name;
}

/// Find the working service slot and secret, tidying up after an interrupted bootstrap or
/// rotation: a pending slot the newest stored secret opens is committed, and service slots no
/// stored secret opens are revoked (never the last way in: revoke checks I1).
pub fn settle(c: &Config, v: &Volume, store: &mut LuksStore) -> Result<Settled, OpError> {
    // First whatever an interrupted header operation left (grant, rekey, revoke).
    store.reconcile().map_err(OpError::Store)?;
    crate::recovery::expire_pending(c, v, store)?;
    let state = store.state().map_err(OpError::Store)?;
    let slots: Vec<(SlotId, TokenState)> = state
        .keyward_tokens()
        .filter(|(_, t)| t.role == Role::Service)
        .filter_map(|(_, t)| t.keyslot.map(|s| (s, t.state)))
        .collect();
    if slots.is_empty() {
        service_secret::discard_next(c, &v.name).map_err(io)?;
        return Ok(Settled::Missing);
    }
    let mut opens = |secret: &Secret| -> Result<Option<(SlotId, TokenState)>, OpError> {
        for (s, st) in &slots {
            if store.verify(*s, secret).map_err(OpError::Store)? {
                return Ok(Some((*s, *st)));
            }
        }
        Ok(None)
    };
    let current = service_secret::load(c, &v.name).map_err(io)?;
    let next = service_secret::load_next(c, &v.name).map_err(io)?;
    let by_current = match &current {
        Some(s) => opens(s)?,
        None => None,
    };
    let by_next = match &next {
        Some(s) => opens(s)?,
        None => None,
    };
    let (slot, state, secret) = match (by_next, next, by_current, current) {
        // A newer secret whose slot exists: finish going forward.
        (Some((s, st)), Some(n), _, _) => {
            service_secret::promote_next(c, &v.name).map_err(io)?;
            failpoint("service-settle.promoted");
            (s, st, n)
        }
        (_, _, Some((s, st)), Some(cur)) => {
            service_secret::discard_next(c, &v.name).map_err(io)?;
            (s, st, cur)
        }
        _ => return Ok(Settled::Drift(slots[0].0)),
    };
    if state == TokenState::Pending {
        store.commit(slot, None).map_err(OpError::Store)?;
        failpoint("service-settle.committed");
    }
    for (other, _) in slots.iter().filter(|(s, _)| *s != slot) {
        store.revoke(*other).map_err(OpError::Store)?;
    }
    Ok(Settled::Working(slot, secret))
}

/// The working service slot and secret, or an error that says what to do.
pub fn working(c: &Config, v: &Volume, store: &mut LuksStore) -> Result<(SlotId, Secret), OpError> {
    match settle(c, v, store)? {
        Settled::Working(slot, s) => Ok((slot, s)),
        Settled::Missing => Err(OpError::Failed(format!(
            "volume {} has no service slot: run `keyward bootstrap {}`",
            v.name, v.name
        ))),
        Settled::Drift(slot) => Err(OpError::Failed(format!(
            "the stored service secret does not open service slot {slot}"
        ))),
    }
}

/// `keyward service rotate VOLUME`.
pub fn rotate(c: &Config, name: &VolumeName) -> Result<Reply, OpError> {
    let v = configured(c, name)?;
    if v.kind == keyward_core::config::VolumeKind::FileVault {
        return crate::filevault::service_rotate(c, v);
    }
    let mut store = open(c, v)?;
    let (old, current) = working(c, v, &mut store)?;
    let new = keyward_sys::random::service_secret().map_err(OpError::Store)?;
    service_secret::store_next(c, name, &new).map_err(io)?;
    failpoint("service-rotate.next-written");
    let req = GrantRequest {
        role: Role::Service,
        pending: true,
    };
    let slot = match store.grant(&req, Authority::Service(&current), &new) {
        Ok(s) => s,
        Err(e) => {
            service_secret::discard_next(c, name).map_err(io)?;
            return Err(OpError::Store(e));
        }
    };
    failpoint("service-rotate.slot-added");
    service_secret::promote_next(c, name).map_err(io)?;
    failpoint("service-rotate.renamed");
    store.commit(slot, None).map_err(OpError::Store)?;
    failpoint("service-rotate.committed");
    store.revoke(old).map_err(OpError::Store)?;
    Ok(Reply::ServiceRotated {
        old: old.get(),
        new: slot.get(),
    })
}
