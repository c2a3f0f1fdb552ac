//! The crash points of the FileVault operations. Every change an operation makes to the Mac or
//! to the helper's state goes through one of three seams — a command that changes the Mac
//! (`simulated`), a keychain item written or deleted (`simulated`), the registry saved
//! ([`StepJournal`]) — and each seam names the step it has just made durable. An operation
//! reaches the same step more than once (a grant saves the registry before and after the
//! token), so these are counted crash points (`keyward_sys::failpoint::counted`): a crash test
//! names `STEP` (the first time this helper process reaches it) or `STEP#N` (the Nth time), and
//! with `KEYWARD_FAILPOINT_TRACE` set a test helper names each step it reaches on stderr
//! (`keyward-helper: crash point STEP#N`). A shipped helper does nothing here.

use keyward_macos::registry::{FileJournal, Journal, Registry};
use keyward_macos::MacError;

/// The step `name` is done (`keyward_sys::failpoint::counted`: `STEP` or `STEP#N`).
pub(super) fn failpoint(name: &'static str) {
    keyward_sys::failpoint::counted("keyward-helper", name);
}

/// keyward's registry file, with a crash point after each durable save.
#[derive(Debug)]
pub(crate) struct StepJournal(FileJournal);

impl StepJournal {
    /// The registry at `path`, owned by `owner`.
    pub(crate) fn new(path: &std::path::Path, owner: u32) -> Self {
        StepJournal(FileJournal::new(path, owner))
    }
}

impl Journal for StepJournal {
    fn load(&mut self) -> Result<Registry, MacError> {
        self.0.load()
    }

    fn save(&mut self, registry: &Registry) -> Result<(), MacError> {
        self.0.save(registry)?;
        failpoint("filevault-registry.saved");
        Ok(())
    }
}
