//! Signed device commands (issue 6): the escrow server tells one device to act now — rotate a
//! recovery key or a service secret, revoke a user's unlock right, change a small, typed set of
//! policy values — in a [`Command`] it signs with its Ed25519 key. The agent only relays it;
//! the helper acts only on a command that verifies against the key pinned in the root-owned
//! config, names this device, is inside its validity window, and whose id was never used
//! before (the replay journal is [`crate::command_journal`]).
//!
//! Pure: the caller supplies the clock. The signed bytes are [`Command::message`], built like
//! [`crate::escrow::Receipt::message`]: a context line, then one field per line, every field
//! restricted to characters that cannot contain a line break, so no two commands share a
//! message.

use ed25519_dalek::{Signature, Signer, SigningKey};
use serde::{Deserialize, Serialize};

use crate::ids::{UserName, VolumeName};

/// Domain separation for the signed message.
pub const CONTEXT: &str = "keyward command v1";
/// How far the device's and the server's clocks may disagree, in seconds.
pub const CLOCK_SKEW_SECS: u64 = 5 * 60;
/// The longest validity window (`expires - issued`) a device accepts, in seconds.
pub const MAX_LIFETIME_SECS: u64 = 7 * 86_400;
/// The largest `recovery_rotation_days` a policy command may set (ten years).
pub const MAX_ROTATION_DAYS: u32 = 3650;
/// Command ids: at least this long, so a server's random ids do not collide by accident.
pub const MIN_ID_LEN: usize = 16;

/// One instruction for one device, as the server signs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Command {
    /// Unique per command (`[A-Za-z0-9_-]{16,64}`); a device runs each id at most once.
    pub id: String,
    /// The device it is for (the id the server gave it at enrollment).
    pub device: String,
    /// When the server issued it (Unix seconds).
    pub issued: u64,
    /// After this (Unix seconds, plus the clock skew allowance) it is refused.
    pub expires: u64,
    /// What to do.
    pub action: Action,
}

/// What a command asks for. Closed and typed: nothing names a path, a program or a slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
#[non_exhaustive]
pub enum Action {
    /// Rotate the volume's recovery key now (escrowed: the agent carries it to the server).
    RotateRecovery {
        /// The volume.
        volume: VolumeName,
    },
    /// Rotate the volume's service secret now.
    RotateService {
        /// The volume.
        volume: VolumeName,
    },
    /// Remove the user's keyward unlock right on the volume (never the last way in).
    RevokeUser {
        /// The volume.
        volume: VolumeName,
        /// The user whose keyward slot goes.
        user: UserName,
    },
    /// Replace the server's policy override: each value given overrides `keyward.toml`'s,
    /// each absent one falls back to it. An override older than the one in force is refused.
    SetPolicy {
        /// Recovery key rotation interval in days (0: never by age).
        recovery_rotation_days: Option<u32>,
        /// Revoke the slots of users who left the managed set.
        revoke_unmanaged: Option<bool>,
    },
}

impl Action {
    /// The action's stable name (its JSON tag and its line in the signed message).
    pub fn kind(&self) -> &'static str {
        match self {
            Action::RotateRecovery { .. } => "rotate-recovery",
            Action::RotateService { .. } => "rotate-service",
            Action::RevokeUser { .. } => "revoke-user",
            Action::SetPolicy { .. } => "set-policy",
        }
    }

    /// The volume it acts on, if any.
    pub fn volume(&self) -> Option<&VolumeName> {
        match self {
            Action::RotateRecovery { volume }
            | Action::RotateService { volume }
            | Action::RevokeUser { volume, .. } => Some(volume),
            Action::SetPolicy { .. } => None,
        }
    }

    /// The user it acts on, if any.
    pub fn user(&self) -> Option<&UserName> {
        match self {
            Action::RevokeUser { user, .. } => Some(user),
            _ => None,
        }
    }

    /// The action's lines of the signed message: its kind, then its fields in order.
    fn lines(&self) -> Vec<String> {
        fn or_dash<T: ToString>(v: Option<T>) -> String {
            v.map_or_else(|| "-".to_owned(), |v| v.to_string())
        }
        let mut lines = vec![self.kind().to_owned()];
        match self {
            Action::RotateRecovery { volume } | Action::RotateService { volume } => {
                lines.push(volume.to_string());
            }
            Action::RevokeUser { volume, user } => {
                lines.push(volume.to_string());
                lines.push(user.to_string());
            }
            Action::SetPolicy {
                recovery_rotation_days,
                revoke_unmanaged,
            } => {
                lines.push(or_dash(*recovery_rotation_days));
                lines.push(or_dash(*revoke_unmanaged));
            }
        }
        lines
    }
}

