//! `keyward.toml` (DESIGN.md section 7): parsed strictly (unknown keys are errors), with every
//! derived path computed here so that the helper, agent and CLI agree on them. Pure: the caller
//! reads the file (and checks its owner and mode) and hands over the text.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::ids::{UserName, VolumeName};
use crate::kdf::KdfPolicy;

/// The default config file.
pub const DEFAULT_PATH: &str = "/etc/keyward/keyward.toml";

/// A configured volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    /// The name requests use.
    pub name: VolumeName,
    /// Block device or image file (LUKS2); the volume's mount point (FileVault, `/`).
    pub device: PathBuf,
    /// What holds its unlock rights.
    pub kind: VolumeKind,
    /// FileVault only: the hidden account that holds keyward's Secure Token, when it is not
    /// `service_user` (the agent's account), so the networked agent's account need not be an
    /// administrator or a token holder.
    pub service_account: Option<UserName>,
}

/// What holds a volume's unlock rights (`kind` in `[[volume]]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum VolumeKind {
    /// LUKS2 keyslots (Linux; the default).
    #[default]
    Luks2,
    /// Secure Tokens and FileVault's personal recovery key (macOS). A Mac has one set of
    /// token holders, so at most one such volume is configured.
    FileVault,
}

impl VolumeKind {
    fn parse(s: Option<&str>) -> Result<Self, ConfigError> {
        match s {
            None | Some("luks2") => Ok(VolumeKind::Luks2),
            Some("filevault") => Ok(VolumeKind::FileVault),
            Some(other) => Err(ConfigError(format!(
                "volume.kind must be \"luks2\" or \"filevault\", not {other:?}"
            ))),
        }
    }
}

/// Which users get unlock rights at login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Members of this group are managed.
    pub managed_group: Option<String>,
    /// These users are managed too.
    pub managed_users: Vec<UserName>,
    /// Revoke the slots of users who left the managed set.
    pub revoke_unmanaged: bool,
    /// Members of this group may bootstrap a volume's service slot by logging in with a
    /// password that opens an existing slot (off when absent).
    pub admin_group: Option<String>,
    /// Recovery key rotation interval.
    pub recovery_rotation_days: u32,
    /// Service secret rotation interval.
    pub service_rotation_days: u32,
    /// A pending recovery key (begun, never committed) older than this is dropped, its slot
    /// revoked; the previous key was valid all along.
    pub pending_max_age_secs: u64,
    /// The user whose slot a passphrase typed at boot tries first (LUKS2 priority `prefer`),
    /// so they unlock at single-slot cost however many users hold slots. Absent: whoever
    /// logged in most recently.
    pub primary_user: Option<UserName>,
    /// The lowest uid keyward may manage (inclusive; at least 1: root is never managed).
    pub uid_min: u32,
    /// The highest uid keyward may manage (inclusive). [`crate::policy::RESERVED_UIDS`] are
    /// never managed, whatever the range.
    pub uid_max: u32,
}

impl Policy {
    /// Whether a uid is in the range keyward may manage at all (who is managed within it is
    /// [`crate::policy::decide`]'s question).
    pub fn may_manage_uid(&self, uid: crate::ids::Uid) -> bool {
        let u = uid.get();
        u != 0
            && (self.uid_min..=self.uid_max).contains(&u)
            && !crate::policy::RESERVED_UIDS.contains(&u)
    }
}

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The service account the agent runs as.
    pub service_user: UserName,
    /// Root-only helper state (service secrets, pending keys, journal).
    pub state_dir: PathBuf,
    /// The agent's own state.
    pub agent_state_dir: PathBuf,
    /// Sockets.
    pub runtime_dir: PathBuf,
    /// The audit log's directory.
    pub log_dir: PathBuf,
    /// KDF policy.
    pub kdf: KdfPolicy,
    /// Volumes, by name.
    pub volumes: Vec<Volume>,
    /// Login policy.
    pub policy: Policy,
    /// Agent verification interval in seconds.
    pub verify_interval_secs: u64,
    /// The escrow server; `None`: standalone (`keyward recovery rotate --show`).
    pub escrow: Option<Escrow>,
}

