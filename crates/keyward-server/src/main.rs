//! keyward-server: the escrow server, first version. SQLite embedded by default.
//!
//! ```text
//! keyward-server init --state DIR                       identity (0600); prints the device config lines
//! keyward-server token create [--count N] [--expires-in 24h] --state DIR   single-use enrollment tokens
//! keyward-server token list [--json] | revoke ID...     their state; make them unusable (audited)
//! keyward-server serve --state DIR [--listen ADDR]      HTTP API (plain HTTP on loopback only)
//!                [--config FILE]                        server.toml (config.rs; default /etc/keyward/server.toml)
//!                [--max-connections N] [--handshake-timeout D] [--header-read-timeout D]
//!                [--idle-timeout D] [--body-read-timeout D] [--escrows-kept N]
//!                                                       connection limits (conn.rs), escrows kept (batch.rs)
//!                [--metrics-refresh D] [--metrics-token-file FILE]   /metrics (metrics.rs, fleet_gauges.rs)
//! keyward-server device list [--json] --state DIR      devices, state, last check-in, escrow state per volume
//! keyward-server device revoke DEVICE [--reason TEXT] --state DIR   refuse its requests (401; audited)
//! (every command: [--db URL | --db-file PATH] or KEYWARD_SERVER_DB; default SQLite in DIR)
//! keyward-server backup --out FILE --passphrase-stdin --state DIR   identity + database, age-encrypted
//! keyward-server restore --in FILE --passphrase-stdin --state DIR    into an empty state dir and database
//! keyward-server command rotate-recovery|rotate-service DEVICE VOLUME | revoke-user DEVICE VOLUME USER
//!                | set-policy DEVICE [--recovery-rotation-days N] [--revoke-unmanaged BOOL] | list [DEVICE]
//!                                                       signed device commands (delivered at check-in)
//! keyward-server audit --state DIR                     every key retrieval: when, who, device, volume, why
//! keyward-server admin add NAME [--role ROLE] --password-stdin [--totp] --state DIR   a web UI account
//!                                                       (roles.rs); --totp prints an otpauth:// URI once
//! keyward-server admin list | set-role NAME ROLE | remove NAME | end-sessions NAME   accounts, roles, TOTP, sessions
//! keyward-server admin reset-totp NAME [--off] --state DIR   new TOTP secret (URI once), sessions ended
//! keyward-server api-token add NAME --role ROLE | list | revoke NAME   bearer tokens for /v1/admin/
//! keyward-server key show DEVICE VOLUME --reason TEXT --state DIR
//!                                                       decrypt, audit who/why/when, mark for rotation
//! ```
#![forbid(unsafe_code)]