/// Why a command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CommandError {
    /// The pinned server key in the config is not a valid Ed25519 public key.
    #[error("the configured server signing key is not a valid Ed25519 public key")]
    BadServerKey,
    /// The signature does not verify: forged, altered, or signed by another server.
    #[error("the command's signature does not verify against the pinned server key")]
    BadSignature,
    /// Genuine, but for another device.
    #[error("the command is for another device")]
    WrongDevice,
    /// Its validity window has passed.
    #[error("the command has expired")]
    Expired,
    /// Issued further in the future than the clock skew allowance.
    #[error("the command is not valid yet (issued in the future)")]
    NotYetValid,
    /// Valid for longer than a device accepts.
    #[error("the command's validity window is longer than {MAX_LIFETIME_SECS}s")]
    LifetimeTooLong,
    /// A field is malformed.
    #[error("the command's {0} is malformed")]
    Malformed(&'static str),
    /// This id was already used on this device.
    #[error("the command was already used (replay)")]
    Replayed,
    /// The replay journal holds as many unexpired ids as it may; nothing new is accepted
    /// until some expire.
    #[error("too many unexpired commands; try again after some expire")]
    JournalFull,
}

/// `[A-Za-z0-9_-]` of a length in `len`.
pub(crate) fn token_ok(s: &str, len: std::ops::RangeInclusive<usize>) -> bool {
    len.contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl Command {
    /// The exact bytes the server signs:
    ///
    /// ```text
    /// keyward command v1
    /// <id>
    /// <device>
    /// <issued>
    /// <expires>
    /// <action kind>
    /// <action fields, one per line: volume [user] | recovery_rotation_days revoke_unmanaged>
    /// ```
    /// each line ending in `\n`; an absent policy value is `-`, booleans are `true`/`false`.
    pub fn message(&self) -> Vec<u8> {
        let mut m = format!(
            "{CONTEXT}\n{}\n{}\n{}\n{}\n",
            self.id, self.device, self.issued, self.expires
        );
        for line in self.action.lines() {
            m.push_str(&line);
            m.push('\n');
        }
        m.into_bytes()
    }

    /// True once the command can no longer verify at `now` (its expiry plus the clock skew
    /// allowance has passed); the replay journal forgets such ids.
    pub fn expired_at(expires: u64, now: u64) -> bool {
        now > expires.saturating_add(CLOCK_SKEW_SECS)
    }

    /// The checks that need no key: field formats and the window's shape.
    fn check_format(&self) -> Result<(), CommandError> {
        if !token_ok(&self.id, MIN_ID_LEN..=64) {
            return Err(CommandError::Malformed("id"));
        }
        if !token_ok(&self.device, 1..=64) {
            return Err(CommandError::Malformed("device"));
        }
        if self.expires <= self.issued {
            return Err(CommandError::Malformed("validity window"));
        }
        if self.expires - self.issued > MAX_LIFETIME_SECS {
            return Err(CommandError::LifetimeTooLong);
        }
        if let Action::SetPolicy {
            recovery_rotation_days: Some(days),
            ..
        } = self.action
        {
            if days > MAX_ROTATION_DAYS {
                return Err(CommandError::Malformed("recovery_rotation_days"));
            }
        }
        Ok(())
    }
}

/// A command and the server's Ed25519 signature over [`Command::message`]: what travels from
/// the server through the agent to the helper (JSON to the agent, a frame to the helper).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedCommand {
    /// The command.
    pub command: Command,
    /// 64 bytes: Ed25519 over `command.message()`.
    pub signature: Vec<u8>,
}

impl SignedCommand {
    /// Sign `command` (the server's side; also used by tests).
    pub fn sign(command: Command, key: &SigningKey) -> Self {
        let signature = key.sign(&command.message()).to_bytes().to_vec();
        SignedCommand { command, signature }
    }

