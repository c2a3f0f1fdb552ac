//! The helper protocol (DESIGN.md section 6): length-prefixed frames (u32 big-endian, at most
//! 64 KiB) carrying postcard-encoded messages from one closed request enum. Decoding is a pure
//! function here, fuzzed; names are parsed into their newtypes while decoding, so a request
//! with `../x` as a user never reaches a handler.
//!
//! This module is the one place secrets are serialized: [`WireSecret`] exists only inside a
//! frame and becomes a [`Secret`] as soon as it is decoded.

use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, Zeroizing};

use crate::catalog::Operation;
use crate::command::SignedCommand;
use crate::ids::{UserName, VolumeName};
use crate::secret::Secret;

/// The protocol version a hello carries.
pub const PROTOCOL_VERSION: u16 = 3;
/// The largest frame payload either side accepts.
pub const MAX_FRAME: usize = 64 * 1024;

/// A secret in transit. Zeroized on drop; no `Debug` of contents.
#[derive(Serialize, Deserialize, PartialEq, Eq)]
pub struct WireSecret(Vec<u8>);

impl WireSecret {
    /// Wrap a secret for sending.
    pub fn from_secret(s: &Secret) -> Self {
        WireSecret(s.expose().to_vec())
    }

    /// Unwrap on receipt.
    pub fn into_secret(mut self) -> Secret {
        Secret::from_vec(std::mem::take(&mut self.0))
    }
}

impl Drop for WireSecret {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl std::fmt::Debug for WireSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WireSecret([REDACTED])")
    }
}

/// Everything a client may ask the helper. Closed: an unknown variant does not decode.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
#[non_exhaustive]
pub enum Request {
    /// First frame of every connection.
    Hello {
        /// The client's protocol version.
        version: u16,
    },
    /// Holders of one volume, or of all.
    Status {
        /// `None`: every configured volume.
        volume: Option<VolumeName>,
    },
    /// Create the service slot, proving a current holder's passphrase.
    Bootstrap {
        /// The volume.
        volume: VolumeName,
        /// A passphrase that opens an existing slot.
        passphrase: WireSecret,
    },
    /// Give a user a slot for their passphrase, opened by the service secret.
    Grant {
        /// The volume.
        volume: VolumeName,
        /// The user (must exist on the system).
        user: UserName,
        /// The user's passphrase.
        passphrase: WireSecret,
    },
    /// Remove a user's keyward slot.
    Revoke {
        /// The volume.
        volume: VolumeName,
        /// The user.
        user: UserName,
    },
    /// Prove the secrets the helper holds still open their slots.
    Verify {
        /// `None`: every configured volume.
        volume: Option<VolumeName>,
    },
    /// A login PAM accepted: grant or heal the user's slots (queued; answered at once).
    LoginCapture {
        /// The user who logged in.
        user: UserName,
        /// The password PAM checked.
        password: WireSecret,
    },
    /// A password change PAM made: move the user's slots to the new password (queued).
    PasswordChange {
        /// The user.
        user: UserName,
        /// The new password.
        new: WireSecret,
        /// The old password, when the change was not a root reset.
        old: Option<WireSecret>,
    },
    /// Standalone recovery rotation, step 1: make (or return the same) pending recovery key.
    /// Admin only; the key goes to the admin's terminal once. Idempotent.
    RecoveryBegin {
        /// The volume.
        volume: VolumeName,
    },
    /// Standalone recovery rotation, step 2: commit once the admin typed the key's last group
    /// back; the previous recovery key stops working.
    RecoveryCommit {
        /// The volume.
        volume: VolumeName,
        /// The pending slot being committed.
        slot: u32,
        /// The last group of the key, as typed.
        confirm: WireSecret,
    },
    /// Escrowed recovery rotation, step 1 (the agent): make (or return the same) pending key,
    /// and hand over only its age ciphertext to the escrow server's recipient.
    RecoveryEscrowBegin {
        /// The volume.
        volume: VolumeName,
    },
    /// Escrowed recovery rotation, step 2: commit on the server's signed receipt.
    RecoveryEscrowCommit {
        /// The volume.
        volume: VolumeName,
        /// The receipt, as the server signed it.
        receipt: crate::escrow::Receipt,
    },
    /// Drop a pending recovery key; the current one stays valid.
    RecoveryAbort {
        /// The volume.
        volume: VolumeName,
    },
    /// Record the device id the escrow server gave this device at enrollment.
    SetDevice {
        /// The id (`[A-Za-z0-9_-]{1,64}`).
        device_id: String,
    },
    /// Rotate the volume's service secret.
    ServiceRotate {
        /// The volume.
        volume: VolumeName,
    },
    /// Uninstall: remove every keyward slot of a volume and forget its service secret —
    /// refused, with nothing removed, unless a slot keyward does not manage remains.
    Release {
        /// The volume.
        volume: VolumeName,
        /// Only check whether release would be allowed.
        dry_run: bool,
    },
    /// Run a command the escrow server signed (the agent relays it): acted on only if it
    /// verifies against the pinned key, names this device, is current, and was never used.
    Command {
        /// The command and its signature, as the server sent them.
        signed: SignedCommand,
    },
    /// The policy in force: `keyward.toml` with the server's signed override applied.
    Policy,
    /// Replace a service slot that no stored secret opens (drift), proving a current holder's
    /// passphrase: a new secret and slot are made first, then the stale slot goes.
    ServiceRepair {
        /// The volume.
        volume: VolumeName,
        /// A passphrase that opens an existing slot.
        passphrase: WireSecret,
    },
    /// Bootstrap where a right belongs to an account (a Mac's Secure Token holder): the
    /// holder's name and password. Appended so older clients' frames still decode.
    BootstrapFrom {
        /// The volume.
        volume: VolumeName,
        /// The account whose password this is.
        holder: UserName,
        /// Its password.
        passphrase: WireSecret,
    },
}

