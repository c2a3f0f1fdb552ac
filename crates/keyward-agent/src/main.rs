//! keywardd: keyward's agent. It runs as the service user, never as root, and is the only
//! process that will talk to the network (escrow and policy sync land here). For now it asks
//! the helper, on a schedule, to prove that every secret it holds still opens its slot, and
//! logs drift. Between checks it sleeps: no timers, no polling.
//!
//! ```text
//! keywardd [--config FILE]     (or KEYWARD_CONFIG; default /etc/keyward/keyward.toml)
//! ```

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use keyward_core::config::{Config, DEFAULT_PATH};
use keyward_core::ipc::{Reply, Request};
use keyward_sys::{hardening, helper_client, safe_fs, users};

fn main() -> ExitCode {
    match start() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("keywardd: {e}");
            ExitCode::FAILURE
        }
    }
}

fn config_path() -> Result<PathBuf, String> {
    let mut args = std::env::args().skip(1);
    match (args.next().as_deref(), args.next(), args.next()) {
        (None, ..) => Ok(std::env::var_os("KEYWARD_CONFIG")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_PATH))),
        (Some("--config"), Some(p), None) => Ok(PathBuf::from(p)),
        _ => Err("usage: keywardd [--config FILE]".into()),
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
    let path = config_path()?;
    let text = safe_fs::read_trusted_config(&path).map_err(|e| format!("config: {e}"))?;
    let config = Config::parse(&text).map_err(|e| e.to_string())?;
    match users::user(&config.service_user) {
        Ok(Some(a)) if a.uid.get() == hardening::effective_uid() => {}
        Ok(_) => eprintln!(
            "keywardd: warning: not running as the configured service user {}; the helper will refuse it",
            config.service_user
        ),
        Err(e) => eprintln!("keywardd: warning: looking up {}: {e}", config.service_user),
    }
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
