//! keyward-helper: the root half of keyward. Synchronous, no network, a closed catalog of
//! operations, and callers classified by the kernel's peer credentials (DESIGN.md section 2).
//!
//! ```text
//! keyward-helper [--config FILE]     (or KEYWARD_CONFIG; default /etc/keyward/keyward.toml)
//! ```
//! It takes its socket from systemd (`LISTEN_FDS`) or binds `runtime_dir/helper.sock` itself.
#![forbid(unsafe_code)]

// Layers, each using only those below it (docs/ARCHITECTURE.md draws them):
// server → dispatch → ops → vault → state (pending_key, policy_override; the service secret:
// vault/luks/host.rs),
// accounts, audit, ctx, error.
mod accounts;
mod audit;
mod ctx;
mod dispatch;
mod edge_audit;
mod error;
mod ops;
#[cfg(target_os = "linux")]
mod password_check;
mod pending_key;
mod policy_override;
mod server;
mod start;
mod status_cache;
mod vault;

use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use keyward_sys::{audit_file::AuditLog, daemon, hardening, listen, safe_fs, users};

fn main() -> ExitCode {
    #[cfg(target_os = "linux")]
    if std::env::args().nth(1).as_deref() == Some(keyward_sys::pam_check::CHILD_FLAG) {
        return keyward_sys::pam_check::child_main();
    }
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("keyward-helper: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    let path = daemon::config_path(
        "keyward-helper",
        std::env::args().skip(1),
        std::env::var_os("KEYWARD_CONFIG"),
    )?;
    if hardening::effective_uid() != 0 {
        return Err("must run as root".into());
    }
    hardening::make_undumpable().map_err(|e| format!("prctl(PR_SET_DUMPABLE): {e}"))?;
    if let Err(e) = hardening::lock_memory() {
        eprintln!("keyward-helper: warning: cannot lock memory ({e}); secrets may reach swap");
    }
    let listener_from_systemd =
        listen::from_systemd().map_err(|e| format!("socket activation: {e}"))?;
    let config = daemon::load_config(&path)?;
    #[cfg(feature = "simulated-mac")]
    eprintln!("keyward-helper: WARNING: built with simulated-mac: kind = \"filevault\" volumes are served by a simulated Mac. Tests only!");
    config
        .kdf
        .check(vault::luks::KDF_BUILD)
        .map_err(|e| e.to_string())?;
    // A shipped build never gets here with danger_fast_kdf (refused just above).
    #[cfg(feature = "test-kdf")]
    if config.kdf.danger_fast_kdf {
        eprintln!("keyward-helper: WARNING: built with test-kdf and danger_fast_kdf is set: passphrase slots get PBKDF2 x1000 and the KDF floor is lowered to match. Tests only!");
    }
    let service = users::user(&config.service_user)
        .map_err(|e| format!("looking up {}: {e}", config.service_user))?
        .ok_or_else(|| {
            format!(
                "service user {} does not exist (run `keyward install`)",
                config.service_user
            )
        })?;

    let dir = |p: &std::path::Path, gid: u32, mode: u32| {
        safe_fs::ensure_dir(p, 0, gid, mode)
            .map(drop)
            .map_err(|e| format!("directory: {e}"))
    };
    dir(&config.state_dir, 0, 0o700)?;
    dir(&config.state_dir.join("service"), 0, 0o700)?;
    dir(&config.state_dir.join("locks"), 0, 0o700)?;
    let log_gid = users::log_reader_gid().map_err(|e| format!("looking up group adm: {e}"))?;
    dir(&config.log_dir, log_gid, 0o750)?;
    let (mut audit, found) = AuditLog::open(&config.audit_log(), &config.state_dir, log_gid)
        .map_err(|e| format!("audit log: {e}"))?;
    for event in found {
        eprintln!("keyward-helper: WARNING: {}", event.result());
        audit
            .append(audit::event(event.op(), &event.result()))
            .map_err(|e| format!("audit log: {e}"))?;
    }
    let self_bound = listener_from_systemd.is_none();
    let listener = match listener_from_systemd {
        Some(l) => l,
        None => {
            dir(&config.runtime_dir, service.gid, 0o750)?;
            listen::bind(&config.helper_socket(), service.gid)
                .map_err(|e| format!("socket: {e}"))?
        }
    };
    // A clean stop (SIGTERM from systemd or an admin) takes the socket it bound with it, so
    // no stale socket file is left for clients to find. Before any other thread starts.
    let bound = self_bound.then(|| config.helper_socket());
    keyward_sys::stop::on_stop_signal(move || {
        if let Some(p) = bound {
            if let Err(e) = std::fs::remove_file(&p) {
                eprintln!("keyward-helper: removing {}: {e}", p.display());
            }
        }
        eprintln!("keyward-helper: stopped");
    })
    .map_err(|e| format!("stop signals: {e}"))?;
    eprintln!(
        "keyward-helper: serving {}",
        config.helper_socket().display()
    );
    // Finish or undo whatever a crash interrupted, before serving anyone, on the record.
    start::settle_all(&config, &mut audit)?;
    let jobs = ctx::Jobs::new()?;
    let ctx = Arc::new(ctx::Ctx {
        config,
        service_uid: service.uid,
        audit: Mutex::new(audit),
        fold: Mutex::new(keyward_core::audit::Fold::default()),
        jobs,
    });
    server::serve(&listener, &ctx);
    Ok(())
}
