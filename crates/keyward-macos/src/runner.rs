//! The seam between keyward's decisions and Apple's tools: a [`Runner`] runs one
//! [`Invocation`] and hands back what the tool printed and how it exited. The real one
//! (`process`, macOS only) is thin glue over `std::process`; tests use the simulated Mac in
//! `fake`, which answers with transcribed outputs.

use std::fmt;

use zeroize::Zeroizing;

use crate::command::Invocation;

/// How a command ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Exit {
    /// It exited with this status.
    Code(i32),
    /// A signal ended it.
    Signal,
    /// It ran past its deadline and was killed.
    TimedOut,
}

impl Exit {
    /// True for exit status 0. Never enough on its own: see `parse`.
    pub fn success(self) -> bool {
        self == Exit::Code(0)
    }
}

impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Exit::Code(c) => write!(f, "exit status {c}"),
            Exit::Signal => f.write_str("killed by a signal"),
            Exit::TimedOut => f.write_str("timed out"),
        }
    }
}

/// What a command printed. Both streams are wiped on drop: `fdesetup changerecovery` prints
/// the new recovery key on stdout.
pub struct Output {
    /// How it ended.
    pub exit: Exit,
    /// Standard output.
    pub stdout: Zeroizing<Vec<u8>>,
    /// Standard error.
    pub stderr: Zeroizing<Vec<u8>>,
}

impl Output {
    /// Build an output (the fake runner and tests).
    pub fn new(exit: Exit, stdout: &[u8], stderr: &[u8]) -> Self {
        Output {
            exit,
            stdout: Zeroizing::new(stdout.to_vec()),
            stderr: Zeroizing::new(stderr.to_vec()),
        }
    }

    /// Standard output as text (invalid UTF-8 becomes an empty string: no tool keyward
    /// parses prints it, and a parser then finds nothing it knows).
    pub fn stdout_text(&self) -> &str {
        std::str::from_utf8(&self.stdout).unwrap_or("")
    }

    /// Standard error as text.
    pub fn stderr_text(&self) -> &str {
        std::str::from_utf8(&self.stderr).unwrap_or("")
    }
}

impl fmt::Debug for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Output")
            .field("exit", &self.exit)
            .field("stdout_bytes", &self.stdout.len())
            .field("stderr_bytes", &self.stderr.len())
            .finish()
    }
}

/// Why a command could not be run at all (as opposed to running and failing).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// The program could not be started.
    #[error("could not start {program}: {reason}")]
    Spawn {
        /// Which.
        program: &'static str,
        /// The OS error.
        reason: String,
    },
    /// The process has a controlling terminal: the tools would prompt there instead of reading
    /// the secrets keyward writes to stdin. Only the helper (a launchd daemon) runs commands.
    #[error("refusing to run {0} with a controlling terminal: its password prompts would not read stdin")]
    ControllingTerminal(&'static str),
    /// Reading or writing the child's streams failed.
    #[error("i/o with {program}: {reason}")]
    Io {
        /// Which.
        program: &'static str,
        /// The OS error.
        reason: String,
    },
    /// A simulated Mac was asked something it was not scripted for (tests only).
    #[error("the simulated Mac cannot answer: {0}")]
    Unscripted(String),
}

/// Runs commands. Implementations must: use the program's absolute path, pass argv exactly,
/// write [`Invocation::stdin`] and close it, clear the environment (but a fixed `PATH` and
/// the C locale), never log stdin or stdout, and kill a command that outlives its deadline.
pub trait Runner {
    /// Run one command to completion.
    fn run(&mut self, invocation: &Invocation) -> Result<Output, RunError>;
}

impl<R: Runner + ?Sized> Runner for &mut R {
    fn run(&mut self, invocation: &Invocation) -> Result<Output, RunError> {
        (**self).run(invocation)
    }
}
