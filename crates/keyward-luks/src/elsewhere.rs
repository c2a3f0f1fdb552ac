//! keyward-luks off Linux: no libcryptsetup, so no LUKS2 store can exist. The store type is
//! uninhabited, `open` fails with a clear error, and there is no header to repair or to
//! benchmark; code written against the store compiles unchanged and never runs.

use std::path::Path;

use keyward_core::ipc::FindingReport;
use keyward_core::kdf::KdfPolicy;
use keyward_core::store::{GrantRequest, ReconcileAction};
use keyward_core::token::EscrowRef;
use keyward_core::{Authority, Secret, SlotId, StoreError, UnlockStore, VolumeState};

/// No LUKS2 store can exist on this system.
#[derive(Debug)]
pub enum LuksStore {}

/// LUKS2 volumes need Linux.
pub fn open(_device: &Path, _lock_path: &Path, _kdf: KdfPolicy) -> Result<LuksStore, StoreError> {
    Err(StoreError::Backend(
        "a kind = \"luks2\" volume needs Linux (libcryptsetup)".into(),
    ))
}

/// No LUKS2 header to repair on this system.
pub fn repair_interrupted_write(_: &Path, _: &Path) -> Result<Option<String>, StoreError> {
    Ok(None)
}

/// No libcryptsetup to benchmark a boot budget with.
pub fn budget_findings(_: &KdfPolicy, _: &VolumeState) -> Vec<FindingReport> {
    Vec::new()
}

impl UnlockStore for LuksStore {
    fn state(&mut self) -> Result<VolumeState, StoreError> {
        match *self {}
    }
    fn grant(
        &mut self,
        _: &GrantRequest,
        _: Authority<'_>,
        _: &Secret,
    ) -> Result<SlotId, StoreError> {
        match *self {}
    }
    fn rekey(&mut self, _: SlotId, _: Authority<'_>, _: &Secret) -> Result<SlotId, StoreError> {
        match *self {}
    }
    fn revoke(&mut self, _: SlotId) -> Result<(), StoreError> {
        match *self {}
    }
    fn commit(&mut self, _: SlotId, _: Option<EscrowRef>) -> Result<(), StoreError> {
        match *self {}
    }
    fn verify(&mut self, _: SlotId, _: &Secret) -> Result<bool, StoreError> {
        match *self {}
    }
    fn reconcile(&mut self) -> Result<Vec<ReconcileAction>, StoreError> {
        match *self {}
    }
}
