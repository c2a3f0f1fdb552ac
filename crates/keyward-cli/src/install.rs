//! `keyward install` and `keyward uninstall`. These run in the CLI itself (as root), not in
//! the helper: install creates the account and directories the helper needs before it can
//! start, and uninstall removes them after the helper has released keyward's slots.
//! Idempotent: every step reports whether it changed anything.
//!
//! `--package` is the Debian package's mode (dist/debian/): the package ships the units, the
//! tmpfiles.d snippet and the PAM profile itself and its maintainer scripts run
//! pam-auth-update, so install and uninstall handle only the account and directories; and its
//! default config names no volume until an administrator adds one, which only this mode accepts.

// On a Mac only the config loading and the uninstall steps shared with install_macos.rs are
// used; the Linux steps (useradd, units, PAM) are compiled but unused there.
#![cfg_attr(target_os = "macos", allow(dead_code))]

use std::path::{Path, PathBuf};
use std::process::Command;

use keyward_core::config::{Config, ConfigError};
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

/// The pam-auth-update profiles: pam_keyward.so in the Additional auth and password sections,
/// reached only after the primary modules (pam_unix, pam_sss) succeeded; and, for directory
/// users, its `stash` line in the Primary password section between pam_unix and pam_sss.
const PAM_PROFILES: [(&str, &str); 2] = [
    ("keyward", include_str!("../../../dist/pam-configs/keyward")),
    (
        "keyward-directory",
        include_str!("../../../dist/pam-configs/keyward-directory"),
    ),
];
const PAM_CONFIGS: &str = "/usr/share/pam-configs";
/// The PAM service the helper checks a directory user's password with.
const PAM_SERVICE: (&str, &str) = ("keyward", include_str!("../../../dist/pam.d/keyward"));
const PAM_D: &str = "/etc/pam.d";