impl Request {
    /// The catalog operation this request performs (`None` for the hello).
    pub fn operation(&self) -> Option<Operation> {
        Some(match self {
            Request::Hello { .. } => return None,
            Request::Status { .. } => Operation::Status,
            Request::Bootstrap { .. } | Request::BootstrapFrom { .. } => Operation::Bootstrap,
            Request::Grant { .. } => Operation::Grant,
            Request::Revoke { .. } => Operation::Revoke,
            Request::Verify { .. } => Operation::Verify,
            Request::Release { .. } => Operation::Uninstall,
            Request::ServiceRotate { .. } => Operation::ServiceRotate,
            Request::SetDevice { .. } => Operation::SetDevice,
            Request::RecoveryBegin { .. } => Operation::RecoveryBegin,
            Request::RecoveryCommit { .. } => Operation::RecoveryCommit,
            Request::RecoveryEscrowBegin { .. } => Operation::RecoveryEscrowBegin,
            Request::RecoveryEscrowCommit { .. } => Operation::RecoveryEscrowCommit,
            Request::RecoveryAbort { .. } => Operation::RecoveryAbort,
            Request::LoginCapture { .. } => Operation::LoginCapture,
            Request::PasswordChange { .. } => Operation::PasswordChange,
            Request::Command { .. } => Operation::RunCommand,
            Request::Policy => Operation::PolicyShow,
            Request::ServiceRepair { .. } => Operation::ServiceRepair,
        })
    }

    /// The server's side of the handshake, for a decoded frame on a connection `greeted` or
    /// not yet: `Ok(Some(hello))` answers a first frame that is a hello of this version,
    /// `Ok(None)` lets a request after it through, and `Err` says why the connection is closed
    /// (a first frame that is no hello of this version, or a second hello).
    pub fn greeting(&self, greeted: bool) -> Result<Option<Reply>, String> {
        match (self, greeted) {
            (Request::Hello { version }, false) if *version == PROTOCOL_VERSION => {
                Ok(Some(Reply::Hello {
                    version: PROTOCOL_VERSION,
                }))
            }
            (Request::Hello { version }, false) => Err(format!(
                "protocol version {version} is not supported (need {PROTOCOL_VERSION})"
            )),
            (_, false) | (Request::Hello { .. }, true) => {
                Err("the first frame must be the only hello".to_owned())
            }
            (_, true) => Ok(None),
        }
    }

    /// The volume named, for the audit trail.
    pub fn volume(&self) -> Option<&VolumeName> {
        match self {
            Request::Status { volume } | Request::Verify { volume } => volume.as_ref(),
            Request::Bootstrap { volume, .. }
            | Request::BootstrapFrom { volume, .. }
            | Request::ServiceRepair { volume, .. }
            | Request::Grant { volume, .. }
            | Request::Revoke { volume, .. }
            | Request::Release { volume, .. }
            | Request::ServiceRotate { volume }
            | Request::RecoveryBegin { volume }
            | Request::RecoveryCommit { volume, .. }
            | Request::RecoveryAbort { volume }
            | Request::RecoveryEscrowBegin { volume }
            | Request::RecoveryEscrowCommit { volume, .. } => Some(volume),
            Request::Command { signed } => signed.command.action.volume(),
            Request::Hello { .. }
            | Request::SetDevice { .. }
            | Request::LoginCapture { .. }
            | Request::PasswordChange { .. }
            | Request::Policy => None,
        }
    }