mod operator;
pub(crate) use operator::operator;
mod admin_api;
mod age_check;
mod age_unwrap;
mod api;
mod api_tokens;
mod app_state;
mod backup;
mod ca_roots;
mod checkin;
mod clock;
mod commands;
mod config;
mod conn;
mod device_admin;
mod device_auth;
mod device_keys;
mod escrow_check;
mod fleet_gauges;
mod identity;
mod keys;
mod log;
mod metrics;
mod notify;
mod notify_queue;
mod nul_guard;
mod oidc;
mod private_file;
mod reveal_flow;
mod reveal_requests;
mod reveals;
mod roles;
mod routes;
mod sql;
mod store;
mod tls;
mod tokens;
mod ui;
mod writer;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "keyward-server", version, about = "keyward's escrow server")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args, Debug)]
struct Where {
    /// State directory (identity, and the SQLite database by default).
    #[arg(long)]
    state: PathBuf,
    /// Database URL (default: sqlite in the state directory). A URL with a password belongs in
    /// --db-file or KEYWARD_SERVER_DB, never argv.
    #[arg(long, conflicts_with = "db_file")]
    db: Option<String>,
    /// Read the database URL from this file (owned by this user, mode 0600 or stricter).
    #[arg(long)]
    db_file: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
#[allow(clippy::enum_variant_names)] // `Command::Command` is the `command` subcommand
enum Command {
    /// Create the server identity and print the lines devices put in their [escrow] config.
    Init {
        #[command(flatten)]
        at: Where,
    },
    /// Enrollment tokens.
    Token {
        #[command(subcommand)]
        action: tokens::TokenAction,
    },
    /// Serve the API.
    Serve {
        #[command(flatten)]
        at: Where,
        /// Address to listen on; plain HTTP is allowed on loopback only.
        #[arg(long, default_value = "127.0.0.1:8443")]
        listen: SocketAddr,
        /// Log every request as a JSON line (otherwise only failures).
        #[arg(long)]
        log_requests: bool,
        /// Serve HTTPS with this PEM certificate chain (required off loopback).
        #[arg(long, requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// The certificate's PEM private key.
        #[arg(long, requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        #[command(flatten)]
        ui_options: ui::ServeOptions,
        #[command(flatten)]
        limits: conn::Limits,
        #[command(flatten)]
        metrics: metrics::Options,
        /// Escrows kept per device and volume: the newest N, plus the one its last check-in names.
        #[arg(long, value_name = "N", default_value_t = 16)]
        escrows_kept: u32,
        /// The server's config file (TOML; default: /etc/keyward/server.toml when it exists).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Enrolled devices.
    Device {
        #[command(subcommand)]
        action: device_admin::DeviceAction,
    },
    /// Back up the identity and the database to one file, encrypted to a passphrase.
    Backup {
        #[command(flatten)]
        at: Where,
        /// The backup file (created; never overwritten).
        #[arg(long)]
        out: PathBuf,
        /// Read the backup passphrase from standard input (required: never in argv).
        #[arg(long, required = true)]
        passphrase_stdin: bool,
    },
    /// Restore a backup into an empty state directory and an empty database.
    Restore {
        #[command(flatten)]
        at: Where,
        /// The backup file.
        #[arg(long = "in")]
        input: PathBuf,
        /// Read the backup passphrase from standard input (required: never in argv).
        #[arg(long, required = true)]
        passphrase_stdin: bool,
    },
    /// Signed commands for devices, delivered at their next check-in.
    Command {
        #[command(subcommand)]
        action: CommandAction,
    },
    /// Every key retrieval: when, who, which device and volume, and why.
    Audit {
        #[command(flatten)]
        at: Where,
    },
    /// Escrowed keys.
    Key {
        #[command(subcommand)]
        action: KeyAction,
    },
    /// Accounts for the admin web UI (served at /ui/), each with a role.
    Admin {
        #[command(subcommand)]
        action: ui::admin::AdminAction,
    },
    /// Bearer tokens for the JSON admin API (/v1/admin/), each with a role.
    ApiToken {
        #[command(subcommand)]
        action: api_tokens::ApiTokenAction,
    },
    /// Checks on escrowed keys (for tests and after a crash).
    #[command(hide = true)]
    Escrow {
        #[command(subcommand)]
        action: EscrowAction,
    },
}

#[derive(Subcommand, Debug)]
enum EscrowAction {
    /// Check that every escrow in a receipts file is stored and decrypts; prints counts.
    Check {
        /// One receipt a line: ESCROW_ID DEVICE VOLUME SHA256 [KEY_SHA256].
        #[arg(long)]
        receipts: PathBuf,
        #[command(flatten)]
        at: Where,
    },
}

#[derive(clap::Args, Debug)]
struct Issue {
    /// The device.
    device: String,
    /// Seconds until the command expires unrun.
    #[arg(long, default_value_t = commands::DEFAULT_TTL_SECS)]
    ttl: u64,
    #[command(flatten)]
    at: Where,
}

#[derive(Subcommand, Debug)]
enum CommandAction {
    /// Rotate a volume's recovery key now (escrowed).
    RotateRecovery {
        #[command(flatten)]
        to: Issue,
        /// The volume.
        volume: String,
    },
    /// Rotate a volume's service secret now.
    RotateService {
        #[command(flatten)]
        to: Issue,
        /// The volume.
        volume: String,
    },
    /// Remove a user's keyward unlock right on a volume (never the last way in).
    RevokeUser {
        #[command(flatten)]
        to: Issue,
        /// The volume.
        volume: String,
        /// The user.
        user: String,
    },
    /// Override the device's policy (values not given fall back to its keyward.toml).
    SetPolicy {
        #[command(flatten)]
        to: Issue,
        /// Recovery key rotation interval in days (0: never by age).
        #[arg(long)]
        recovery_rotation_days: Option<u32>,
        /// Revoke the slots of users who left the managed set.
        #[arg(long)]
        revoke_unmanaged: Option<bool>,
    },
    /// Commands and what their devices reported.
    List {
        /// Only this device's.
        device: Option<String>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        at: Where,
    },
}

#[derive(Subcommand, Debug)]
enum KeyAction {
    /// Show the latest escrowed recovery key of a device's volume (audited; the device rotates it after use).
    Show {
        /// Device id.
        device: String,
        /// Volume name.
        volume: String,
        /// Why (recorded in the audit table).
        #[arg(long)]
        reason: String,
        /// A particular escrow of that volume (default: the latest).
        #[arg(long)]
        escrow: Option<String>,
        /// The server's config file, for `[notify]`: the reveal is queued for the webhook,
        /// which the serving instances send (default: /etc/keyward/server.toml when it exists).
        #[arg(long)]
        config: Option<PathBuf>,
        #[command(flatten)]
        at: Where,
    },
}

/// The database URL: `--db`, else `--db-file`, else `KEYWARD_SERVER_DB`, else SQLite in the
/// state directory.
fn db_url(at: &Where) -> Result<String, String> {
    if let Some(url) = &at.db {
        return Ok(url.clone());
    }
    if let Some(path) = &at.db_file {
        return db_url_from_file(path);
    }
    if let Some(url) = std::env::var_os("KEYWARD_SERVER_DB") {
        return url
            .into_string()
            .map_err(|_| "KEYWARD_SERVER_DB is not UTF-8".to_owned());
    }
    Ok(format!(
        "sqlite://{}",
        at.state.join("keyward.db").display()
    ))
}

/// A URL from a file only its owner (this user) can read or write: it may hold a password.
fn db_url_from_file(path: &Path) -> Result<String, String> {
    private_file::read_line(path)
        .map_err(|e| format!("{e} (--db-file: one line, the database URL)"))
}

fn main() -> ExitCode {
    keyward_sys::hardening::private_umask();
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("keyward-server: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("keyward-server: {e}");
            ExitCode::FAILURE
        }
    }
}

fn ensure_state(dir: &Path) -> Result<(), String> {
    let uid = keyward_sys::hardening::effective_uid();
    let gid = keyward_sys::hardening::effective_gid();
    keyward_sys::safe_fs::ensure_dir(dir, uid, gid, 0o700)
        .map(drop)
        .map_err(|e| format!("state: {e}"))
}

async fn run(cli: Cli) -> Result<(), String> {
    match cli.command {
        Command::Init { at } => {
            ensure_state(&at.state)?;
            let id = identity::Identity::create(&at.state)?;
            store::Store::open(&db_url(&at)?).await?;
            println!("# [escrow] lines for each device's /etc/keyward/keyward.toml:");
            print!("{}", id.public_config());
            Ok(())
        }
        Command::Token { action } => tokens::run(action).await,
        Command::Serve {
            at,
            listen,
            log_requests,
            tls_cert,
            tls_key,
            ui_options,
            mut limits,
            metrics,
            escrows_kept,
            config,
        } => {
            let (config, config_file) =
                config::ServerConfig::load(config.as_deref()).map_err(|e| e.to_string())?;
            writer::batch::keep_escrows_per_volume(escrows_kept);
            let metrics_token = metrics.token()?;
            let tls = match (&tls_cert, &tls_key) {
                (Some(c), Some(k)) => Some(tls::acceptor(c, k)?),
                _ => None,
            };
            if tls.is_none() && !listen.ip().is_loopback() {
                return Err(
                    "plain HTTP is served on loopback only: give --tls-cert and --tls-key".into(),
                );
            }
            let sso = match &config.oidc {
                Some(c) => Some(Arc::new(oidc::Sso::new(c).map_err(|e| e.to_string())?)),
                None => None,
            };
            let notifier = match &config.notify {
                Some(n) => Some(Arc::new(
                    notify::Notifier::load(n).map_err(|e| e.to_string())?,
                )),
                None => None,
            };
            let identity = identity::Identity::load(&at.state)?;
            let store = store::Store::open(&db_url(&at)?)
                .await?
                .with_notify(notifier.is_some());
            let writer = writer::Writer::start(&store).await?;
            tokio::spawn(prune_nonces(writer.clone()));
            let state = Arc::new(app_state::AppState {
                store,
                writer,
                device_keys: device_keys::DeviceKeys::default(),
                identity,
                counters: metrics::Counters::default(),
                gauges: Arc::new(fleet_gauges::Gauges::default()),
                metrics_token,
                log_requests,
                ui: ui_options.settings(),
                reveal: config.reveal.clone(),
                sso,
                notifier: notifier.clone(),
            });
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .map_err(|e| e.to_string())?;
            let addr = listener.local_addr().map_err(|e| e.to_string())?;
            let scheme = if tls.is_some() { "https" } else { "http" };
            // The first line of the log: scripts and tests read the address from it.
            log::info(&format!("listening on {scheme}://{addr}"), &[]);
            log::info(
                "configuration",
                &[
                    (
                        "file",
                        config_file
                            .map_or("none (defaults)".into(), |p| p.display().to_string())
                            .into(),
                    ),
                    (
                        "reveal.require_approval",
                        config.reveal.require_approval.into(),
                    ),
                    ("reveal.approval_hours", config.reveal.approval_hours.into()),
                    (
                        "oidc.issuer",
                        state
                            .sso
                            .as_ref()
                            .map_or("none (password sign-in only)".into(), |s| {
                                s.issuer().to_owned()
                            })
                            .into(),
                    ),
                    (
                        "notify.url",
                        config
                            .notify
                            .as_ref()
                            .map_or("none (no webhook)".into(), |n| n.url.clone())
                            .into(),
                    ),
                ],
            );
            if state.metrics_token.is_none() {
                log::info(
                    "/metrics is served without authentication (--metrics-token-file requires a bearer token)",
                    &[],
                );
            }
            tokio::spawn(warm_device_keys(state.clone()));
            tokio::spawn(reveals::expire_every_minute(state.clone()));
            if let Some(n) = notifier {
                tokio::spawn(n.deliver_forever(state.store.pool().clone()));
            }
            tokio::spawn(fleet_gauges::refresh_every(
                state.store.clone(),
                state.gauges.clone(),
                metrics.metrics_refresh,
            ));
            limits.fit_descriptor_limit();
            let router = routes::router(state, limits.body_read_timeout);
            conn::serve(listener, tls, router, limits).await
        }
        Command::Device { action } => device_admin::run(action).await,
        Command::Audit { at } => audit(&at).await,
        Command::Command {
            action: CommandAction::List { device, json, at },
        } => {
            let store = store::Store::open(&db_url(&at)?).await?;
            let all = commands::list(&store, device.as_deref()).await?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&all).map_err(|e| e.to_string())?
                );
            } else {
                for c in all {
                    println!(
                        "{} {} {} {} by {} {}",
                        c.id,
                        c.device,
                        c.kind,
                        c.status,
                        keyward_core::quote(&c.who),
                        c.detail
                            .map(|d| keyward_core::quote(&d))
                            .unwrap_or_default()
                    );
                }
            }
            Ok(())
        }
        Command::Command { action } => issue_command(action).await,
        Command::Admin { action } => ui::admin::run(action).await,
        Command::ApiToken { action } => api_tokens::run(action).await,
        Command::Escrow {
            action: EscrowAction::Check { receipts, at },
        } => {
            let identity = identity::Identity::load(&at.state)?;
            let store = store::Store::open(&db_url(&at)?).await?;
            let t = escrow_check::check(&store, &identity, &receipts).await?;
            println!(
                "receipts {}\nrecovered {}\nmissing {}\nmismatched {}\nundecryptable {}",
                t.receipts, t.recovered, t.missing, t.mismatched, t.undecryptable
            );
            if t.all_recovered() {
                Ok(())
            } else {
                Err("not every receipted escrow is recoverable".into())
            }
        }
        Command::Backup { at, out, .. } => {
            let pass = passphrase(12)?;
            let store = store::Store::open(&db_url(&at)?).await?;
            let bytes = backup::backup(&at.state, &store, &out, pass).await?;
            eprintln!(
                "keyward-server: wrote {} ({bytes} bytes, encrypted); keep the passphrase apart from it",
                out.display()
            );
            Ok(())
        }
        Command::Restore { at, input, .. } => {
            let pass = passphrase(1)?;
            ensure_state(&at.state)?;
            let store = store::Store::open(&db_url(&at)?).await?;
            let rows = backup::restore(&at.state, &store, &input, pass).await?;
            eprintln!("keyward-server: restored the identity and rows: {rows}");
            Ok(())
        }
        Command::Key {
            action:
                KeyAction::Show {
                    device,
                    volume,
                    reason,
                    escrow,
                    config,
                    at,
                },
        } => {
            let (config, _) =
                config::ServerConfig::load(config.as_deref()).map_err(|e| e.to_string())?;
            let notify = config.notify.is_some();
            show_key(&at, &device, &volume, &reason, escrow.as_deref(), notify).await
        }
    }
}

