//! keyward-sys: every syscall keyward's daemons make outside libcryptsetup, behind small safe
//! functions: peer credentials, process hardening, files opened without following links and
//! checked for owner and mode, users and groups, the audit file, frame I/O on keyward's
//! sockets, and the crash tests' crash points. No policy here: callers decide what an owner or mode must be.

pub mod audit_file;
pub mod clock;
pub mod daemon;
pub mod failpoint;
pub mod frame_io;
pub mod hardening;
pub mod helper_client;
pub mod listen;
#[cfg(target_os = "linux")]
pub mod pam_check;
pub mod peer;
#[cfg(target_os = "linux")]
pub mod process_tree;
pub mod random;
pub mod safe_fs;
pub mod shadow;
pub mod stop;
pub mod syslog;
pub mod users;
