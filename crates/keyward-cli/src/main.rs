//! `keyward`: the administrator's command line (DESIGN.md section 8). Everything that touches a
//! volume goes through the root helper; secrets are read from a no-echo prompt or one line of
//! stdin, never from argv. Data goes to stdout, diagnostics to stderr; exit codes: 0 ok,
//! 1 error, 2 usage, 3 authentication failed, 4 refused by a safety rule, 5 helper unavailable,
//! 6 volume busy.
#![forbid(unsafe_code)]

mod audit_cmd;
mod install;
// The macOS install path: built for macOS, and for Linux tests, which drive it through the
// simulated Mac.
#[cfg(any(target_os = "macos", test))]
mod install_macos;
mod output;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use keyward_core::config::{Config, DEFAULT_PATH};
use keyward_core::ipc::{AgentReply, AgentRequest, Reply, Request, WireSecret};
use keyward_core::{Secret, UserName, VolumeName};
use keyward_sys::helper_client as client;

/// keyward keeps encrypted disks unlockable by exactly the right people.
#[derive(Parser, Debug)]
#[command(
    name = "keyward",
    version,
    about = "keyward keeps encrypted disks unlockable by exactly the right people, and never locked out"
)]
struct Cli {
    /// Configuration file.
    #[arg(long, global = true, env = "KEYWARD_CONFIG", default_value = DEFAULT_PATH)]
    config: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create the service account, directories and systemd units (idempotent).
    #[cfg_attr(
        target_os = "macos",
        command(
            about = "Add the login capture (keyward:capture,privileged) to system.login.console (idempotent)"
        )
    )]
    Install {
        /// Where to write the systemd units.
        #[arg(long, default_value = "/etc/systemd/system")]
        unit_dir: PathBuf,
        /// Where to write the tmpfiles.d snippet for /run/keyward.
        #[arg(long, default_value = "/etc/tmpfiles.d")]
        tmpfiles_dir: PathBuf,
        /// For the Debian package's scripts: only the account and directories (the package
        /// ships units, tmpfiles.d and PAM profile); a config naming no volume yet is accepted.
        #[arg(long)]
        package: bool,
    },
    /// Remove keyward's slots (refused if a volume would be left without another way in),
    /// then the account, directories and units.
    #[cfg_attr(
        target_os = "macos",
        command(
            about = "Take the login capture out of system.login.console, then remove keyward's rights (refused if a volume would be left without another way in), account and directories"
        )
    )]
    Uninstall {
        /// Confirm: uninstalling removes every unlock right keyward granted.
        #[arg(long)]
        yes: bool,
        /// Where the systemd units were written.
        #[arg(long, default_value = "/etc/systemd/system")]
        unit_dir: PathBuf,
        /// Where the tmpfiles.d snippet was written.
        #[arg(long, default_value = "/etc/tmpfiles.d")]
        tmpfiles_dir: PathBuf,
        /// For the Debian package's scripts: leave units, tmpfiles.d and PAM to the package;
        /// a config naming no volume is accepted.
        #[arg(long)]
        package: bool,
    },
    /// Prove a current holder's passphrase and create the service slot (no-op if one works).
    Bootstrap {
        /// Volume name from the configuration.
        #[arg(value_parser = parse_volume)]
        volume: VolumeName,
        /// The account whose password is given (a FileVault volume: a Secure Token holder;
        /// a Mac needs both its name and its password).
        #[arg(long, value_parser = parse_user)]
        holder: Option<UserName>,
        /// Read the passphrase from one line of stdin instead of prompting.
        #[arg(long)]
        passphrase_stdin: bool,
    },
    /// List holders: user, service, recovery, unmanaged.
    Status {
        /// Only this volume.
        #[arg(value_parser = parse_volume)]
        volume: Option<VolumeName>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Give USER a slot for USER's passphrase, opened by the service secret.
    Grant {
        /// Volume name.
        #[arg(value_parser = parse_volume)]
        volume: VolumeName,
        /// Login name.
        #[arg(value_parser = parse_user)]
        user: UserName,
        /// Read the passphrase from one line of stdin instead of prompting.
        #[arg(long)]
        passphrase_stdin: bool,
    },
    /// Remove USER's keyward slot (refused if it is the last way in).
    Revoke {
        /// Volume name.
        #[arg(value_parser = parse_volume)]
        volume: VolumeName,
        /// Login name.
        #[arg(value_parser = parse_user)]
        user: UserName,
    },
    /// Prove every secret the helper holds still opens its slot.
    Verify {
        /// Only this volume.
        #[arg(value_parser = parse_volume)]
        volume: Option<VolumeName>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Enroll this device with the escrow server (the token goes to the agent, never to a file).
    Enroll {
        /// The escrow server's URL.
        url: String,
        /// Read the single-use token from one line of stdin instead of prompting.
        #[arg(long)]
        token_stdin: bool,
    },
    /// The recovery key.
    Recovery {
        #[command(subcommand)]
        action: RecoveryAction,
    },
    /// The service account's secret.
    Service {
        #[command(subcommand)]
        action: ServiceAction,
    },
    /// Print the man page or a shell completion script (for packaging).
    #[command(hide = true)]
    Generate {
        /// `man`, `bash`, `zsh` or `fish`.
        what: String,
    },
    /// Show or verify the audit chain.
    Audit {
        /// Verify the hash chain and name the first bad line.
        #[arg(long)]
        verify: bool,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
enum RecoveryAction {
    /// Rotate the recovery key. With --show (standalone, no escrow server): print the new key
    /// once, and commit only after its last group is typed back; until then the old key works.
    Rotate {
        /// Volume name.
        #[arg(value_parser = parse_volume)]
        volume: VolumeName,
        /// Show the key on this terminal (standalone mode).
        #[arg(long)]
        show: bool,
        /// Read the confirming last group from stdin instead of the terminal.
        #[arg(long)]
        confirm_stdin: bool,
    },
    /// Drop a pending (uncommitted) recovery key; the current one stays valid.
    Abort {
        /// Volume name.
        #[arg(value_parser = parse_volume)]
        volume: VolumeName,
    },
}

#[derive(Subcommand, Debug)]
enum ServiceAction {
    /// Rotate the service secret: a new slot is added and committed before the old one goes.
    Rotate {
        /// Volume name.
        #[arg(value_parser = parse_volume)]
        volume: VolumeName,
    },
    /// Replace a service slot no stored secret opens (`verify` says drift), proving a
    /// passphrase that opens another slot (a user's, the installer's or the recovery key).
    Repair {
        /// Volume name.
        #[arg(value_parser = parse_volume)]
        volume: VolumeName,
        /// Read the passphrase from standard input instead of prompting.
        #[arg(long)]
        passphrase_stdin: bool,
    },
}

fn parse_volume(s: &str) -> Result<VolumeName, String> {
    VolumeName::parse(s).map_err(|e| e.to_string())
}

fn parse_user(s: &str) -> Result<UserName, String> {
    UserName::parse(s).map_err(|e| e.to_string())
}

/// A failure with its exit code; the message is already safe to print.
#[derive(Debug)]
pub struct Failure {
    code: u8,
    message: String,
}

impl From<client::CallError> for Failure {
    fn from(e: client::CallError) -> Self {
        Failure::new(e.code, e.message)
    }
}

impl Failure {
    /// The message may come from the helper, the agent or the escrow server: it is made safe
    /// for the terminal here, once for every path to stderr.
    fn new(code: u8, message: impl Into<String>) -> Self {
        Failure {
            code,
            message: keyward_core::printable(&message.into()),
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("keyward: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}

fn load_config(path: &std::path::Path) -> Result<Config, Failure> {
    keyward_sys::daemon::load_config(path).map_err(|e| Failure::new(1, e))
}

fn read_passphrase(from_stdin: bool, prompt: &str) -> Result<Secret, Failure> {
    if from_stdin {
        let mut line = zeroize::Zeroizing::new(Vec::new());
        std::io::BufRead::read_until(&mut std::io::stdin().lock(), b'\n', &mut line)
            .map_err(|e| Failure::new(1, format!("reading stdin: {e}")))?;
        if line.is_empty() {
            return Err(Failure::new(2, "expected one line on stdin"));
        }
        return Ok(Secret::from_line(line));
    }
    let typed = rpassword::prompt_password(prompt).map_err(|e| {
        Failure::new(
            2,
            format!("cannot prompt for a passphrase ({e}); use --passphrase-stdin"),
        )
    })?;
    Ok(Secret::from_string(typed))
}

fn generate(what: &str) -> Result<(), Failure> {
    use clap::CommandFactory;
    let mut cmd = Cli::command();
    let mut out = std::io::stdout();
    let shell = match what {
        "man" => {
            return clap_mangen::Man::new(cmd)
                .render(&mut out)
                .map_err(|e| Failure::new(1, e.to_string()))
        }
        "bash" => clap_complete::Shell::Bash,
        "zsh" => clap_complete::Shell::Zsh,
        "fish" => clap_complete::Shell::Fish,
        other => {
            return Err(Failure::new(
                2,
                format!("cannot generate {}", keyward_core::quote(other)),
            ))
        }
    };
    clap_complete::generate(shell, &mut cmd, "keyward", &mut out);
    Ok(())
}

fn run(cli: Cli) -> Result<(), Failure> {
    if let Command::Generate { what } = &cli.command {
        return generate(what);
    }
    let config = match cli.command {
        Command::Install { package: true, .. } | Command::Uninstall { package: true, .. } => {
            install::load_package_config(&cli.config)?
        }
        _ => load_config(&cli.config)?,
    };
    let call = |req: Request| client::call(&config.helper_socket(), req);
    match cli.command {
        Command::Status { volume, json } => match call(Request::Status { volume })? {
            Reply::Status(v) => output::status(&v, json),
            other => Err(client::unexpected(&other).into()),
        },
        Command::Verify { volume, json } => match call(Request::Verify { volume })? {
            Reply::Verified(v) => output::verify(&v, json),
            other => Err(client::unexpected(&other).into()),
        },
        Command::Bootstrap {
            volume,
            holder,
            passphrase_stdin,
        } => {
            let prompt = match &holder {
                Some(h) => format!("Password of {h}, a current holder of {volume}: "),
                None => format!("Passphrase of a current holder of {volume}: "),
            };
            let pass = read_passphrase(passphrase_stdin, &prompt)?;
            let passphrase = WireSecret::from_secret(&pass);
            let req = match holder {
                Some(holder) => Request::BootstrapFrom {
                    volume: volume.clone(),
                    holder,
                    passphrase,
                },
                None => Request::Bootstrap {
                    volume: volume.clone(),
                    passphrase,
                },
            };
            drop(pass);
            match call(req)? {
                Reply::Bootstrapped {
                    slot,
                    created: true,
                } => {
                    println!("{volume}: created the service slot (keyslot {slot})");
                    Ok(())
                }
                Reply::Bootstrapped {
                    slot,
                    created: false,
                } => {
                    println!("{volume}: already bootstrapped: service slot {slot} works; nothing changed");
                    Ok(())
                }
                other => Err(client::unexpected(&other).into()),
            }
        }
        Command::Grant {
            volume,
            user,
            passphrase_stdin,
        } => {
            let pass = read_passphrase(passphrase_stdin, &format!("Passphrase for {user}: "))?;
            let req = Request::Grant {
                volume: volume.clone(),
                user: user.clone(),
                passphrase: WireSecret::from_secret(&pass),
            };
            drop(pass);
            match call(req)? {
                Reply::Granted { slot } => {
                    println!("{volume}: granted {user} keyslot {slot}");
                    Ok(())
                }
                other => Err(client::unexpected(&other).into()),
            }
        }
        Command::Revoke { volume, user } => match call(Request::Revoke {
            volume: volume.clone(),
            user: user.clone(),
        })? {
            Reply::Revoked { slot } => {
                println!("{volume}: revoked {user} (keyslot {slot})");
                Ok(())
            }
            other => Err(client::unexpected(&other).into()),
        },
        Command::Audit { verify, json } => audit_cmd::run(&config, verify, json),
        #[cfg(not(target_os = "macos"))]
        Command::Install { unit_dir, tmpfiles_dir, package } => {
            install::install(&config, &unit_dir, &tmpfiles_dir, package)
        }
        // A Mac has no units, tmpfiles.d or PAM, and no package mode: the login capture only.
        #[cfg(target_os = "macos")]
        Command::Install { .. } => install_macos::install(),
        Command::Uninstall { yes: false, .. } => Err(Failure::new(
            2,
            "uninstall removes every unlock right keyward granted (users keep other ways in only if they have them); re-run with --yes",
        )),
        #[cfg(not(target_os = "macos"))]
        Command::Uninstall { yes: true, unit_dir, tmpfiles_dir, package } => {
            install::uninstall(&config, &unit_dir, &tmpfiles_dir, package)
        }
        #[cfg(target_os = "macos")]
        Command::Uninstall { yes: true, .. } => install_macos::uninstall(&config),
        Command::Generate { .. } => Ok(()),
        Command::Recovery { action: RecoveryAction::Rotate { volume, show: false, .. } } => {
            if config.escrow.is_none() {
                return Err(Failure::new(
                    2,
                    "no [escrow] server is configured; rotate standalone with --show, which prints the key once",
                ));
            }
            let socket = config.agent_state_dir.join("agent.sock");
            match client::call_agent(&socket, &config.service_user, AgentRequest::RotateRecovery { volume: volume.clone() })? {
                AgentReply::Rotated { slot, escrow_id } => {
                    println!(
                        "{volume}: recovery key rotated (keyslot {slot}) and escrowed as {}",
                        keyward_core::printable(&escrow_id)
                    );
                    Ok(())
                }
                other => Err(Failure::new(1, format!("unexpected reply from the agent: {other:?}"))),
            }
        }
        Command::Enroll { url, token_stdin } => {
            let token = read_passphrase(token_stdin, "Enrollment token: ")?;
            let socket = config.agent_state_dir.join("agent.sock");
            let req = AgentRequest::Enroll { url: url.clone(), token: WireSecret::from_secret(&token) };
            drop(token);
            let device_id = match client::call_agent(&socket, &config.service_user, req)? {
                AgentReply::Enrolled { device_id } => device_id,
                other => return Err(Failure::new(1, format!("unexpected reply from the agent: {other:?}"))),
            };
            match call(Request::SetDevice { device_id: device_id.clone() })? {
                Reply::DeviceSet => {}
                other => return Err(client::unexpected(&other).into()),
            }
            println!(
                "enrolled with {url} as device {}",
                keyward_core::printable(&device_id)
            );
            // The agent escrows every volume's recovery key at its next round: make that now.
            if let Err(e) = client::call_agent(&socket, &config.service_user, AgentRequest::CheckInNow) {
                eprintln!(
                    "keyward: warning: the agent will check in at its next interval ({})",
                    keyward_core::printable(&e.message)
                );
            }
            Ok(())
        }
        Command::Recovery { action: RecoveryAction::Rotate { volume, show: true, confirm_stdin } } => {
            rotate_recovery_standalone(&config, &volume, confirm_stdin)
        }
        Command::Recovery { action: RecoveryAction::Abort { volume } } => {
            match call(Request::RecoveryAbort { volume: volume.clone() })? {
                Reply::RecoveryAborted { slot: Some(s) } => {
                    println!("{volume}: pending recovery key dropped (keyslot {s}); the current one stays valid");
                    Ok(())
                }
                Reply::RecoveryAborted { slot: None } => {
                    println!("{volume}: no pending recovery key");
                    Ok(())
                }
                other => Err(client::unexpected(&other).into()),
            }
        }
        Command::Service { action: ServiceAction::Repair { volume, passphrase_stdin } } => {
            let pass = read_passphrase(passphrase_stdin, "Passphrase of an existing slot: ")?;
            let req = Request::ServiceRepair { volume: volume.clone(), passphrase: WireSecret::from_secret(&pass) };
            drop(pass);
            match call(req)? {
                Reply::ServiceRotated { old, new } => {
                    println!("{volume}: service slot replaced (keyslot {old} -> {new})");
                    Ok(())
                }
                other => Err(client::unexpected(&other).into()),
            }
        }
        Command::Service { action: ServiceAction::Rotate { volume } } => {
            match call(Request::ServiceRotate { volume: volume.clone() })? {
                Reply::ServiceRotated { old, new } => {
                    println!("{volume}: service secret rotated (keyslot {old} -> {new})");
                    Ok(())
                }
                other => Err(client::unexpected(&other).into()),
            }
        }
    }
}

fn rotate_recovery_standalone(
    config: &Config,
    volume: &VolumeName,
    confirm_stdin: bool,
) -> Result<(), Failure> {
    let socket = config.helper_socket();
    let (slot, key) = match client::call(
        &socket,
        Request::RecoveryBegin {
            volume: volume.clone(),
        },
    )? {
        Reply::RecoveryPending { slot, key } => (slot, key.into_secret()),
        other => return Err(client::unexpected(&other).into()),
    };
    {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        let shown = writeln!(out, "New recovery key for {volume} (keyslot {slot}). Store it now; keyward shows it only here:\n")
            .and_then(|()| out.write_all(b"    "))
            .and_then(|()| out.write_all(key.expose()))
            .and_then(|()| out.write_all(b"\n\n"))
            .and_then(|()| out.flush());
        shown.map_err(|e| Failure::new(1, format!("cannot show the key: {e}")))?;
    }
    drop(key);
    let typed = read_passphrase(
        confirm_stdin,
        "Type the key's last group to confirm you stored it: ",
    )?;
    let req = Request::RecoveryCommit {
        volume: volume.clone(),
        slot,
        confirm: WireSecret::from_secret(&typed),
    };
    match client::call(&socket, req)? {
        Reply::RecoveryCommitted { slot, retired } if retired.is_empty() => {
            println!("{volume}: recovery key committed (keyslot {slot})");
            Ok(())
        }
        Reply::RecoveryCommitted { slot, retired } => {
            println!("{volume}: recovery key committed (keyslot {slot}); the previous key (keyslot {retired:?}) no longer works");
            Ok(())
        }
        other => Err(client::unexpected(&other).into()),
    }
}