    /// The user named, for the audit trail.
    pub fn user(&self) -> Option<&UserName> {
        match self {
            Request::Grant { user, .. }
            | Request::BootstrapFrom { holder: user, .. }
            | Request::Revoke { user, .. }
            | Request::LoginCapture { user, .. }
            | Request::PasswordChange { user, .. } => Some(user),
            Request::Command { signed } => signed.command.action.user(),
            _ => None,
        }
    }
}

/// Error classes; each maps to one CLI exit code (DESIGN.md section 8).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorCode {
    /// Any other failure (exit 1).
    Failed,
    /// Malformed or unknown request (exit 2).
    Usage,
    /// Wrong passphrase (exit 3).
    AuthenticationFailed,
    /// A safety rule or the caller's class refused it (exit 4).
    Refused,
    /// The helper cannot serve now (exit 5).
    Unavailable,
    /// The volume is busy (exit 6).
    Busy,
    /// The escrow server could not be reached or failed (exit 7): the helper is fine, nothing
    /// changed on the disk, and trying later is the fix. Not 5, which means a keyward service on
    /// this machine is not running (docs/ARCHITECTURE.md, "Exit codes").
    EscrowUnavailable,
}

impl ErrorCode {
    /// The CLI exit code.
    pub fn exit_code(self) -> u8 {
        match self {
            ErrorCode::Failed => 1,
            ErrorCode::Usage => 2,
            ErrorCode::AuthenticationFailed => 3,
            ErrorCode::Refused => 4,
            ErrorCode::Unavailable => 5,
            ErrorCode::Busy => 6,
            ErrorCode::EscrowUnavailable => 7,
        }
    }
}

/// One unlock right, as reported.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct HolderReport {
    /// Keyslot.
    pub slot: u32,
    /// `user`, `service`, `recovery`, `unmanaged`.
    pub role: String,
    /// Login name, for user slots.
    pub user: Option<String>,
    /// Uid, for user slots.
    pub uid: Option<u32>,
    /// KDF.
    pub kdf: String,
    /// `active`, `pending`, `in-progress`, or `unmanaged`.
    pub state: String,
    /// For a recovery key: where it is escrowed (`None`: not escrowed, e.g. standalone).
    pub escrow_id: Option<String>,
    /// When keyward made the slot's token, in seconds since the Unix epoch.
    pub created: Option<u64>,
    /// The order a passphrase typed at boot tries it in: `prefer`, `normal` or `ignore`.
    pub priority: String,
    /// For a user slot: where its holder stands now (`managed`, `not-managed`, `disabled`,
    /// `deleted`, `uid-changed`, or `unknown` when a lookup failed), as `verify` judges it.
    pub standing: Option<String>,
}

/// One volume, as reported.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct VolumeReport {
    /// Volume name.
    pub volume: String,
    /// Its holders (empty if it could not be read).
    pub holders: Vec<HolderReport>,
    /// Broken invariants, in words.
    pub violations: Vec<String>,
    /// What is wrong with a slot short of an invariant: `weak-kdf`.
    pub findings: Vec<FindingReport>,
    /// Why the volume could not be read, if it could not.
    pub error: Option<String>,
    /// What the slowest unlocks at the boot prompt cost (`None` for a FileVault volume or one
    /// that could not be read).
    pub unlock_cost: Option<UnlockCostReport>,
}

/// The slowest unlocks of one LUKS2 volume, from its slots' KDF parameters
/// ([`crate::unlock_cost`]): work, not time.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct UnlockCostReport {
    /// The slots a typed passphrase tries, in order (`prefer`, then `normal`, each in header
    /// order).
    pub order: Vec<u32>,
    /// The keyward user whose slot is tried last.
    pub last_user: Option<String>,
    /// That user's slot.
    pub last_user_slot: Option<u32>,
    /// What unlocking as that user costs: every slot up to and including theirs.
    pub last_user_cost: Option<WorkReport>,
    /// What a wrong passphrase costs: every slot in `order`.
    pub wrong_password: WorkReport,
}