/// `[escrow]`: where recovery keys are escrowed, and the keys that pin the server.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Escrow {
    /// The server's URL (used by the agent).
    pub url: String,
    /// The server's age X25519 recipient (`age1…`): recovery keys are encrypted to it.
    pub recipient: String,
    /// The server's Ed25519 public key, base64: it signs receipts and commands.
    pub server_signing_key: String,
    /// This device's id at the server (written at enrollment).
    pub device_id: Option<String>,
    /// PEM file of the CA (or the certificate) the escrow server's TLS certificate must chain
    /// to; absent: Mozilla's root list.
    pub ca_file: Option<PathBuf>,
    /// How often the agent checks in (reports status, learns of keys to rotate after use).
    #[serde(default = "default_checkin")]
    pub checkin_interval_secs: u64,
    /// The agent's first retry delay after a failed check-in or upload; it doubles on every
    /// further failure, up to `retry_max_secs`.
    #[serde(default = "default_retry_initial")]
    pub retry_initial_secs: u64,
    /// The longest retry delay.
    #[serde(default = "default_retry_max")]
    pub retry_max_secs: u64,
}

fn default_checkin() -> u64 {
    3600
}

fn default_retry_initial() -> u64 {
    30
}

fn default_retry_max() -> u64 {
    3600
}

