//! A clean stop on SIGTERM, SIGINT or SIGHUP: the signals are blocked in every thread and one
//! thread waits for them (`sigwait`), so the cleanup runs as ordinary code — no async-signal
//! restrictions, no `unsafe` — then the process exits 0. Must be called before the process
//! starts any other thread (threads inherit the blocked set).

use nix::sys::signal::{SigSet, SigmaskHow, Signal};

/// Run `cleanup`, then exit 0, when a stop signal arrives.
pub fn on_stop_signal(cleanup: impl FnOnce() + Send + 'static) -> std::io::Result<()> {
    let mut set = SigSet::empty();
    for s in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        set.add(s);
    }
    nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&set), None)
        .map_err(std::io::Error::from)?;
    std::thread::Builder::new()
        .name("stop".into())
        .spawn(move || {
            // sigwait only fails for an invalid set; then there is nothing to wait for.
            if set.wait().is_ok() {
                cleanup();
                std::process::exit(0);
            }
        })
        .map(drop)
}