/// Summed key-derivation work of the slots tried.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct WorkReport {
    /// Slots tried.
    pub slots: u32,
    /// argon2 memory (KiB) × passes, summed.
    pub argon2_kib_passes: u64,
    /// PBKDF2 iterations, summed.
    pub pbkdf2_iterations: u64,
    /// Slots whose KDF keyward cannot read: their cost is unknown, not counted.
    pub unknown_slots: u32,
}

impl From<crate::unlock_cost::Work> for WorkReport {
    fn from(w: crate::unlock_cost::Work) -> Self {
        WorkReport {
            slots: w.slots,
            argon2_kib_passes: w.argon2_kib_passes,
            pbkdf2_iterations: w.pbkdf2_iterations,
            unknown_slots: w.unknown_slots,
        }
    }
}

impl UnlockCostReport {
    /// The report for a volume's state; `None` for a FileVault volume (macOS derives its keys,
    /// in no LUKS2 order).
    pub fn from_state(state: &crate::model::VolumeState) -> Option<Self> {
        if state
            .slots
            .iter()
            .any(|s| s.params == crate::kdf_floor::SlotKdf::NotLuks2)
        {
            return None;
        }
        let u = crate::unlock_cost::slowest_unlock(state);
        Some(UnlockCostReport {
            order: u.order.iter().map(|s| s.get()).collect(),
            last_user_slot: u.last_user.as_ref().map(|(s, _, _)| s.get()),
            last_user_cost: u.last_user.as_ref().map(|(_, _, w)| (*w).into()),
            last_user: u.last_user.map(|(_, n, _)| n),
            wrong_password: u.wrong_password.into(),
        })
    }
}

/// A slot that is a problem though no invariant is broken; for now one kind, `weak-kdf`: a
/// passphrase slot whose key derivation is below the floor (`keyward_core::kdf_floor`), made by
/// keyward or any other tool. `keyward verify` fails on any; `keyward status` shows them.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct FindingReport {
    /// `weak-kdf`.
    pub finding: String,
    /// Keyslot.
    pub slot: u32,
    /// Its holder's role: `user` or `unmanaged` (a slot keyward did not make).
    pub role: String,
    /// Login name, for a keyward user slot.
    pub user: Option<String>,
    /// KDF type: `pbkdf2`, `argon2id`, `argon2i`, or what the header says.
    pub kdf: String,
    /// PBKDF2's hash.
    pub hash: Option<String>,
    /// PBKDF2's iterations.
    pub iterations: Option<u64>,
    /// argon2's passes.
    pub time: Option<u64>,
    /// argon2's memory, KiB.
    pub memory_kib: Option<u64>,
    /// argon2's lanes.
    pub cpus: Option<u64>,
    /// The slot's parameters and what the floor asks for, in words.
    pub detail: String,
}

impl VolumeReport {
    /// The report for a volume whose state could not be read: no holders, and why.
    pub fn failed(volume: &str, error: impl Into<String>) -> Self {
        VolumeReport {
            volume: volume.to_owned(),
            holders: vec![],
            violations: vec![],
            findings: vec![],
            error: Some(error.into()),
            unlock_cost: None,
        }
    }

    /// The report for a volume whose state was read: its holders and any broken invariant.
    /// One function for every backend (LUKS2, FileVault), so `keyward status --json` has one
    /// shape everywhere.
    pub fn from_state(volume: &str, state: &crate::model::VolumeState) -> Self {
        use crate::model::HolderRole;
        use crate::token::TokenState;
        VolumeReport {
            volume: volume.to_owned(),
            violations: crate::invariants::check_state(state)
                .iter()
                .map(ToString::to_string)
                .collect(),
            holders: state
                .holders()
                .into_iter()
                .map(|h| {
                    let (user, uid) = match &h.role {
                        HolderRole::User { name, uid } => (Some(name.to_string()), Some(uid.get())),
                        _ => (None, None),
                    };
                    let priority = state.slot(h.slot).map_or("normal", |s| s.priority.label());
                    let state = match h.state {
                        None => "unmanaged",
                        Some(s) if s.is_transitional() => "in-progress",
                        Some(TokenState::Pending) => "pending",
                        Some(_) => "active",
                    };
                    HolderReport {
                        slot: h.slot.get(),
                        role: h.role.label().into(),
                        user,
                        uid,
                        kdf: h.kdf,
                        state: state.into(),
                        escrow_id: h.escrow_id,
                        created: h.created.and_then(|t| {
                            t.duration_since(std::time::UNIX_EPOCH)
                                .ok()
                                .map(|d| d.as_secs())
                        }),
                        priority: priority.into(),
                        standing: None,
                    }
                })
                .collect(),
            findings: Vec::new(),
            error: None,
            unlock_cost: UnlockCostReport::from_state(state),
        }
    }
}

