//! keywardd: keyward's agent. It runs as the service user, never as root, and is the only
//! process that talks to the network. On the verify interval it asks the helper to prove that
//! every secret it holds still opens its slot, and logs drift; on the check-in interval (when
//! enrolled) it reports to the escrow server, relays the server's signed commands to the
//! helper (which verifies them), and rotates recovery keys that are due, retrying with backoff
//! while the server is away. Between rounds it sleeps: no polling.
//!
//! ```text
//! keywardd [--config FILE]     (or KEYWARD_CONFIG; default /etc/keyward/keyward.toml)
//! ```
#![forbid(unsafe_code)]

mod commands;
mod control;
mod escrow;
mod schedule;

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
    // Enrollment wakes the escrow round, so a new device escrows at once.
    let wake = std::sync::Arc::new(tokio::sync::Notify::new());
    let control_wake = wake.clone();
    std::thread::Builder::new()
        .name("control".into())
        .spawn(move || control::serve(listener, control_config, &control_wake))
        .map_err(|e| format!("control thread: {e}"))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .enable_io()
        .build()
        .map_err(|e| format!("runtime: {e}"))?;
    rt.block_on(run(config, &wake));
    Ok(())
}

async fn run(config: Config, wake: &tokio::sync::Notify) {
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
    let mut health = schedule::Health::new();
    let now = tokio::time::Instant::now();
    let (mut next_verify, mut next_round) = (now, now);
    let mut failures = 0u32;
    let mut unenrolled_said = false;
    loop {
        if tokio::time::Instant::now() >= next_verify {
            verify(&config, &mut health).await;
            next_verify = tokio::time::Instant::now() + interval;
        }
        if let Some(escrow) = config.escrow.clone() {
            if tokio::time::Instant::now() >= next_round {
                let (c, h) = (config.clone(), health.clone());
                let outcome = tokio::task::spawn_blocking(move || {
                    if !escrow::enrolled(&c) {
                        return None;
                    }
                    Some(schedule::round(&c, &h))
                })
                .await;
                let wait = match outcome {
                    Ok(Some(Ok(()))) => {
                        failures = 0;
                        escrow.checkin_interval_secs
                    }
                    Ok(None) => {
                        if !unenrolled_said {
                            eprintln!("keywardd: not enrolled with the escrow server; run `keyward enroll URL --token-stdin`");
                            unenrolled_said = true;
                        }
                        escrow.checkin_interval_secs
                    }
                    Ok(Some(Err((_, why)))) => {
                        failures = failures.saturating_add(1);
                        let wait = with_jitter(keyward_core::schedule::backoff_secs(
                            escrow.retry_initial_secs,
                            escrow.retry_max_secs,
                            failures,
                        ));
                        eprintln!("keywardd: escrow round failed ({why}); every current key stays valid; retrying in {wait}s");
                        wait
                    }
                    Err(e) => {
                        eprintln!("keywardd: escrow task failed: {e}");
                        escrow.retry_max_secs
                    }
                };
                next_round = tokio::time::Instant::now() + Duration::from_secs(wait);
            }
        } else {
            next_round = next_verify;
        }
        tokio::select! {
            () = tokio::time::sleep_until(next_verify.min(next_round)) => {}
            () = wake.notified() => {
                next_round = tokio::time::Instant::now();
                unenrolled_said = false;
            }
            _ = term.recv() => {
                eprintln!("keywardd: stopping");
                return;
            }
        }
    }
}

/// Up to a tenth more, so a fleet that lost its server does not come back in step.
fn with_jitter(secs: u64) -> u64 {
    let mut b = [0u8; 8];
    let r = getrandom::fill(&mut b).map_or(0, |()| u64::from_le_bytes(b));
    secs + r % (secs / 10 + 1)
}

/// Ask the helper to prove every stored secret still opens its slot; log drift and users who
/// left the managed set.
async fn verify(config: &Config, health: &mut schedule::Health) {
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
                for f in &r.findings {
                    eprintln!(
                        "keywardd: {}: {} in keyslot {} ({}): {}",
                        r.volume, f.finding, f.slot, f.role, f.detail
                    );
                }
                health.insert(
                    r.volume.clone(),
                    keyward_core::schedule::ServiceHealth::from_report(&r.service),
                );
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
}
