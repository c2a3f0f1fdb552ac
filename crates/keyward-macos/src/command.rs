//! One command keyward runs: a fixed program, an argv array built only from fixed flags and
//! typed operands, and the secrets it needs on stdin. There is deliberately no way to turn a
//! [`Secret`] into an [`Arg`]: argv is world-readable (`ps`), stdin is not.

use std::fmt;

use keyward_core::Secret;

use crate::names::{GeneratedUid, ServiceUid, ShortName, VolumeOperand};

/// The tools keyward runs, by absolute path (never looked up in `PATH`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Program {
    /// `/usr/sbin/sysadminctl`: Secure Token status, grant, removal; account deletion.
    Sysadminctl,
    /// `/usr/bin/fdesetup`: FileVault status, users, the personal recovery key.
    Fdesetup,
    /// `/usr/bin/dscl`: the local directory (the hidden service account, passwords).
    Dscl,
    /// `/usr/sbin/diskutil`: proving a password unlocks the volume (`-verify`).
    Diskutil,
    /// `/usr/bin/security`: the authorization database (`authorizationdb read/write`).
    Security,
}

impl Program {
    /// Absolute path.
    pub fn path(self) -> &'static str {
        match self {
            Program::Sysadminctl => "/usr/sbin/sysadminctl",
            Program::Fdesetup => "/usr/bin/fdesetup",
            Program::Dscl => "/usr/bin/dscl",
            Program::Diskutil => "/usr/sbin/diskutil",
            Program::Security => "/usr/bin/security",
        }
    }

    /// Short name, for messages.
    pub fn name(self) -> &'static str {
        match self {
            Program::Sysadminctl => "sysadminctl",
            Program::Fdesetup => "fdesetup",
            Program::Dscl => "dscl",
            Program::Diskutil => "diskutil",
            Program::Security => "security",
        }
    }
}

/// One argv element: a fixed flag, or an operand from a typed value. Operands can never start
/// with `-` (their grammars exclude it), because these tools have no `--`.
#[derive(Clone, PartialEq, Eq)]
pub struct Arg(ArgInner);

#[derive(Clone, PartialEq, Eq)]
enum ArgInner {
    Fixed(&'static str),
    Operand(String),
}

impl Arg {
    /// A flag or keyword written in the source (`-secureTokenOn`, `.`, `IsHidden`, `-`).
    pub const fn fixed(s: &'static str) -> Self {
        Arg(ArgInner::Fixed(s))
    }

    /// An account short name.
    pub fn name(n: &ShortName) -> Self {
        Arg(ArgInner::Operand(n.as_str().to_owned()))
    }

    /// A directory path such as `/Users/_keyward` (from a short name).
    pub fn user_path(n: &ShortName) -> Self {
        Arg(ArgInner::Operand(n.user_path()))
    }

    /// A group's directory path, `/Groups/NAME`.
    pub fn group_path(n: &ShortName) -> Self {
        Arg(ArgInner::Operand(format!("/Groups/{}", n.as_str())))
    }

    /// A numeric id.
    pub fn uid(n: ServiceUid) -> Self {
        Arg(ArgInner::Operand(n.get().to_string()))
    }

    /// A crypto user UUID.
    pub fn uuid(u: &GeneratedUid) -> Self {
        Arg(ArgInner::Operand(u.as_str().to_owned()))
    }

    /// A volume for `diskutil`.
    pub fn volume(v: &VolumeOperand) -> Self {
        Arg(ArgInner::Operand(v.as_str().to_owned()))
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        match &self.0 {
            ArgInner::Fixed(s) => s,
            ArgInner::Operand(s) => s,
        }
    }

