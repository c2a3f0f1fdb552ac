//! keyward-server: the escrow server, first version. SQLite embedded by default.
//!
//! ```text
//! keyward-server init --state DIR                       identity (0600); prints the device config lines
//! keyward-server token create --state DIR               a single-use enrollment token
//! keyward-server serve --state DIR [--listen ADDR]      HTTP API (plain HTTP on loopback only)
//! keyward-server device list [--json] --state DIR      devices, last check-in, escrow state per volume
//! keyward-server audit --state DIR                     every key retrieval: when, who, device, volume, why
//! keyward-server key show DEVICE VOLUME --reason TEXT --state DIR
//!                                                       decrypt, audit who/why/when, mark for rotation
//! ```

mod api;
mod checkin;
mod identity;
mod keys;
mod migrations;
mod store;

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
    /// Database URL (default: sqlite in the state directory).
    #[arg(long)]
    db: Option<String>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create the server identity and print the lines devices put in their [escrow] config.
    Init {
        #[command(flatten)]
        at: Where,
    },
    /// Enrollment tokens.
    Token {
        #[command(subcommand)]
        action: TokenAction,
    },
    /// Serve the API.
    Serve {
        #[command(flatten)]
        at: Where,
        /// Address to listen on; plain HTTP is allowed on loopback only.
        #[arg(long, default_value = "127.0.0.1:8443")]
        listen: SocketAddr,
    },
    /// Enrolled devices.
    Device {
        #[command(subcommand)]
        action: DeviceAction,
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
}

#[derive(Subcommand, Debug)]
enum TokenAction {
    /// Create single-use enrollment tokens, printed one a line.
    Create {
        #[command(flatten)]
        at: Where,
        /// How many tokens (for enrolling a fleet, or a load test, in one go).
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100_000))]
        count: u32,
    },
}

#[derive(Subcommand, Debug)]
enum DeviceAction {
    /// Every device with its last check-in and the escrow state of each volume.
    List {
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
        #[command(flatten)]
        at: Where,
    },
}

fn db_url(at: &Where) -> String {
    at.db
        .clone()
        .unwrap_or_else(|| format!("sqlite://{}", at.state.join("keyward.db").display()))
}

fn main() -> ExitCode {
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
            store::Store::open(&db_url(&at)).await?;
            println!("# [escrow] lines for each device's /etc/keyward/keyward.toml:");
            print!("{}", id.public_config());
            Ok(())
        }
        Command::Token {
            action: TokenAction::Create { at, count },
        } => {
            let store = store::Store::open(&db_url(&at)).await?;
            let mut tokens = Vec::with_capacity(count as usize);
            for _ in 0..count {
                let mut raw = [0u8; 24];
                getrandom::fill(&mut raw).map_err(|e| e.to_string())?;
                tokens.push(raw.iter().map(|b| format!("{b:02x}")).collect::<String>());
            }
            // One transaction: no token is printed unless all are stored.
            let hashes: Vec<String> = tokens.iter().map(|t| api::token_hash(t)).collect();
            store.add_tokens(&hashes).await?;
            for token in tokens {
                println!("{token}");
            }
            Ok(())
        }
        Command::Serve { at, listen } => {
            if !listen.ip().is_loopback() {
                return Err(
                    "plain HTTP is served on loopback only (TLS comes with the fleet server)"
                        .into(),
                );
            }
            let identity = identity::Identity::load(&at.state)?;
            let store = store::Store::open(&db_url(&at)).await?;
            tokio::spawn(prune_nonces(store.clone()));
            let state = Arc::new(api::AppState { store, identity });
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .map_err(|e| e.to_string())?;
            let addr = listener.local_addr().map_err(|e| e.to_string())?;
            eprintln!("keyward-server: listening on http://{addr}");
            axum::serve(listener, api::router(state))
                .await
                .map_err(|e| e.to_string())
        }
        Command::Device {
            action: DeviceAction::List { json, at },
        } => checkin::list(&store::Store::open(&db_url(&at)).await?, json).await,
        Command::Audit { at } => audit(&at).await,
        Command::Key {
            action:
                KeyAction::Show {
                    device,
                    volume,
                    reason,
                    escrow,
                    at,
                },
        } => show_key(&at, &device, &volume, &reason, escrow.as_deref()).await,
    }
}

async fn show_key(
    at: &Where,
    device: &str,
    volume: &str,
    reason: &str,
    escrow: Option<&str>,
) -> Result<(), String> {
    if reason.trim().is_empty() {
        return Err("--reason must say why the key is needed".into());
    }
    let identity = identity::Identity::load(&at.state)?;
    let store = store::Store::open(&db_url(at)).await?;
    let who = std::env::var("SUDO_USER")
        .unwrap_or_else(|_| format!("uid {}", keyward_sys::hardening::effective_uid()));
    let revealed = keys::reveal(&store, &identity, device, volume, escrow, &who, reason).await?;
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
    let store = store::Store::open(&db_url(at)).await?;
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

/// Forget request nonces once their timestamps are too old to be accepted anyway.
async fn prune_nonces(store: store::Store) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(600));
    loop {
        tick.tick().await;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let before = i64::try_from(now.saturating_sub(api::MAX_SKEW_SECS * 2)).unwrap_or(0);
        if let Err(e) = store.prune_nonces(before).await {
            eprintln!("keyward-server: pruning nonces: {e}");
        }
    }
}