fn pam_auth_update(args: &[&str]) -> Result<(), Failure> {
    run_tool(
        Command::new("pam-auth-update")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

fn pam_enabled() -> bool {
    let has = |file: &str, what: &str| {
        std::fs::read_to_string(Path::new(PAM_D).join(file)).is_ok_and(|t| t.contains(what))
    };
    has("common-auth", "pam_keyward.so") && has("common-password", "pam_keyward.so stash")
}

/// Install and enable the PAM profiles and the `keyward` PAM service; returns what changed.
/// The service file is the administrator's once written: an edited one is kept.
fn install_pam(changed: &mut Vec<String>) -> Result<(), Failure> {
    let d = Path::new(PAM_D);
    if d.is_dir() && std::fs::symlink_metadata(d.join(PAM_SERVICE.0)).is_err() {
        safe_fs::write_atomic(d, PAM_SERVICE.0, PAM_SERVICE.1.as_bytes(), 0o644)
            .map_err(io("PAM service"))?;
        changed.push(format!("wrote {PAM_D}/{}", PAM_SERVICE.0));
    }
    let dir = Path::new(PAM_CONFIGS);
    if !dir.is_dir() || which("pam-auth-update").is_none() {
        println!("warning: pam-auth-update not found; add pam_keyward.so to the PAM stack by hand");
        return Ok(());
    }
    for (name, text) in PAM_PROFILES {
        if std::fs::read_to_string(dir.join(name)).ok().as_deref() != Some(text) {
            safe_fs::write_atomic(dir, name, text.as_bytes(), 0o644).map_err(io("PAM profile"))?;
            changed.push(format!("wrote {PAM_CONFIGS}/{name}"));
        }
    }
    if !pam_enabled() {
        pam_auth_update(&["--enable", "keyward", "keyward-directory"])?;
        changed.push("enabled pam_keyward.so (pam-auth-update)".into());
    }
    Ok(())
}

/// Disable and remove the PAM profiles (pam-auth-update rewrites /etc/pam.d as it was) and the
/// `keyward` PAM service, if it is still the one keyward wrote.
fn uninstall_pam() -> Result<(), Failure> {
    let service = Path::new(PAM_D).join(PAM_SERVICE.0);
    if std::fs::read_to_string(&service).ok().as_deref() == Some(PAM_SERVICE.1) {
        std::fs::remove_file(&service).map_err(io("PAM service"))?;
        println!("removed {}", service.display());
    }
    let present: Vec<&str> = PAM_PROFILES
        .iter()
        .map(|(name, _)| *name)
        .filter(|name| std::fs::symlink_metadata(Path::new(PAM_CONFIGS).join(name)).is_ok())
        .collect();
    if present.is_empty() {
        return Ok(());
    }
    let mut args = vec!["--package", "--remove"];
    args.extend(&present);
    pam_auth_update(&args)?;
    for name in present {
        std::fs::remove_file(Path::new(PAM_CONFIGS).join(name)).map_err(io("PAM profile"))?;
    }
    println!("disabled and removed the PAM profiles");
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

/// The volume the probe below appends (a config that already names it has a volume and so
/// never needs the probe).
const PROBE_VOLUME: &str = "keyward-package-probe";

/// The config for `--package`: like every command's, but a config that names no volume yet
/// (the package's default) is accepted, since install and uninstall need only its paths and
/// service user.
pub fn load_package_config(path: &Path) -> Result<Config, Failure> {
    let text =
        safe_fs::read_trusted_config(path).map_err(|e| Failure::new(1, format!("config: {e}")))?;
    parse_allowing_no_volume(&text).map_err(|e| Failure::new(1, e.to_string()))
}

/// `Config::parse`, except that "no volume" is not an error. It parses the text again with one
/// more volume appended: that can cure only the missing volume, so every other error (and
/// every check `Config::parse` makes) still applies.
fn parse_allowing_no_volume(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text).or_else(|err| {
        let probe =
            format!("{text}\n[[volume]]\nname = \"{PROBE_VOLUME}\"\ndevice = \"/nonexistent\"\n");
        let mut config = Config::parse(&probe).map_err(|_| err)?;
        config.volumes.retain(|v| v.name.as_str() != PROBE_VOLUME);
        Ok(config)
    })
}

/// Secrets the helper keeps (`service/`, `pending/`) for volumes the config does not name.
/// Uninstall releases only configured volumes' slots, so deleting these could delete a volume's
/// only way in; it refuses instead. Temp files (`.NAME.tmp`) never hold the only copy.
fn secrets_of_unconfigured_volumes(config: &Config) -> Result<Vec<String>, Failure> {
    let mut found = Vec::new();
    for sub in ["service", "pending"] {
        let dir = config.state_dir.join(sub);
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io("state directory")(e)),
        };
        for entry in entries {
            let name = entry.map_err(io("state directory"))?.file_name();
            let name = name.to_string_lossy();
            // `<volume>`, `<volume>.next`, `<volume>.escrow`: volume names have no dot.
            let volume = name.split('.').next().unwrap_or_default();
            if !name.starts_with('.') && !config.volumes.iter().any(|v| v.name.as_str() == volume) {
                found.push(format!("{sub}/{name}"));
            }
        }
    }
    found.sort();
    Ok(found)
}

/// The units and the tmpfiles.d snippet, each with its directory; none for the package, which
/// ships them in /usr/lib (copies in /etc would shadow its later versions).
fn unit_files<'a>(
    unit_dir: &'a Path,
    tmpfiles_dir: &'a Path,
    package: bool,
) -> Vec<(&'a Path, &'static (&'static str, &'static str))> {
    if package {
        return Vec::new();
    }
    UNITS
        .iter()
        .map(|u| (unit_dir, u))
        .chain([(tmpfiles_dir, &TMPFILES)])
        .collect()
}