/// The outcome of verifying one volume's service secret.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct VerifyReport {
    /// Volume name.
    pub volume: String,
    /// `ok`, `drift` (the secret no longer opens its slot), `missing` (no service slot or
    /// no secret), or `error`.
    pub service: String,
    /// Detail for anything but `ok`.
    pub detail: Option<String>,
    /// Every user slot, with whether its holder is still a managed user.
    pub users: Vec<UserReport>,
    /// Broken invariants after verification, in words (I1: no way in a person can use without
    /// keyward). Any makes `keyward verify` fail.
    pub violations: Vec<String>,
    /// Slots that are a problem short of an invariant (`weak-kdf`). Any makes `keyward verify`
    /// fail.
    pub findings: Vec<FindingReport>,
}

impl VerifyReport {
    /// The report of a volume whose service right stands as `service` (`detail` for anything
    /// but `ok`), before its users, violations and findings are filled in.
    pub fn service(volume: &str, service: &str, detail: Option<String>) -> Self {
        VerifyReport {
            volume: volume.to_owned(),
            service: service.to_owned(),
            detail,
            users: Vec::new(),
            violations: Vec::new(),
            findings: Vec::new(),
        }
    }
}

/// A user slot found by verification.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct UserReport {
    /// Login name in the token.
    pub user: String,
    /// Keyslot.
    pub slot: u32,
    /// `managed`, `not-managed` (left the managed set), `deleted` (no such user now) or
    /// `uid-changed` (the name now belongs to another uid).
    pub status: String,
    /// True if this run revoked the slot (`revoke_unmanaged = true`).
    pub revoked: bool,
    /// Why a revocation was not done, if it was attempted.
    pub detail: Option<String>,
}

/// A successful reply.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
#[non_exhaustive]
pub enum Reply {
    /// Answer to a hello.
    Hello {
        /// The helper's protocol version.
        version: u16,
    },
    /// Holders.
    Status(Vec<VolumeReport>),
    /// Bootstrap result: the service slot, and whether it was created now.
    Bootstrapped {
        /// The service slot.
        slot: u32,
        /// False if a working service slot already existed.
        created: bool,
    },
    /// A slot was granted.
    Granted {
        /// The new slot.
        slot: u32,
    },
    /// A slot was revoked.
    Revoked {
        /// The removed slot.
        slot: u32,
    },
    /// Verification results.
    Verified(Vec<VerifyReport>),
    /// A PAM event was queued; the work happens off the request path.
    Queued,
    /// A pending recovery key (standalone mode, admin only): show it once.
    RecoveryPending {
        /// Its slot.
        slot: u32,
        /// The key, in systemd's modhex form.
        key: WireSecret,
    },
    /// A pending recovery rotation, for the escrow server: ciphertext only.
    RecoveryEscrow {
        /// The pending slot.
        slot: u32,
        /// Names this rotation in the receipt.
        rotation_id: String,
        /// The key, age-encrypted to the server's recipient.
        ciphertext: Vec<u8>,
        /// Lowercase hex SHA-256 of `ciphertext`.
        sha256: String,
    },
    /// The pending recovery key was committed; `retired` slots were revoked.
    RecoveryCommitted {
        /// The new recovery slot.
        slot: u32,
        /// Previous recovery slots, now gone.
        retired: Vec<u32>,
    },
    /// The pending recovery key was dropped.
    RecoveryAborted {
        /// Its slot, if there was one.
        slot: Option<u32>,
    },
    /// The device id was recorded.
    DeviceSet,
    /// The service secret was rotated.
    ServiceRotated {
        /// The old service slot (now gone).
        old: u32,
        /// The new service slot.
        new: u32,
    },
    /// The keyward slots released (or, on a dry run, that would be).
    Released {
        /// Keyslots.
        slots: Vec<u32>,
    },
    /// A signed command was verified, recorded as used, and carried out.
    CommandDone {
        /// The command's id.
        id: String,
        /// What it did.
        outcome: CommandOutcome,
    },
    /// The policy in force.
    Policy(PolicyReport),
}

