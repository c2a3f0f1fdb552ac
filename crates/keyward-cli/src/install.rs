//! `keyward install` and `keyward uninstall`. These run in the CLI itself (as root), not in
//! the helper: install creates the account and directories the helper needs before it can
//! start, and uninstall removes them after the helper has released keyward's slots.
//! Idempotent: every step reports whether it changed anything.

use std::path::{Path, PathBuf};
use std::process::Command;

use keyward_core::config::Config;
use keyward_core::ipc::{Reply, Request};
use keyward_sys::{helper_client as client, safe_fs, users};

use crate::Failure;

/// The systemd units, as shipped in `dist/systemd/`.
const UNITS: &[(&str, &str)] = &[
    (
        "keyward-helper.socket",
        include_str!("../../../dist/systemd/keyward-helper.socket"),
    ),
    (
        "keyward-helper.service",
        include_str!("../../../dist/systemd/keyward-helper.service"),
    ),
    (
        "keywardd.service",
        include_str!("../../../dist/systemd/keywardd.service"),
    ),
];

/// Recreates `/run/keyward` (root:_keyward 0750) at every boot, before the socket is bound.
const TMPFILES: (&str, &str) = (
    "keyward.conf",
    include_str!("../../../dist/tmpfiles.d/keyward.conf"),
);

/// The pam-auth-update profile: pam_keyward.so in the Additional auth and password sections,
/// reached only after pam_unix has succeeded.
const PAM_PROFILE: &str = include_str!("../../../dist/pam-configs/keyward");
const PAM_CONFIGS: &str = "/usr/share/pam-configs";

fn pam_auth_update(args: &[&str]) -> Result<(), Failure> {
    run_tool(
        Command::new("pam-auth-update")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

fn pam_enabled() -> bool {
    std::fs::read_to_string("/etc/pam.d/common-auth").is_ok_and(|t| t.contains("pam_keyward.so"))
}

/// Install and enable the PAM profile; returns what changed.
fn install_pam(changed: &mut Vec<String>) -> Result<(), Failure> {
    let dir = Path::new(PAM_CONFIGS);
    if !dir.is_dir() || which("pam-auth-update").is_none() {
        println!("warning: pam-auth-update not found; add pam_keyward.so to the PAM stack by hand");
        return Ok(());
    }
    if std::fs::read_to_string(dir.join("keyward")).ok().as_deref() != Some(PAM_PROFILE) {
        safe_fs::write_atomic(dir, "keyward", PAM_PROFILE.as_bytes(), 0o644)
            .map_err(io("PAM profile"))?;
        changed.push(format!("wrote {PAM_CONFIGS}/keyward"));
    }
    if !pam_enabled() {
        pam_auth_update(&["--enable", "keyward"])?;
        changed.push("enabled pam_keyward.so (pam-auth-update)".into());
    }
    Ok(())
}

/// Disable and remove the PAM profile; pam-auth-update rewrites /etc/pam.d as it was.
fn uninstall_pam() -> Result<(), Failure> {
    let profile = Path::new(PAM_CONFIGS).join("keyward");
    if std::fs::symlink_metadata(&profile).is_err() {
        return Ok(());
    }
    pam_auth_update(&["--package", "--remove", "keyward"])?;
    std::fs::remove_file(&profile).map_err(io("PAM profile"))?;
    println!("disabled and removed the PAM profile");
    Ok(())
}

fn which(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join(tool))
                .find(|c| c.is_file())
        })
        .unwrap_or(None)
}

fn io(what: &str) -> impl Fn(std::io::Error) -> Failure + '_ {
    move |e| Failure::new(1, format!("{what}: {e}"))
}