/// `keyward install` (`package`: account and directories only).
pub fn install(
    config: &Config,
    unit_dir: &Path,
    tmpfiles_dir: &Path,
    package: bool,
) -> Result<(), Failure> {
    let mut changed = Vec::new();
    let name = &config.service_user;
    let account = match users::user_for_creation(name).map_err(io("user lookup"))? {
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
            users::user_for_creation(name)
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
    for (dir, (file, text)) in unit_files(unit_dir, tmpfiles_dir, package) {
        std::fs::create_dir_all(dir).map_err(io("unit directory"))?;
        let path = dir.join(file);
        if std::fs::read_to_string(&path).ok().as_deref() != Some(text) {
            safe_fs::write_atomic(dir, file, text.as_bytes(), 0o644).map_err(io("unit"))?;
            changed.push(format!("wrote {}", path.display()));
        }
    }
    if !package {
        install_pam(&mut changed)?;
    }
    if changed.is_empty() {
        println!("keyward is already installed; nothing changed");
    } else {
        for c in &changed {
            println!("{c}");
        }
        if !package {
            println!("next: start keyward-helper.socket and keywardd.service, then `keyward bootstrap VOLUME`");
        }
    }
    Ok(())
}

/// `keyward uninstall --yes` (`package`: leaves units, tmpfiles.d and PAM to the package).
pub fn uninstall(
    config: &Config,
    unit_dir: &Path,
    tmpfiles_dir: &Path,
    package: bool,
) -> Result<(), Failure> {
    // First make sure every volume can give up keyward's slots; only then touch anything.
    check_release(config)?;
    release(config)?;
    for (dir, (file, _)) in unit_files(unit_dir, tmpfiles_dir, package) {
        let p = dir.join(file);
        if std::fs::symlink_metadata(&p).is_ok() {
            std::fs::remove_file(&p).map_err(io("unit"))?;
            println!("removed {}", p.display());
        }
    }
    if !package {
        uninstall_pam()?;
    }
    let account = users::user_for_creation(&config.service_user).map_err(io("user lookup"))?;
    remove_dirs(config, account.map(|a| a.uid.get()))?;
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

/// Uninstall's first step, on every platform: refuse (changing nothing) unless every configured
/// volume can give up keyward's rights and no secret of an unconfigured volume would be lost.
pub fn check_release(config: &Config) -> Result<(), Failure> {
    let unconfigured = secrets_of_unconfigured_volumes(config)?;
    if !unconfigured.is_empty() {
        return Err(Failure::new(
            4,
            format!(
                "{} holds secrets of volumes the config does not name ({}); removing them could leave a volume without a way in. Name those volumes in the config again (uninstall then releases their slots), or move the files away yourself",
                config.state_dir.display(),
                unconfigured.join(", ")
            ),
        ));
    }
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
    Ok(())
}

/// Have the helper release keyward's rights on every configured volume.
pub fn release(config: &Config) -> Result<(), Failure> {
    let socket = config.helper_socket();
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
    Ok(())
}

/// Remove keyward's directories (state, agent state, runtime, log): only real directories
/// owned by root or the service account (`service_uid`, while it exists).
pub fn remove_dirs(config: &Config, service_uid: Option<u32>) -> Result<(), Failure> {
    let owners: Vec<u32> = [Some(0), service_uid].into_iter().flatten().collect();
    for dir in [
        &config.state_dir,
        &config.agent_state_dir,
        &config.runtime_dir,
        &config.log_dir,
    ] {
        remove_our_dir(dir, &owners)?;
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use keyward_core::config::Policy;

    /// The Debian package's default /etc/keyward/keyward.toml.
    const SHIPPED: &str = include_str!("../../../dist/debian/keyward.toml");

    /// The shipped file with every option line (`#key = value`, `#[table]`) uncommented.
    fn uncommented() -> String {
        SHIPPED
            .lines()
            .map(|l| match l.strip_prefix('#') {
                Some(rest)
                    if rest.starts_with('[')
                        || rest.starts_with(|c: char| c.is_ascii_lowercase()) =>
                {
                    rest
                }
                _ => l,
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn shipped_config_names_no_volume_and_only_package_mode_accepts_it() {
        let err = Config::parse(SHIPPED).unwrap_err();
        assert!(err.to_string().contains("[[volume]]"), "{err}");
        let c = parse_allowing_no_volume(SHIPPED).unwrap();
        assert!(c.volumes.is_empty());
        let defaults = Config::parse("[[volume]]\nname = \"a\"\ndevice = \"/a\"\n").unwrap();
        assert_eq!(
            Config {
                volumes: vec![],
                ..defaults
            },
            c
        );
    }

    #[test]
    fn shipped_config_documents_every_option_with_its_default() {
        let text = uncommented();
        // argon2_time_ms and boot_budget_ms are two answers to one question (config load
        // refuses both): each example parses without the other.
        let without = |key: &str| {
            text.lines()
                .filter(|l| !l.starts_with(&format!("{key} = ")))
                .collect::<Vec<_>>()
                .join("\n")
        };
        let budget = Config::parse(&without("argon2_time_ms")).unwrap();
        assert_eq!(budget.kdf.argon2_time_ms, None);
        assert!(budget.kdf.boot_budget_ms.is_some());
        let c = Config::parse(&without("boot_budget_ms")).unwrap();
        // Every key the parser knows appears as an option line.
        for key in [
            "service_user",
            "state_dir",
            "agent_state_dir",
            "runtime_dir",
            "log_dir",
            "verify_interval_secs",
            "[[volume]]",
            "name",
            "device",
            "[kdf]",
            "danger_fast_kdf",
            "argon2_time_ms",
            "argon2_memory_kib",
            "boot_budget_ms",
            "[policy]",
            "managed_group",
            "managed_users",
            "revoke_unmanaged",
            "admin_group",
            "recovery_rotation_days",
            "service_rotation_days",
            "pending_max_age_secs",
            "uid_min",
            "uid_max",
            "[escrow]",
            "url",
            "recipient",
            "server_signing_key",
            "device_id",
            "ca_file",
            "checkin_interval_secs",
            "retry_initial_secs",
            "retry_max_secs",
        ] {
            let line = if key.starts_with('[') {
                key.to_owned()
            } else {
                format!("{key} = ")
            };
            assert!(
                text.lines().any(|l| l.starts_with(&line)),
                "{key} is not documented"
            );
        }
        // The values shown are the defaults (examples aside: volume, argon2, admin group,
        // primary user, escrow).
        let d = Config::parse("[[volume]]\nname = \"a\"\ndevice = \"/a\"\n").unwrap();
        assert_eq!(
            (
                &c.service_user,
                &c.state_dir,
                &c.agent_state_dir,
                &c.runtime_dir,
                &c.log_dir
            ),
            (
                &d.service_user,
                &d.state_dir,
                &d.agent_state_dir,
                &d.runtime_dir,
                &d.log_dir
            )
        );
        assert_eq!(c.verify_interval_secs, d.verify_interval_secs);
        assert_eq!(c.kdf.danger_fast_kdf, d.kdf.danger_fast_kdf);
        assert_eq!(
            Policy {
                admin_group: None,
                primary_user: None,
                ..c.policy
            },
            d.policy,
            "[policy] values shown are the defaults"
        );
        let e = c.escrow.unwrap();
        assert_eq!(
            (
                e.checkin_interval_secs,
                e.retry_initial_secs,
                e.retry_max_secs
            ),
            (3600, 30, 3600)
        );
    }

    #[test]
    fn package_mode_still_rejects_every_other_error() {
        for bad in [
            "surprise = 1\n",
            "state_dir = \"relative\"\n",
            "[kdf]\nfast = true\n",
            "[escrow]\nurl = \"http://x\"\n",
            "[[volume]]\nname = \"a\"\n",
            "volume = []\n",
            "not toml",
        ] {
            assert!(parse_allowing_no_volume(bad).is_err(), "{bad:?}");
        }
        let one = "[[volume]]\nname = \"data\"\ndevice = \"/srv/disk.img\"\n";
        assert_eq!(parse_allowing_no_volume(one).unwrap().volumes.len(), 1);
    }

    #[test]
    fn secrets_of_volumes_the_config_does_not_name_are_found() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = format!(
            "state_dir = \"{}\"\n[[volume]]\nname = \"data\"\ndevice = \"/srv/disk.img\"\n",
            dir.path().display()
        );
        let config = Config::parse(&cfg).unwrap();
        assert!(secrets_of_unconfigured_volumes(&config).unwrap().is_empty());
        for (sub, file) in [
            ("service", "data"),
            ("service", "data.next"),
            ("service", ".ghost.tmp"),
            ("service", "ghost"),
            ("pending", "data.escrow"),
            ("pending", "old.escrow"),
        ] {
            std::fs::create_dir_all(dir.path().join(sub)).unwrap();
            std::fs::write(dir.path().join(sub).join(file), b"x").unwrap();
        }
        assert_eq!(
            secrets_of_unconfigured_volumes(&config).unwrap(),
            ["pending/old.escrow", "service/ghost"]
        );
        let none = parse_allowing_no_volume(&format!("state_dir = \"{}\"\n", dir.path().display()))
            .unwrap();
        assert_eq!(secrets_of_unconfigured_volumes(&none).unwrap().len(), 5);
    }
}