/// What a signed command did.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[non_exhaustive]
pub enum CommandOutcome {
    /// The recovery rotation has begun (a pending key, ciphertext only for the server); the
    /// helper cannot reach the server, so the agent now carries it: upload, receipt, commit.
    /// Until then the current key stays valid, and the agent's schedule resumes it if need be.
    RecoveryRotationBegun {
        /// The volume.
        volume: VolumeName,
        /// The pending slot.
        slot: u32,
    },
    /// The service secret was rotated.
    ServiceRotated {
        /// The volume.
        volume: VolumeName,
        /// The old service slot (now gone).
        old: u32,
        /// The new service slot.
        new: u32,
    },
    /// The user's keyward slot was revoked.
    UserRevoked {
        /// The volume.
        volume: VolumeName,
        /// The user.
        user: UserName,
        /// The removed slot.
        slot: u32,
    },
    /// The policy override was replaced; the policy now in force.
    PolicySet(PolicyReport),
}

impl std::fmt::Display for CommandOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CommandOutcome::RecoveryRotationBegun { volume, slot } => write!(
                f,
                "{volume}: recovery rotation begun (pending keyslot {slot}); the agent escrows and commits it"
            ),
            CommandOutcome::ServiceRotated { volume, old, new } => write!(
                f,
                "{volume}: service secret rotated (keyslot {old} -> {new})"
            ),
            CommandOutcome::UserRevoked { volume, user, slot } => {
                write!(f, "{volume}: {user}'s keyslot {slot} revoked")
            }
            CommandOutcome::PolicySet(p) => write!(
                f,
                "policy set: recovery_rotation_days = {}, revoke_unmanaged = {}",
                p.recovery_rotation_days, p.revoke_unmanaged
            ),
        }
    }
}

/// The policy values a signed command can change, as in force now.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PolicyReport {
    /// `[policy] recovery_rotation_days`, or the override's.
    pub recovery_rotation_days: u32,
    /// `[policy] revoke_unmanaged`, or the override's.
    pub revoke_unmanaged: bool,
    /// The command whose override is in force, if any.
    pub override_command: Option<String>,
}

/// The helper's answer to one request.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub enum Response {
    /// Done.
    Ok(Reply),
    /// Not done; nothing secret in the message.
    Error {
        /// The class of error.
        code: ErrorCode,
        /// What went wrong, quoted and safe to show.
        message: String,
    },
}

/// Why a frame was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// Length prefix of zero or above [`MAX_FRAME`].
    #[error("frame length {0} is outside 1..=65536")]
    BadLength(u32),
    /// The payload does not decode as a message.
    #[error("malformed message")]
    Malformed,
    /// The payload decodes but has bytes left over.
    #[error("trailing bytes after the message")]
    Trailing,
}

/// Validate a length prefix.
pub fn frame_len(prefix: [u8; 4]) -> Result<usize, FrameError> {
    let n = u32::from_be_bytes(prefix);
    let len = usize::try_from(n).map_err(|_| FrameError::BadLength(n))?;
    if len == 0 || len > MAX_FRAME {
        return Err(FrameError::BadLength(n));
    }
    Ok(len)
}

fn decode<'a, T: Deserialize<'a>>(payload: &'a [u8]) -> Result<T, FrameError> {
    let (v, rest) = postcard::take_from_bytes(payload).map_err(|_| FrameError::Malformed)?;
    if rest.is_empty() {
        Ok(v)
    } else {
        Err(FrameError::Trailing)
    }
}

/// What root's CLI may ask the agent, over the agent's own control socket (root only).
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
#[non_exhaustive]
pub enum AgentRequest {
    /// First frame.
    Hello {
        /// Protocol version.
        version: u16,
    },
    /// Enroll with the escrow server at `url` using a single-use token.
    Enroll {
        /// The server's base URL.
        url: String,
        /// The enrollment token.
        token: WireSecret,
    },
    /// Rotate a volume's recovery key now, escrowed: begin, upload, commit on the receipt.
    RotateRecovery {
        /// The volume.
        volume: VolumeName,
    },
    /// Run the escrow round (check in, rotate what is due) now rather than at the next
    /// interval; sent after enrollment, once the helper knows the device id.
    CheckInNow,
}