/// Why a config was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(pub String);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    service_user: Option<String>,
    state_dir: Option<PathBuf>,
    agent_state_dir: Option<PathBuf>,
    runtime_dir: Option<PathBuf>,
    log_dir: Option<PathBuf>,
    verify_interval_secs: Option<u64>,
    #[serde(default)]
    kdf: RawKdf,
    #[serde(default)]
    volume: Vec<RawVolume>,
    #[serde(default)]
    policy: RawPolicy,
    #[serde(default)]
    escrow: Option<Escrow>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawKdf {
    #[serde(default)]
    danger_fast_kdf: bool,
    argon2_time_ms: Option<u32>,
    argon2_memory_kib: Option<u32>,
    boot_budget_ms: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVolume {
    name: String,
    device: PathBuf,
    kind: Option<String>,
    service_account: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    managed_group: Option<String>,
    #[serde(default)]
    managed_users: Vec<String>,
    #[serde(default)]
    revoke_unmanaged: bool,
    admin_group: Option<String>,
    recovery_rotation_days: Option<u32>,
    service_rotation_days: Option<u32>,
    pending_max_age_secs: Option<u64>,
    primary_user: Option<String>,
    uid_min: Option<u32>,
    uid_max: Option<u32>,
}

fn absolute(p: Option<PathBuf>, default: &str, key: &str) -> Result<PathBuf, ConfigError> {
    let p = p.unwrap_or_else(|| PathBuf::from(default));
    let clean = p.is_absolute()
        && !p.components().any(|c| {
            matches!(
                c,
                std::path::Component::ParentDir | std::path::Component::CurDir
            )
        });
    if clean {
        Ok(p)
    } else {
        Err(ConfigError(format!(
            "{key} must be an absolute path without '.' or '..'"
        )))
    }
}

impl Config {
    /// Parse the file's text.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let raw: Raw = toml::from_str(text).map_err(|e| ConfigError(e.message().to_owned()))?;
        let mut names = BTreeSet::new();
        let mut volumes = Vec::new();
        for v in raw.volume {
            let name = VolumeName::parse(&v.name).map_err(|e| ConfigError(e.to_string()))?;
            if !names.insert(name.clone()) {
                return Err(ConfigError(format!("volume {name} is configured twice")));
            }
            let device = absolute(Some(v.device), "", "volume.device")?;
            let kind = VolumeKind::parse(v.kind.as_deref())?;
            let service_account = match (kind, v.service_account) {
                (_, None) => None,
                (VolumeKind::FileVault, Some(a)) => {
                    Some(UserName::parse(&a).map_err(|e| ConfigError(e.to_string()))?)
                }
                (_, Some(_)) => {
                    return Err(ConfigError(format!(
                        "volume {name}: service_account is for kind = \"filevault\" volumes"
                    )))
                }
            };
            volumes.push(Volume {
                name,
                device,
                kind,
                service_account,
            });
        }
        if volumes
            .iter()
            .filter(|v| v.kind == VolumeKind::FileVault)
            .count()
            > 1
        {
            return Err(ConfigError(
                "at most one kind = \"filevault\" volume: a Mac's Secure Tokens are one set".into(),
            ));
        }
        if volumes.is_empty() {
            return Err(ConfigError("at least one [[volume]] is required".into()));
        }
        let user = |s: &str| UserName::parse(s).map_err(|e| ConfigError(e.to_string()));
        let uid_min = raw.policy.uid_min.unwrap_or(crate::policy::DEFAULT_UID_MIN);
        let uid_max = raw.policy.uid_max.unwrap_or(crate::policy::DEFAULT_UID_MAX);
        if uid_min == 0 || uid_min > uid_max || uid_max == u32::MAX {
            return Err(ConfigError(format!(
                "policy.uid_min ({uid_min}) must be at least 1 and at most policy.uid_max \
                 ({uid_max}), which must be below 4294967295"
            )));
        }
        let managed_users = raw
            .policy
            .managed_users
            .iter()
            .map(|u| user(u))
            .collect::<Result<_, _>>()?;
        let managed_group = match raw.policy.managed_group {
            Some(g) => Some(user(&g)?.as_str().to_owned()),
            None => Some("keyward-users".to_owned()),
        };
        Ok(Config {
            service_user: user(raw.service_user.as_deref().unwrap_or("_keyward"))?,
            state_dir: absolute(raw.state_dir, "/var/lib/keyward", "state_dir")?,
            agent_state_dir: absolute(
                raw.agent_state_dir,
                "/var/lib/keyward-agent",
                "agent_state_dir",
            )?,
            runtime_dir: absolute(raw.runtime_dir, "/run/keyward", "runtime_dir")?,
            log_dir: absolute(raw.log_dir, "/var/log/keyward", "log_dir")?,
            kdf: KdfPolicy {
                danger_fast_kdf: raw.kdf.danger_fast_kdf,
                argon2_time_ms: raw.kdf.argon2_time_ms,
                argon2_max_memory_kib: raw.kdf.argon2_memory_kib,
                boot_budget_ms: match (raw.kdf.boot_budget_ms, raw.kdf.argon2_time_ms) {
                    (Some(0), _) => {
                        return Err(ConfigError(
                            "kdf.boot_budget_ms must be at least 1 (leave it out for no budget)"
                                .into(),
                        ))
                    }
                    (Some(_), Some(_)) => {
                        return Err(ConfigError(
                            "kdf.boot_budget_ms and kdf.argon2_time_ms both set: the budget \
                             sets each passphrase slot's time; keep one"
                                .into(),
                        ))
                    }
                    (budget, _) => budget,
                },
            },
            volumes,
            policy: Policy {
                managed_group,
                managed_users,
                revoke_unmanaged: raw.policy.revoke_unmanaged,
                admin_group: raw
                    .policy
                    .admin_group
                    .map(|g| user(&g).map(|u| u.as_str().to_owned()))
                    .transpose()?,
                recovery_rotation_days: raw.policy.recovery_rotation_days.unwrap_or(90),
                service_rotation_days: raw.policy.service_rotation_days.unwrap_or(30),
                pending_max_age_secs: raw.policy.pending_max_age_secs.unwrap_or(3 * 86_400),
                primary_user: raw.policy.primary_user.as_deref().map(user).transpose()?,
                uid_min,
                uid_max,
            },
            verify_interval_secs: raw.verify_interval_secs.unwrap_or(3600).max(1),
            escrow: match raw.escrow {
                Some(e) if e.checkin_interval_secs == 0 || e.retry_initial_secs == 0 => {
                    return Err(ConfigError(
                        "escrow.checkin_interval_secs and escrow.retry_initial_secs must be at least 1"
                            .into(),
                    ))
                }
                Some(e) if e.retry_max_secs < e.retry_initial_secs => {
                    return Err(ConfigError(
                        "escrow.retry_max_secs must be at least escrow.retry_initial_secs".into(),
                    ))
                }
                other => other,
            },
        })
    }

    /// The volume with this name.
    pub fn volume(&self, name: &VolumeName) -> Option<&Volume> {
        self.volumes.iter().find(|v| &v.name == name)
    }

    /// The helper's socket.
    pub fn helper_socket(&self) -> PathBuf {
        self.runtime_dir.join("helper.sock")
    }

    /// The per-volume advisory lock (root-only state).
    pub fn lock_path(&self, v: &VolumeName) -> PathBuf {
        self.state_dir.join("locks").join(format!("{v}.lock"))
    }

    /// The service secret of a volume (root-only state).
    pub fn service_secret_path(&self, v: &VolumeName) -> PathBuf {
        self.state_dir.join("service").join(v.as_str())
    }

    /// The audit log.
    pub fn audit_log(&self) -> PathBuf {
        self.log_dir.join("audit.jsonl")
    }

    /// True if `p` lies inside one of keyward's own directories.
    pub fn owns_path(&self, p: &Path) -> bool {
        [
            &self.state_dir,
            &self.agent_state_dir,
            &self.runtime_dir,
            &self.log_dir,
        ]
        .iter()
        .any(|d| p.starts_with(d))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn design_example_parses_with_defaults() {
        let c = Config::parse(
            "[[volume]]\nname = \"root\"\ndevice = \"/dev/nvme0n1p3\"\n[policy]\nmanaged_users = [\"alice\"]\n",
        )
        .expect("valid");
        assert_eq!(c.service_user.as_str(), "_keyward");
        assert_eq!(c.helper_socket(), PathBuf::from("/run/keyward/helper.sock"));
        assert_eq!(c.policy.managed_group.as_deref(), Some("keyward-users"));
        assert_eq!(c.policy.recovery_rotation_days, 90);
        assert!(!c.kdf.danger_fast_kdf);
        let root = VolumeName::parse("root").expect("valid");
        assert_eq!(
            c.service_secret_path(&root),
            PathBuf::from("/var/lib/keyward/service/root")
        );
    }

    #[test]
    fn uid_range() {
        let base = "[[volume]]\nname = \"a\"\ndevice = \"/x\"\n";
        let c = Config::parse(base).expect("valid");
        assert_eq!((c.policy.uid_min, c.policy.uid_max), (1000, 2_147_483_647));
        let c = Config::parse(&format!(
            "{base}[policy]\nuid_min = 500\nuid_max = 300000\n"
        ))
        .expect("valid");
        assert_eq!((c.policy.uid_min, c.policy.uid_max), (500, 300_000));
        let uid = |n| crate::ids::Uid::new(n).expect("valid");
        assert!(c.policy.may_manage_uid(uid(500)));
        assert!(!c.policy.may_manage_uid(uid(300_001)));
        assert!(
            !c.policy.may_manage_uid(uid(65_534)),
            "reserved, whatever the range"
        );
    }

    #[test]
    fn primary_user() {
        let base = "[[volume]]\nname = \"a\"\ndevice = \"/x\"\n";
        let c = Config::parse(base).expect("valid");
        assert_eq!(c.policy.primary_user, None);
        let c =
            Config::parse(&format!("{base}[policy]\nprimary_user = \"alice\"\n")).expect("valid");
        assert_eq!(
            c.policy.primary_user.map(|u| u.to_string()),
            Some("alice".into())
        );
    }

    #[test]
    fn boot_budget() {
        let vol = "[[volume]]\nname = \"a\"\ndevice = \"/x\"\n";
        let c = Config::parse(vol).expect("valid");
        assert_eq!(c.kdf.boot_budget_ms, None);
        let c = Config::parse(&format!("[kdf]\nboot_budget_ms = 3000\n{vol}")).expect("valid");
        assert_eq!(c.kdf.boot_budget_ms, Some(3000));
        for (bad, says) in [
            ("[kdf]\nboot_budget_ms = 0\n", "at least 1"),
            (
                "[kdf]\nboot_budget_ms = 3000\nargon2_time_ms = 500\n",
                "both set",
            ),
            ("[kdf]\nboot_budget_ms = -1\n", "expected u32"),
            ("[kdf]\nboot_budget = 3000\n", "unknown field"),
        ] {
            let e = Config::parse(&format!("{bad}{vol}")).expect_err(bad);
            assert!(e.to_string().contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn rejects_bad_configs() {
        for bad in [
            "",                                                                  // no volume
            "[[volume]]\nname = \"Root\"\ndevice = \"/dev/x\"\n",                // bad name
            "[[volume]]\nname = \"a\"\ndevice = \"x\"\n",                        // relative device
            "[[volume]]\nname = \"a\"\ndevice = \"/x\"\n[[volume]]\nname = \"a\"\ndevice = \"/y\"\n",
            "surprise = 1\n[[volume]]\nname = \"a\"\ndevice = \"/x\"\n",          // unknown key
            "state_dir = \"/var/../etc\"\n[[volume]]\nname = \"a\"\ndevice = \"/x\"\n",
            "service_user = \"-root\"\n[[volume]]\nname = \"a\"\ndevice = \"/x\"\n",
            "[kdf]\nfast = true\n[[volume]]\nname = \"a\"\ndevice = \"/x\"\n",
            "[[volume]]\nname = \"a\"\ndevice = \"/\"\nkind = \"apfs\"\n",              // unknown kind
            "[[volume]]\nname = \"a\"\ndevice = \"/x\"\nservice_account = \"_kw\"\n",     // LUKS2 has none
            "[[volume]]\nname = \"a\"\ndevice = \"/\"\nkind = \"filevault\"\n[[volume]]\nname = \"b\"\ndevice = \"/\"\nkind = \"filevault\"\n",
            "[[volume]]\nname = \"a\"\ndevice = \"/x\"\n[policy]\nprimary_user = \"-x\"\n", // bad user name
            "[[volume]]\nname = \"a\"\ndevice = \"/x\"\n[policy]\nuid_min = 0\n",         // root's uid
            "[[volume]]\nname = \"a\"\ndevice = \"/x\"\n[policy]\nuid_min = 5000\nuid_max = 4000\n",
            "[[volume]]\nname = \"a\"\ndevice = \"/x\"\n[policy]\nuid_max = 4294967295\n", // (uid_t)-1
            "[[volume]]\nname = \"a\"\ndevice = \"/x\"\n[policy]\nuid_max = -1\n",
        ] {
            assert!(Config::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn volume_kinds() {
        let c = Config::parse(
            "[[volume]]\nname = \"data\"\ndevice = \"/dev/sda2\"\n[[volume]]\nname = \"mac\"\ndevice = \"/\"\nkind = \"filevault\"\n[[volume]]\nname = \"x\"\ndevice = \"/x\"\nkind = \"luks2\"\n",
        )
        .expect("valid");
        let kinds: Vec<VolumeKind> = c.volumes.iter().map(|v| v.kind).collect();
        assert_eq!(
            kinds,
            [VolumeKind::Luks2, VolumeKind::FileVault, VolumeKind::Luks2]
        );
        assert_eq!(c.volumes[1].service_account, None);
        let c = Config::parse(
            "[[volume]]\nname = \"mac\"\ndevice = \"/\"\nkind = \"filevault\"\nservice_account = \"_keywardfv\"\n",
        )
        .expect("valid");
        assert_eq!(
            c.volumes[0].service_account.as_ref().map(UserName::as_str),
            Some("_keywardfv")
        );
    }
}