async fn show_key(
    at: &Where,
    device: &str,
    volume: &str,
    reason: &str,
    escrow: Option<&str>,
    notify: bool,
) -> Result<(), String> {
    if reason.trim().is_empty() {
        return Err("--reason must say why the key is needed".into());
    }
    let identity = identity::Identity::load(&at.state)?;
    let store = store::Store::open(&db_url(at)?).await?.with_notify(notify);
    let who = operator();
    let what = keys::Retrieval {
        device,
        volume,
        escrow,
        who: &who,
        reason,
        request: None,
    };
    let revealed = keys::reveal(&store, &identity, what)
        .await
        .map_err(|e| e.to_string())?;
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    out.write_all(&revealed.key)
        .and_then(|()| out.write_all(b"\n"))
        .map_err(|e| e.to_string())?;
    eprintln!("keyward-server: shown to {who}; audited; the device will rotate this key after use");
    eprintln!("keyward-server: {}", revealed.standing);
    Ok(())
}

async fn audit(at: &Where) -> Result<(), String> {
    let store = store::Store::open(&db_url(at)?).await?;
    for r in store.audit_trail(i64::MAX).await? {
        let quoted = |s: Option<String>| keyward_core::quote(s.as_deref().unwrap_or(""));
        println!(
            "{} {} by {} device={} volume={} reason={}",
            r.at.get(..19).unwrap_or(&r.at),
            r.action,
            keyward_core::quote(&r.who),
            quoted(r.device),
            quoted(r.volume),
            quoted(r.reason)
        );
    }
    Ok(())
}