/// The agent's replies.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
#[non_exhaustive]
pub enum AgentReply {
    /// Answer to a hello.
    Hello {
        /// Protocol version.
        version: u16,
    },
    /// Enrolled; the server's id for this device.
    Enrolled {
        /// Device id.
        device_id: String,
    },
    /// The escrow round was scheduled.
    Scheduled,
    /// The recovery key was rotated and escrowed.
    Rotated {
        /// The new recovery slot.
        slot: u32,
        /// The server's escrow id.
        escrow_id: String,
    },
}

/// The agent's answer.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub enum AgentResponse {
    /// Done.
    Ok(AgentReply),
    /// Not done.
    Error {
        /// Class of error.
        code: ErrorCode,
        /// What went wrong.
        message: String,
    },
}

/// Decode an agent request payload.
pub fn decode_agent_request(payload: &[u8]) -> Result<AgentRequest, FrameError> {
    decode(payload)
}

/// Decode an agent response payload.
pub fn decode_agent_response(payload: &[u8]) -> Result<AgentResponse, FrameError> {
    decode(payload)
}

/// Decode a request payload (after the length prefix). Pure; fuzzed.
pub fn decode_request(payload: &[u8]) -> Result<Request, FrameError> {
    decode(payload)
}

/// Decode a response payload.
pub fn decode_response(payload: &[u8]) -> Result<Response, FrameError> {
    decode(payload)
}