    /// True for operands (typed values), false for fixed flags.
    pub fn is_operand(&self) -> bool {
        matches!(self.0, ArgInner::Operand(_))
    }
}

impl fmt::Debug for Arg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

/// What the command reads on stdin.
#[derive(Debug)]
#[non_exhaustive]
pub enum Stdin {
    /// Nothing (stdin is `/dev/null`).
    Empty,
    /// Secret bytes: answers to `-` prompts, one per line, or an `-inputplist` property list,
    /// or commands for `dscl`'s interactive mode. Wiped on drop.
    Secret(Secret),
    /// Bytes that are not secret (an authorization right for `security authorizationdb
    /// write`): output of such a command may be quoted in errors.
    Data(Vec<u8>),
}

impl Stdin {
    /// The bytes to write.
    pub fn bytes(&self) -> &[u8] {
        match self {
            Stdin::Empty => &[],
            Stdin::Secret(s) => s.expose(),
            Stdin::Data(d) => d,
        }
    }
}

/// What a command is for; parsers and the simulated Mac dispatch on it, messages name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Purpose {
    /// `sysadminctl -secureTokenStatus`.
    TokenStatus,
    /// `sysadminctl -secureTokenOn`.
    TokenOn,
    /// `sysadminctl -secureTokenOff`.
    TokenOff,
    /// `sysadminctl -deleteUser`.
    DeleteUser,
    /// `fdesetup status`.
    FileVaultStatus,
    /// `fdesetup list`.
    FileVaultList,
    /// `fdesetup haspersonalrecoverykey`.
    HasRecoveryKey,
    /// `fdesetup changerecovery -personal`.
    ChangeRecovery,
    /// `fdesetup validaterecovery`.
    ValidateRecovery,
    /// `fdesetup removerecovery -personal`.
    RemoveRecovery,
    /// `dscl . -list`.
    DirectoryList,
    /// `dscl . -read`.
    DirectoryRead,
    /// `dscl . -create`, `-append`, `-delete` of an attribute value.
    DirectoryWrite,
    /// `dscl .` interactive `passwd`: a password change with the old password.
    ChangePassword,
    /// `dscl .` interactive `passwd` of an account that holds no Secure Token yet.
    SetInitialPassword,
    /// `diskutil apfs unlockVolume -verify`.
    VerifyUnlock,
    /// `security authorizationdb read system.login.console`.
    ReadLoginRight,
    /// `security authorizationdb write system.login.console` (the right on stdin).
    WriteLoginRight,
}

/// A command, ready for a [`crate::runner::Runner`].
#[derive(Debug)]
pub struct Invocation {
    /// What for.
    pub purpose: Purpose,
    /// The program.
    pub program: Program,
    /// Its arguments (without `argv[0]`).
    pub args: Vec<Arg>,
    /// Its stdin.
    pub stdin: Stdin,
}

impl Invocation {
    /// A command without stdin.
    pub fn new(purpose: Purpose, program: Program, args: Vec<Arg>) -> Self {
        Invocation {
            purpose,
            program,
            args,
            stdin: Stdin::Empty,
        }
    }

    /// The same command, reading `secret` on stdin.
    pub fn with_stdin(mut self, secret: Secret) -> Self {
        self.stdin = Stdin::Secret(secret);
        self
    }

    /// The same command, reading `data` (nothing secret) on stdin.
    pub fn with_data(mut self, data: Vec<u8>) -> Self {
        self.stdin = Stdin::Data(data);
        self
    }

    /// argv as strings (for the runner, and for tests).
    pub fn argv(&self) -> Vec<&str> {
        self.args.iter().map(Arg::as_str).collect()
    }

    /// True if stdin carries a secret: output of such a command is never quoted in errors,
    /// in case a tool echoes what it read.
    pub fn has_secret_stdin(&self) -> bool {
        matches!(self.stdin, Stdin::Secret(_))
    }

    /// `program arg arg …`, for logs (no secrets can be in argv).
    pub fn display(&self) -> String {
        let mut s = self.program.name().to_owned();
        for a in &self.args {
            s.push(' ');
            s.push_str(a.as_str());
        }
        s
    }
}