/// Fill the device-key cache from the database while serving.
async fn warm_device_keys(state: Arc<app_state::AppState>) {
    match state.device_keys.warm(&state.store).await {
        Ok(n) => log::info("device keys cached", &[("devices", n.into())]),
        Err(e) => log::error("caching device keys", &[("error", e.to_string().into())]),
    }
}

/// Forget request nonces once their timestamps are too old to be accepted anyway, through
/// the writer and a few thousand at a time, so the write lock is never held long.
async fn prune_nonces(writer: writer::Writer) {
    const LIMIT: i64 = 2_000;
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(60));
    loop {
        tick.tick().await;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let before = i64::try_from(now.saturating_sub(device_auth::MAX_SKEW_SECS * 2)).unwrap_or(0);
        loop {
            match writer
                .submit(writer::Unit::Prune {
                    before,
                    limit: LIMIT,
                })
                .await
            {
                Ok(writer::Outcome::Pruned(n)) if n >= LIMIT as u64 => continue,
                Ok(_) => break,
                Err(e) => {
                    log::error("pruning nonces", &[("error", e.to_string().into())]);
                    break;
                }
            }
        }
    }
}

/// One line from standard input, at least `min` characters.
fn passphrase(min: usize) -> Result<age::secrecy::SecretString, String> {
    let mut line = zeroize::Zeroizing::new(String::new());
    std::io::stdin()
        .read_line(&mut line)
        .map_err(|e| format!("reading the passphrase: {e}"))?;
    let pass = line.trim_end_matches(['\r', '\n']);
    if pass.chars().count() < min {
        return Err(format!(
            "the passphrase must have at least {min} characters"
        ));
    }
    Ok(age::secrecy::SecretString::from(pass.to_owned()))
}