/// Encode a message as a complete frame (prefix + payload). Fails only for a message larger
/// than [`MAX_FRAME`], which the caller reports.
///
/// Frames carry passwords (a login capture, a grant), so the frame is serialized straight into
/// one buffer of the largest size a frame may have — no reallocation leaves a copy behind in
/// freed memory — and the buffer, spare capacity included, is wiped when dropped.
pub fn encode_frame<T: Serialize>(msg: &T) -> Result<Zeroizing<Vec<u8>>, FrameError> {
    let mut out = Zeroizing::new(vec![0u8; 4 + MAX_FRAME]);
    let n = match postcard::to_slice(msg, &mut out[4..]) {
        Ok(payload) => payload.len(),
        Err(postcard::Error::SerializeBufferFull) => {
            let over = u32::try_from(MAX_FRAME + 1).unwrap_or(u32::MAX);
            return Err(FrameError::BadLength(over));
        }
        Err(_) => return Err(FrameError::Malformed),
    };
    // n <= MAX_FRAME (64 KiB): it fits a u32.
    let prefix = u32::try_from(n).map_err(|_| FrameError::BadLength(u32::MAX))?;
    out[..4].copy_from_slice(&prefix.to_be_bytes());
    out.truncate(4 + n);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_first_frame_must_be_the_only_hello_of_this_version() {
        let hello = |version| Request::Hello { version };
        let status = Request::Status { volume: None };
        assert_eq!(
            hello(PROTOCOL_VERSION).greeting(false),
            Ok(Some(Reply::Hello {
                version: PROTOCOL_VERSION
            }))
        );
        assert_eq!(status.greeting(true), Ok(None));
        let old = hello(PROTOCOL_VERSION - 1).greeting(false);
        assert!(
            old.as_ref().is_err_and(|e| e.contains("is not supported")),
            "{old:?}"
        );
        for (frame, greeted) in [(&status, false), (&hello(PROTOCOL_VERSION), true)] {
            assert_eq!(
                frame.greeting(greeted),
                Err("the first frame must be the only hello".to_owned())
            );
        }
    }

    /// Each recovery request maps to the operation of the same name, and that operation keeps
    /// the audit name the audit trail has always used (`recovery-show` for the standalone
    /// begin, `recovery-begin` for the escrowed one): renaming the Rust variants changed no
    /// string an admin or the agent reads.
    #[test]
    fn recovery_requests_name_their_operation_and_keep_their_audit_names() {
        let volume = VolumeName::parse("data").expect("name");
        let secret = WireSecret::from_secret(&Secret::copy_from(b"x"));
        let receipt = crate::escrow::Receipt {
            device: "d".into(),
            volume: volume.clone(),
            rotation_id: "r".into(),
            sha256: "s".into(),
            escrow_id: "e".into(),
            signature: Vec::new(),
        };
        let cases = [
            (
                Request::RecoveryBegin {
                    volume: volume.clone(),
                },
                Operation::RecoveryBegin,
                "recovery-show",
            ),
            (
                Request::RecoveryCommit {
                    volume: volume.clone(),
                    slot: 1,
                    confirm: secret,
                },
                Operation::RecoveryCommit,
                "recovery-confirm",
            ),
            (
                Request::RecoveryEscrowBegin {
                    volume: volume.clone(),
                },
                Operation::RecoveryEscrowBegin,
                "recovery-begin",
            ),
            (
                Request::RecoveryEscrowCommit { volume, receipt },
                Operation::RecoveryEscrowCommit,
                "recovery-commit",
            ),
        ];
        for (request, op, audit) in cases {
            assert_eq!(request.operation(), Some(op), "{request:?}");
            assert_eq!(op.name(), audit);
        }
    }

    fn roundtrip(r: &Request) -> Request {
        let f = encode_frame(r).expect("encodes");
        let len = frame_len([f[0], f[1], f[2], f[3]]).expect("len");
        decode_request(&f[4..4 + len]).expect("decodes")
    }

    #[test]
    fn requests_roundtrip() {
        let v = VolumeName::parse("root").expect("valid");
        let u = UserName::parse("alice").expect("valid");
        let reqs = [
            Request::Hello {
                version: PROTOCOL_VERSION,
            },
            Request::Status { volume: None },
            Request::Grant {
                volume: v.clone(),
                user: u.clone(),
                passphrase: WireSecret::from_secret(&Secret::copy_from(b"pw")),
            },
            Request::Revoke {
                volume: v.clone(),
                user: u.clone(),
            },
            Request::Command {
                signed: SignedCommand {
                    command: crate::command::Command {
                        id: "0123456789abcdef".into(),
                        device: "dev-1".into(),
                        issued: 1,
                        expires: 2,
                        action: crate::command::Action::RevokeUser { volume: v, user: u },
                    },
                    signature: vec![0; 64],
                },
            },
            Request::Policy,
        ];
        for r in &reqs {
            assert_eq!(&roundtrip(r), r);
        }
    }

    #[test]
    fn hostile_names_do_not_decode() {
        // Hand-encode a Revoke with a user name the newtype refuses.
        #[derive(Serialize)]
        enum Raw {
            _Hello {
                version: u16,
            },
            _Status {
                volume: Option<String>,
            },
            _Bootstrap {
                volume: String,
                passphrase: Vec<u8>,
            },
            _Grant {
                volume: String,
                user: String,
                passphrase: Vec<u8>,
            },
            Revoke {
                volume: String,
                user: String,
            },
        }
        for (vol, user) in [
            ("root", "../etc"),
            ("root", "-r"),
            ("../x", "alice"),
            ("root", "a\nb"),
        ] {
            let bytes = postcard::to_allocvec(&Raw::Revoke {
                volume: vol.into(),
                user: user.into(),
            })
            .expect("encodes");
            assert_eq!(
                decode_request(&bytes),
                Err(FrameError::Malformed),
                "{vol:?} {user:?}"
            );
        }
    }

    #[test]
    fn lengths() {
        assert!(frame_len([0, 0, 0, 0]).is_err());
        assert!(frame_len([0, 1, 0, 1]).is_err());
        assert_eq!(frame_len([0, 1, 0, 0]), Ok(MAX_FRAME));
        assert!(frame_len([0xff; 4]).is_err());
        assert_eq!(decode_request(&[0xff]), Err(FrameError::Malformed));
        let mut f = encode_frame(&Request::Status { volume: None }).expect("encodes");
        f.push(0);
        assert_eq!(decode_request(&f[4..]), Err(FrameError::Trailing));
    }

    #[test]
    fn frames_over_the_limit_are_refused_and_frames_at_it_are_not() {
        let huge = Request::Bootstrap {
            volume: VolumeName::parse("root").expect("valid"),
            passphrase: WireSecret::from_secret(&Secret::copy_from(&vec![7; MAX_FRAME])),
        };
        assert!(matches!(encode_frame(&huge), Err(FrameError::BadLength(_))));
        let f = encode_frame(&Request::Status { volume: None }).expect("encodes");
        let len = frame_len([f[0], f[1], f[2], f[3]]).expect("len");
        assert_eq!(f.len(), 4 + len);
    }

    #[test]
    fn secrets_are_not_debug_printed() {
        let r = Request::Bootstrap {
            volume: VolumeName::parse("root").expect("valid"),
            passphrase: WireSecret::from_secret(&Secret::copy_from(b"hunter2")),
        };
        assert!(!format!("{r:?}").contains("hunter2"));
    }

    proptest! {
        #[test]
        fn decoding_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode_request(&bytes);
            let _ = decode_response(&bytes);
        }
    }
}