    /// Verify against the pinned server key (base64 of 32 bytes), this device's id and the
    /// time `now` (Unix seconds); the command if it may be acted on. Strict Ed25519
    /// verification, as for receipts. Uniqueness is the caller's journal's job.
    pub fn verify(
        &self,
        server_key_b64: &str,
        my_device: &str,
        now: u64,
    ) -> Result<&Command, CommandError> {
        let c = &self.command;
        c.check_format()?;
        let key = crate::escrow::pinned_key(server_key_b64).ok_or(CommandError::BadServerKey)?;
        let sig: [u8; 64] = self
            .signature
            .as_slice()
            .try_into()
            .map_err(|_| CommandError::BadSignature)?;
        key.verify_strict(&c.message(), &Signature::from_bytes(&sig))
            .map_err(|_| CommandError::BadSignature)?;
        // Only a genuine command gets this far; now it must be for us, and current.
        if c.device != my_device {
            return Err(CommandError::WrongDevice);
        }
        if c.issued > now.saturating_add(CLOCK_SKEW_SECS) {
            return Err(CommandError::NotYetValid);
        }
        if Command::expired_at(c.expires, now) {
            return Err(CommandError::Expired);
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use proptest::prelude::*;

    const NOW: u64 = 1_800_000_000;

    fn server() -> SigningKey {
        SigningKey::from_bytes(&[7u8; 32])
    }

    fn pinned() -> String {
        base64::engine::general_purpose::STANDARD.encode(server().verifying_key().to_bytes())
    }

    fn vol(s: &str) -> VolumeName {
        VolumeName::parse(s).expect("valid")
    }

    fn command(action: Action) -> Command {
        Command {
            id: "0123456789abcdef0123".into(),
            device: "dev-1".into(),
            issued: NOW,
            expires: NOW + 3600,
            action,
        }
    }

    fn revoke() -> Command {
        command(Action::RevokeUser {
            volume: vol("data"),
            user: UserName::parse("alice").expect("valid"),
        })
    }

    #[test]
    fn a_genuine_command_verifies() {
        for action in [
            Action::RotateRecovery {
                volume: vol("data"),
            },
            Action::RotateService {
                volume: vol("data"),
            },
            revoke().action,
            Action::SetPolicy {
                recovery_rotation_days: Some(30),
                revoke_unmanaged: None,
            },
        ] {
            let signed = SignedCommand::sign(command(action), &server());
            assert_eq!(signed.verify(&pinned(), "dev-1", NOW), Ok(&signed.command));
        }
    }

    #[test]
    fn the_message_is_the_documented_one() {
        assert_eq!(
            String::from_utf8(revoke().message()).expect("utf-8"),
            format!(
                "keyward command v1\n0123456789abcdef0123\ndev-1\n{NOW}\n{}\nrevoke-user\ndata\nalice\n",
                NOW + 3600
            )
        );
        let policy = command(Action::SetPolicy {
            recovery_rotation_days: None,
            revoke_unmanaged: Some(true),
        });
        assert!(String::from_utf8(policy.message())
            .expect("utf-8")
            .ends_with("\nset-policy\n-\ntrue\n"));
    }

    #[test]
    fn forged_redirected_and_untimely_commands_are_refused() {
        let forger = SigningKey::from_bytes(&[8u8; 32]);
        let forged = SignedCommand::sign(revoke(), &forger);
        assert_eq!(
            forged.verify(&pinned(), "dev-1", NOW),
            Err(CommandError::BadSignature)
        );
        let genuine = SignedCommand::sign(revoke(), &server());
        assert_eq!(
            genuine.verify(&pinned(), "dev-2", NOW),
            Err(CommandError::WrongDevice)
        );
        let late = NOW + 3600 + CLOCK_SKEW_SECS;
        assert!(genuine.verify(&pinned(), "dev-1", late).is_ok(), "skew");
        assert_eq!(
            genuine.verify(&pinned(), "dev-1", late + 1),
            Err(CommandError::Expired)
        );
        let early = NOW - CLOCK_SKEW_SECS;
        assert!(genuine.verify(&pinned(), "dev-1", early).is_ok(), "skew");
        assert_eq!(
            genuine.verify(&pinned(), "dev-1", early - 1),
            Err(CommandError::NotYetValid)
        );
        let mut short = genuine.clone();
        short.signature.pop();
        assert_eq!(
            short.verify(&pinned(), "dev-1", NOW),
            Err(CommandError::BadSignature)
        );
        assert_eq!(
            genuine.verify("not base64!", "dev-1", NOW),
            Err(CommandError::BadServerKey)
        );
    }

    #[test]
    fn malformed_commands_are_refused_before_the_signature() {
        type Case = (fn(&mut Command), CommandError);
        let cases: [Case; 6] = [
            (|c| c.id = "short".into(), CommandError::Malformed("id")),
            (|c| c.id.push('\n'), CommandError::Malformed("id")),
            (
                |c| c.device = "a b".into(),
                CommandError::Malformed("device"),
            ),
            (
                |c| c.expires = c.issued,
                CommandError::Malformed("validity window"),
            ),
            (
                |c| c.expires = c.issued + MAX_LIFETIME_SECS + 1,
                CommandError::LifetimeTooLong,
            ),
            (
                |c| {
                    c.action = Action::SetPolicy {
                        recovery_rotation_days: Some(MAX_ROTATION_DAYS + 1),
                        revoke_unmanaged: None,
                    }
                },
                CommandError::Malformed("recovery_rotation_days"),
            ),
        ];
        for (change, want) in cases {
            let mut c = revoke();
            change(&mut c);
            // Even when the server signed it.
            let signed = SignedCommand::sign(c, &server());
            assert_eq!(signed.verify(&pinned(), "dev-1", NOW), Err(want));
        }
        let week = command(Action::RotateService {
            volume: vol("data"),
        });
        let week = Command {
            expires: week.issued + MAX_LIFETIME_SECS,
            ..week
        };
        assert!(SignedCommand::sign(week, &server())
            .verify(&pinned(), "dev-1", NOW)
            .is_ok());
    }

    #[test]
    fn json_wire_format_roundtrips_and_is_strict() {
        let signed = SignedCommand::sign(revoke(), &server());
        let json = serde_json::to_string(&signed).expect("encodes");
        assert!(
            json.contains(r#""action":{"revoke-user":{"volume":"data","user":"alice"}}"#),
            "{json}"
        );
        let back: SignedCommand = serde_json::from_str(&json).expect("decodes");
        assert_eq!(back, signed);
        let extra = json.replacen("\"id\"", "\"extra\":1,\"id\"", 1);
        assert!(serde_json::from_str::<SignedCommand>(&extra).is_err());
        let hostile = json.replace("\"alice\"", "\"../root\"");
        assert!(serde_json::from_str::<SignedCommand>(&hostile).is_err());
        let policy: Action =
            serde_json::from_str(r#"{"set-policy":{"revoke_unmanaged":true}}"#).expect("decodes");
        assert_eq!(
            policy,
            Action::SetPolicy {
                recovery_rotation_days: None,
                revoke_unmanaged: Some(true)
            }
        );
        // And through the helper's frame codec.
        let bytes = postcard::to_allocvec(&signed).expect("encodes");
        assert_eq!(
            postcard::from_bytes::<SignedCommand>(&bytes).expect("decodes"),
            signed
        );
    }

    fn any_action() -> impl Strategy<Value = Action> {
        let volume = "[a-z0-9_][a-z0-9_-]{0,31}".prop_map(|s| vol(&s));
        let user = "[a-z_][a-z0-9_-]{0,30}".prop_map(|s| UserName::parse(&s).expect("valid"));
        prop_oneof![
            volume
                .clone()
                .prop_map(|volume| Action::RotateRecovery { volume }),
            volume
                .clone()
                .prop_map(|volume| Action::RotateService { volume }),
            (volume, user).prop_map(|(volume, user)| Action::RevokeUser { volume, user }),
            (
                proptest::option::of(0..=MAX_ROTATION_DAYS),
                proptest::option::of(any::<bool>())
            )
                .prop_map(|(d, r)| Action::SetPolicy {
                    recovery_rotation_days: d,
                    revoke_unmanaged: r
                }),
        ]
    }

    fn any_command() -> impl Strategy<Value = Command> {
        (
            "[A-Za-z0-9_-]{16,64}",
            "[A-Za-z0-9_-]{1,64}",
            0..86_400u64,
            1..=86_400u64,
            any_action(),
        )
            .prop_map(|(id, device, back, ahead, action)| Command {
                id,
                device,
                issued: NOW - back,
                expires: NOW + ahead,
                action,
            })
    }

    proptest! {
        /// Any change to any one field — the action included — breaks the signature: no two
        /// distinct commands share a message.
        #[test]
        fn any_single_field_change_breaks_the_signature(
            c in any_command(),
            other in any_command(),
            field in 0..5usize,
        ) {
            let signed = SignedCommand::sign(c.clone(), &server());
            prop_assert!(signed.verify(&pinned(), &c.device, NOW).is_ok());
            let mut changed = signed.clone();
            let t = &mut changed.command;
            match field {
                0 => t.id = other.id,
                1 => t.device = other.device,
                2 => t.issued = other.issued,
                3 => t.expires = other.expires,
                _ => t.action = other.action,
            }
            if changed.command != c {
                prop_assert_ne!(changed.command.message(), c.message());
                let device = changed.command.device.clone();
                let r = changed.verify(&pinned(), &device, NOW);
                prop_assert!(r.is_err(), "{:?}", r);
                if changed.command.check_format().is_ok() {
                    prop_assert_eq!(r, Err(CommandError::BadSignature));
                }
            }
        }

        #[test]
        fn distinct_commands_have_distinct_messages(a in any_command(), b in any_command()) {
            prop_assert_eq!(a == b, a.message() == b.message());
        }

        #[test]
        fn decoding_never_panics(json in ".{0,256}") {
            let _ = serde_json::from_str::<SignedCommand>(&json);
        }
    }
}
