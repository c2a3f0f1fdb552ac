//! Process hardening for the processes that hold secrets.

/// No core dumps and no ptrace by other processes of the same uid (`PR_SET_DUMPABLE 0`), and
/// `RLIMIT_CORE` 0 as well, so a core is not written even where `fs.suid_dumpable` is 2.
#[cfg(target_os = "linux")]
pub fn make_undumpable() -> std::io::Result<()> {
    rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable)?;
    let none = rustix::process::Rlimit {
        current: Some(0),
        maximum: Some(0),
    };
    rustix::process::setrlimit(rustix::process::Resource::Core, none)?;
    Ok(())
}

/// No core dumps (`RLIMIT_CORE` 0) and no debugger (`PT_DENY_ATTACH`): macOS's nearest to
/// Linux's `PR_SET_DUMPABLE 0`.
#[cfg(target_os = "macos")]
pub fn make_undumpable() -> std::io::Result<()> {
    use nix::sys::resource::{setrlimit, Resource};
    setrlimit(Resource::RLIMIT_CORE, 0, 0)?;
    // SAFETY: PT_DENY_ATTACH takes no pid, address or data (0, null, 0 as Apple documents);
    // it only sets a flag on the calling process and touches no memory of ours.
    let rc = unsafe { libc::ptrace(libc::PT_DENY_ATTACH, 0, std::ptr::null_mut(), 0) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Keep every page of the process out of swap, including pages allocated later, locking each
/// only when first touched (`MCL_ONFAULT`), so libcryptsetup's transient argon2id buffers are
/// locked while in use and released after, rather than reserved up front.
#[cfg(target_os = "linux")]
pub fn lock_memory() -> std::io::Result<()> {
    use rustix::mm::MlockAllFlags;
    rustix::mm::mlockall(MlockAllFlags::CURRENT | MlockAllFlags::FUTURE | MlockAllFlags::ONFAULT)?;
    Ok(())
}

/// macOS has no `mlockall` (its swap is encrypted); the caller warns and goes on.
#[cfg(target_os = "macos")]
pub fn lock_memory() -> std::io::Result<()> {
    Err(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        "mlockall is not available on macOS (swap is encrypted there)",
    ))
}

/// The effective uid of this process.
pub fn effective_uid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// The effective gid of this process.
pub fn effective_gid() -> u32 {
    rustix::process::getegid().as_raw()
}

/// Files this process creates from now on are private to its owner (umask 077): databases,
/// logs and temporary files of a process that holds keys need no group or world bits.
pub fn private_umask() {
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
}

/// End this process the way a power cut would: SIGKILL to itself, so no destructor, atexit
/// handler or signal handler runs and nothing is flushed (crash tests; never `abort()`, whose
/// SIGABRT runs handlers).
pub fn die_like_power_loss() -> ! {
    let me = rustix::process::getpid();
    let _ = rustix::process::kill_process(me, rustix::process::Signal::KILL);
    // SIGKILL cannot be caught; if sending it failed, leave as abruptly all the same: `_exit`,
    // not `std::process::exit`, which would run atexit handlers and flush stdio buffers —
    // work a power cut never does.
    // SAFETY: `_exit` takes a plain integer, touches no memory of ours and does not return.
    unsafe { libc::_exit(137) }
}
