//! The real [`Runner`]: `std::process` with an absolute path, a cleared environment, secrets on
//! stdin, both outputs captured (at most 1 MiB each, wiped on drop) and a deadline. Public on
//! macOS only; compiled for Linux test builds too, so its plumbing is exercised with `/bin/sh`.

use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use zeroize::Zeroizing;

use crate::command::Invocation;
use crate::runner::{Exit, Output, RunError, Runner};

const MAX_OUTPUT: u64 = 1024 * 1024;

/// Runs Apple's tools for real.
#[derive(Debug, Clone)]
pub struct ProcessRunner {
    deadline: Duration,
    terminal: Terminal,
}

/// When a controlling terminal makes the runner refuse a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Terminal {
    /// Always (the helper, a launchd daemon, never has one).
    Refuse,
    /// Only for a command that carries a secret on stdin: its `-` prompts would read the
    /// terminal. Commands without a secret (`security authorizationdb`) prompt for nothing.
    RefuseWithSecrets,
}

/// Whether a command must not run while the process has a controlling terminal.
fn refuses_terminal(rule: Terminal, carries_secret: bool) -> bool {
    match rule {
        Terminal::Refuse => true,
        Terminal::RefuseWithSecrets => carries_secret,
    }
}

impl ProcessRunner {
    /// The helper's runner: refuses every command while a terminal is open, and kills any
    /// command still running after `deadline` (sysadminctl waiting at a prompt it cannot read
    /// would otherwise hang the helper).
    pub fn new(deadline: Duration) -> Self {
        ProcessRunner {
            deadline,
            terminal: Terminal::Refuse,
        }
    }

    /// The CLI's runner, for `keyward install` typed by an administrator at a terminal: runs
    /// commands that carry no secret (the authorizationdb edit) and still refuses any that
    /// does.
    pub fn in_admin_shell(deadline: Duration) -> Self {
        ProcessRunner {
            deadline,
            terminal: Terminal::RefuseWithSecrets,
        }
    }
}

impl Runner for ProcessRunner {
    fn run(&mut self, inv: &Invocation) -> Result<Output, RunError> {
        // A controlling terminal means the `-` prompts would read the terminal, not stdin.
        if refuses_terminal(self.terminal, inv.has_secret_stdin())
            && std::fs::File::open("/dev/tty").is_ok()
        {
            return Err(RunError::ControllingTerminal(inv.program.name()));
        }
        run_path(
            Path::new(inv.program.path()),
            inv.program.name(),
            &inv.argv(),
            inv.stdin.bytes(),
            self.deadline,
        )
    }
}

fn io_err(program: &'static str) -> impl Fn(std::io::Error) -> RunError {
    move |e| RunError::Io {
        program,
        reason: e.to_string(),
    }
}

fn collect<R: Read + Send + 'static>(
    stream: Option<R>,
) -> std::thread::JoinHandle<std::io::Result<Zeroizing<Vec<u8>>>> {
    std::thread::spawn(move || {
        let mut buf = Zeroizing::new(Vec::new());
        if let Some(s) = stream {
            s.take(MAX_OUTPUT).read_to_end(&mut buf)?;
        }
        Ok(buf)
    })
}

/// Run `path` with `args`, writing `stdin` and closing it.
pub(crate) fn run_path(
    path: &Path,
    program: &'static str,
    args: &[&str],
    stdin: &[u8],
    deadline: Duration,
) -> Result<Output, RunError> {
    let mut child = Command::new(path)
        .args(args)
        .env_clear()
        .env("PATH", "/usr/bin:/bin:/usr/sbin:/sbin")
        .env("LC_ALL", "C")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so a deadline kills whatever it started too (a child left
        // holding the output pipes would otherwise keep the helper waiting).
        .process_group(0)
        .spawn()
        .map_err(|e| RunError::Spawn {
            program,
            reason: e.to_string(),
        })?;
    let out = collect(child.stdout.take());
    let err = collect(child.stderr.take());
    if let Some(mut input) = child.stdin.take() {
        // A tool that exits without reading its stdin closes the pipe: not an error here, its
        // output says what happened.
        match input.write_all(stdin) {
            Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(io_err(program)(e));
            }
            _ => {}
        }
    }
    let started = Instant::now();
    let exit = loop {
        if let Some(status) = child.try_wait().map_err(io_err(program))? {
            break match status.code() {
                Some(c) => Exit::Code(c),
                None => Exit::Signal,
            };
        }
        if started.elapsed() > deadline {
            let group = rustix::process::Pid::from_child(&child);
            let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
            let _ = child.kill();
            let _ = child.wait();
            break Exit::TimedOut;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let join = |h: std::thread::JoinHandle<std::io::Result<Zeroizing<Vec<u8>>>>| {
        h.join()
            .map_err(|_| RunError::Io {
                program,
                reason: "output reader panicked".into(),
            })?
            .map_err(io_err(program))
    };
    let stdout = join(out)?;
    let stderr = join(err)?;
    Ok(Output {
        exit,
        stdout,
        stderr,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str, stdin: &[u8], deadline: Duration) -> Output {
        run_path(Path::new("/bin/sh"), "sh", &["-c", script], stdin, deadline).expect("runs")
    }

    #[test]
    fn stdin_is_written_and_both_streams_captured() {
        let o = sh(
            "read a; read b; echo \"$b\"; echo \"$a\" >&2; exit 3",
            b"one\ntwo\n",
            Duration::from_secs(10),
        );
        assert_eq!(o.exit, Exit::Code(3));
        assert_eq!(o.stdout_text(), "two\n");
        assert_eq!(o.stderr_text(), "one\n");
    }

    #[test]
    fn environment_is_cleared() {
        let o = sh("env", b"", Duration::from_secs(10));
        let mut vars: Vec<&str> = o
            .stdout_text()
            .lines()
            .filter_map(|l| l.split('=').next())
            .filter(|k| !matches!(*k, "PWD" | "SHLVL" | "_" | "OLDPWD"))
            .collect();
        vars.sort_unstable();
        assert_eq!(vars, ["LC_ALL", "PATH"]);
    }

    #[test]
    fn a_hanging_command_is_killed_at_its_deadline() {
        let o = sh("sleep 30", b"", Duration::from_millis(200));
        assert_eq!(o.exit, Exit::TimedOut);
    }

    #[test]
    fn a_command_that_ignores_stdin_is_fine() {
        let big = vec![b'x'; 256 * 1024];
        let o = sh("exit 0", &big, Duration::from_secs(10));
        assert_eq!(o.exit, Exit::Code(0));
    }

    #[test]
    fn only_the_admin_shell_runner_runs_commands_without_secrets_at_a_terminal() {
        assert!(refuses_terminal(Terminal::Refuse, false));
        assert!(refuses_terminal(Terminal::Refuse, true));
        assert!(refuses_terminal(Terminal::RefuseWithSecrets, true));
        assert!(!refuses_terminal(Terminal::RefuseWithSecrets, false));
        assert_eq!(
            ProcessRunner::new(Duration::ZERO).terminal,
            Terminal::Refuse
        );
        assert_eq!(
            ProcessRunner::in_admin_shell(Duration::ZERO).terminal,
            Terminal::RefuseWithSecrets
        );
    }

    #[test]
    fn a_missing_program_is_a_spawn_error() {
        let r = run_path(
            Path::new("/nonexistent/sysadminctl"),
            "sysadminctl",
            &[],
            b"",
            Duration::from_secs(1),
        );
        assert!(matches!(r, Err(RunError::Spawn { .. })));
    }
}