async fn issue_command(action: CommandAction) -> Result<(), String> {
    use keyward_core::command::Action;
    let name = |v: &str| keyward_core::VolumeName::parse(v).map_err(|e| e.to_string());
    let (to, action) = match action {
        CommandAction::RotateRecovery { to, volume } => (
            to,
            Action::RotateRecovery {
                volume: name(&volume)?,
            },
        ),
        CommandAction::RotateService { to, volume } => (
            to,
            Action::RotateService {
                volume: name(&volume)?,
            },
        ),
        CommandAction::RevokeUser { to, volume, user } => (
            to,
            Action::RevokeUser {
                volume: name(&volume)?,
                user: keyward_core::UserName::parse(&user).map_err(|e| e.to_string())?,
            },
        ),
        CommandAction::SetPolicy {
            to,
            recovery_rotation_days,
            revoke_unmanaged,
        } => {
            if recovery_rotation_days.is_some_and(|d| d > keyward_core::command::MAX_ROTATION_DAYS)
            {
                return Err("--recovery-rotation-days is at most 3650".into());
            }
            (
                to,
                Action::SetPolicy {
                    recovery_rotation_days,
                    revoke_unmanaged,
                },
            )
        }
        CommandAction::List { .. } => return Err("not a command to issue".into()),
    };
    let identity = identity::Identity::load(&to.at.state)?;
    let store = store::Store::open(&db_url(&to.at)?).await?;
    let id = commands::issue(&store, &identity, &to.device, action, to.ttl, &operator()).await?;
    println!("{id}");
    eprintln!("keyward-server: signed; delivered at the device's next check-in (audited)");
    Ok(())
}
