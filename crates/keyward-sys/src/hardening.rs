//! Process hardening for the processes that hold secrets.

/// No core dumps and no ptrace by other processes of the same uid (`PR_SET_DUMPABLE 0`).
pub fn make_undumpable() -> std::io::Result<()> {
    rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable)?;
    Ok(())
}

/// Keep every page of the process out of swap, including pages allocated later, locking each
/// only when first touched (`MCL_ONFAULT`), so libcryptsetup's transient argon2id buffers are
/// locked while in use and released after, rather than reserved up front.
pub fn lock_memory() -> std::io::Result<()> {
    use rustix::mm::MlockAllFlags;
    rustix::mm::mlockall(MlockAllFlags::CURRENT | MlockAllFlags::FUTURE | MlockAllFlags::ONFAULT)?;
    Ok(())
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
