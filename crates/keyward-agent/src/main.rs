//! keywardd: keyward's agent. It runs as the service user, never as root, and is the only
//! process that will talk to the network (escrow and policy sync land here). For now it asks
//! the helper, on a schedule, to prove that every secret it holds still opens its slot, and
//! logs drift. Between checks it sleeps: no timers, no polling.
//!
//! ```text
//! keywardd [--config FILE]     (or KEYWARD_CONFIG; default /etc/keyward/keyward.toml)
//! ```

mod control;
mod escrow;

use std::process::ExitCode;
use std::time::Duration;

use keyward_core::config::Config;
use keyward_core::ipc::{Reply, Request};
use keyward_sys::{daemon, hardening, helper_client, users};

fn main() -> ExitCode {
    match start() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("keywardd: {e}");
            ExitCode::FAILURE
        }
    }
}

fn start() -> Result<(), String> {
    if hardening::effective_uid() == 0 {
        return Err(
            "refusing to run as root: keywardd runs as the service user (see keywardd.service)"
                .into(),
        );
    }
    hardening::make_undumpable().map_err(|e| format!("prctl(PR_SET_DUMPABLE): {e}"))?;
    let path = daemon::config_path(
        "keywardd",
        std::env::args().skip(1),
        std::env::var_os("KEYWARD_CONFIG"),
    )?;
    let config = daemon::load_config(&path)?;
    match users::user(&config.service_user) {
        Ok(Some(a)) if a.uid.get() == hardening::effective_uid() => {}
        Ok(_) => eprintln!(
            "keywardd: warning: not running as the configured service user {}; the helper will refuse it",
            config.service_user
        ),
        Err(e) => eprintln!("keywardd: warning: looking up {}: {e}", config.service_user),
    }
    // The control socket: root's CLI hands over enrollment tokens and rotation requests here.
    let sock = config.agent_state_dir.join("agent.sock");
    let listener =
        keyward_sys::listen::bind_private(&sock).map_err(|e| format!("control socket: {e}"))?;
    let control_config = config.clone();
    std::thread::Builder::new()
        .name("control".into())
        .spawn(move || control::serve(listener, control_config))
        .map_err(|e| format!("control thread: {e}"))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .enable_io()
        .build()
        .map_err(|e| format!("runtime: {e}"))?;
    rt.block_on(run(config));
    Ok(())
}

async fn run(config: Config) {
    let interval = Duration::from_secs(config.verify_interval_secs);
    eprintln!(
        "keywardd: verifying {} volume(s) every {}s",
        config.volumes.len(),
        interval.as_secs()
    );
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("keywardd: cannot watch SIGTERM: {e}");
            return;
        }
    };
    loop {
        let socket = config.helper_socket();
        let checked = tokio::task::spawn_blocking(move || {
            helper_client::call(&socket, Request::Verify { volume: None })
        })
        .await;
        match checked {
            Ok(Ok(Reply::Verified(reports))) => {
                for r in reports {
                    for u in r.users.iter().filter(|u| u.status != "managed") {
                        let did = if u.revoked {
                            "slot revoked"
                        } else {
                            "slot kept"
                        };
                        eprintln!(
                            "keywardd: {}: user {} is {} ({did})",
                            r.volume, u.user, u.status
                        );
                    }
                    match (r.service.as_str(), r.detail) {
                        ("ok", _) => eprintln!("keywardd: {}: service secret ok", r.volume),
                        (state, detail) => eprintln!(
                            "keywardd: DRIFT {}: service secret {state}: {}",
                            r.volume,
                            detail.unwrap_or_default()
                        ),
                    }
                }
            }
            Ok(Ok(other)) => eprintln!("keywardd: unexpected reply: {other:?}"),
            Ok(Err(e)) => eprintln!("keywardd: verification failed: {e}"),
            Err(e) => eprintln!("keywardd: verification task failed: {e}"),
        }
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            _ = term.recv() => {
                eprintln!("keywardd: stopping");
                return;
            }
        }
    }
}