fn run_tool(cmd: &mut Command) -> Result<(), Failure> {
    let out = cmd.output().map_err(io("running shadow-utils"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(Failure::new(
            1,
            format!(
                "{cmd:?} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        ))
    }
}

/// `keyward install`.
pub fn install(config: &Config, unit_dir: &Path, tmpfiles_dir: &Path) -> Result<(), Failure> {
    let mut changed = Vec::new();
    let name = &config.service_user;
    let account = match users::user(name).map_err(io("user lookup"))? {
        Some(a) => a,
        None => {
            // A system account: no home, no shell, no password (useradd locks it), its own group.
            run_tool(
                Command::new("useradd")
                    .args(["--system", "--user-group", "--no-create-home"])
                    .args(["--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin"])
                    .args(["--comment", "keyward service account", "--"])
                    .arg(name.as_str()),
            )?;
            changed.push(format!("created system user and group {name}"));
            users::user(name)
                .map_err(io("user lookup"))?
                .ok_or_else(|| Failure::new(1, format!("useradd did not create {name}")))?
        }
    };
    let svc_uid = account.uid.get();
    let adm = users::log_reader_gid().map_err(io("group lookup"))?;
    let dirs: [(&Path, u32, u32, u32); 6] = [
        (&config.state_dir, 0, 0, 0o700),
        (&config.state_dir.join("service"), 0, 0, 0o700),
        (&config.state_dir.join("locks"), 0, 0, 0o700),
        (&config.agent_state_dir, svc_uid, account.gid, 0o700),
        (&config.runtime_dir, 0, account.gid, 0o750),
        (&config.log_dir, 0, adm, 0o750),
    ];
    for (path, uid, gid, mode) in dirs {
        if safe_fs::ensure_dir(path, uid, gid, mode).map_err(io("directory"))? {
            changed.push(format!("created {} ({uid}:{gid} {mode:o})", path.display()));
        }
    }
    let files = UNITS
        .iter()
        .map(|u| (unit_dir, u))
        .chain([(tmpfiles_dir, &TMPFILES)]);
    for (dir, (file, text)) in files {
        std::fs::create_dir_all(dir).map_err(io("unit directory"))?;
        let path = dir.join(file);
        if std::fs::read_to_string(&path).ok().as_deref() != Some(text) {
            safe_fs::write_atomic(dir, file, text.as_bytes(), 0o644).map_err(io("unit"))?;
            changed.push(format!("wrote {}", path.display()));
        }
    }
    install_pam(&mut changed)?;
    if changed.is_empty() {
        println!("keyward is already installed; nothing changed");
    } else {
        for c in &changed {
            println!("{c}");
        }
        println!("next: start keyward-helper.socket and keywardd.service, then `keyward bootstrap VOLUME`");
    }
    Ok(())
}

/// `keyward uninstall --yes`.
pub fn uninstall(config: &Config, unit_dir: &Path, tmpfiles_dir: &Path) -> Result<(), Failure> {
    // First make sure every volume can give up keyward's slots; only then touch anything.
    let socket = config.helper_socket();
    for v in &config.volumes {
        match client::call(
            &socket,
            Request::Release {
                volume: v.name.clone(),
                dry_run: true,
            },
        )? {
            Reply::Released { .. } => {}
            other => return Err(client::unexpected(&other).into()),
        }
    }
    for v in &config.volumes {
        match client::call(
            &socket,
            Request::Release {
                volume: v.name.clone(),
                dry_run: false,
            },
        )? {
            Reply::Released { slots } if slots.is_empty() => {
                println!("{}: no keyward slots", v.name)
            }
            Reply::Released { slots } => println!("{}: removed keyward keyslots {slots:?}", v.name),
            other => return Err(client::unexpected(&other).into()),
        }
    }
    let files = UNITS
        .iter()
        .map(|u| (unit_dir, u))
        .chain([(tmpfiles_dir, &TMPFILES)]);
    for (dir, (file, _)) in files {
        let p = dir.join(file);
        if std::fs::symlink_metadata(&p).is_ok() {
            std::fs::remove_file(&p).map_err(io("unit"))?;
            println!("removed {}", p.display());
        }
    }
    uninstall_pam()?;
    let account = users::user(&config.service_user).map_err(io("user lookup"))?;
    let owners: Vec<u32> = [Some(0), account.map(|a| a.uid.get())]
        .into_iter()
        .flatten()
        .collect();
    for dir in [
        &config.state_dir,
        &config.agent_state_dir,
        &config.runtime_dir,
        &config.log_dir,
    ] {
        remove_our_dir(dir, &owners)?;
    }
    if account.is_some() {
        run_tool(
            Command::new("userdel")
                .arg("--")
                .arg(config.service_user.as_str()),
        )?;
        println!("removed system user {}", config.service_user);
    }
    Ok(())
}

/// Remove a directory tree keyward created: only a real directory owned by root or the service
/// user, never through a symlink.
fn remove_our_dir(dir: &PathBuf, owners: &[u32]) -> Result<(), Failure> {
    use std::os::unix::fs::MetadataExt;
    let m = match std::fs::symlink_metadata(dir) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io("directory")(e)),
    };
    if !m.file_type().is_dir() || !owners.contains(&m.uid()) {
        return Err(Failure::new(
            1,
            format!("{} is not keyward's directory; left alone", dir.display()),
        ));
    }
    std::fs::remove_dir_all(dir).map_err(io("removing directory"))?;
    println!("removed {}", dir.display());
    Ok(())
}
