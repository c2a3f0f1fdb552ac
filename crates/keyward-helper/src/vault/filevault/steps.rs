//! The crash points of the FileVault operations. Every change an operation makes to the Mac or
//! to the helper's state goes through one of three seams — a command that changes the Mac
//! (`simulated`), a keychain item written or deleted (`simulated`), the registry saved
//! ([`StepJournal`]) — and each seam names the step it has just made durable. An operation
//! reaches the same step more than once (a grant saves the registry before and after the
//! token), so a crash test names `STEP` (the first time this helper process reaches it) or
//! `STEP#N` (the Nth time); with `KEYWARD_FAILPOINT_TRACE` set, a test helper names each step
//! it reaches on stderr (`crash point STEP#N`), so a test can list an operation's steps by
//! running it once. A shipped helper does nothing here.

use keyward_macos::registry::{FileJournal, Journal, Registry};
use keyward_macos::MacError;

/// The step `name` is done: a `failpoints` build dies here like a power loss when
/// `KEYWARD_FAILPOINT` is `name` and this is the first time this process reached it, or when
/// it is `name#N` and this is the Nth time.
pub(super) fn failpoint(name: &'static str) {
    #[cfg(feature = "failpoints")]
    {
        use std::collections::BTreeMap;
        use std::sync::{Mutex, PoisonError};
        static REACHED: Mutex<BTreeMap<&'static str, u32>> = Mutex::new(BTreeMap::new());
        let n = {
            let mut reached = REACHED.lock().unwrap_or_else(PoisonError::into_inner);
            let n = reached.entry(name).or_insert(0);
            *n += 1;
            *n
        };
        if std::env::var_os("KEYWARD_FAILPOINT_TRACE").is_some() {
            eprintln!("keyward-helper: crash point {name}#{n}");
        }
        if n == 1 {
            crate::failpoint::failpoint(name);
        }
        crate::failpoint::failpoint(&format!("{name}#{n}"));
    }
    let _ = name;
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
