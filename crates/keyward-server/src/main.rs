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
mod db;
mod identity;

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
            db::open(&db_url(&at)).await?;
            println!("# [escrow] lines for each device's /etc/keyward/keyward.toml:");
            print!("{}", id.public_config());
            Ok(())
        }
        Command::Token {
            action: TokenAction::Create { at, count },
        } => {
            let pool = db::open(&db_url(&at)).await?;
            // One transaction: one fsync for the lot, and no token is printed unless all are stored.
            let mut tx = pool.begin().await.map_err(|e| e.to_string())?;
            let mut tokens = Vec::with_capacity(count as usize);
            for _ in 0..count {
                let mut raw = [0u8; 24];
                getrandom::fill(&mut raw).map_err(|e| e.to_string())?;
                let token: String = raw.iter().map(|b| format!("{b:02x}")).collect();
                sqlx::query("INSERT INTO tokens (hash) VALUES (?)")
                    .bind(api::token_hash(&token))
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| e.to_string())?;
                tokens.push(token);
            }
            tx.commit().await.map_err(|e| e.to_string())?;
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
            let pool = db::open(&db_url(&at)).await?;
            let state = Arc::new(api::AppState { pool, identity });
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
        } => checkin::list(&db::open(&db_url(&at)).await?, json).await,
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
    let pool = db::open(&db_url(at)).await?;
    let row: Option<(String, Vec<u8>)> = sqlx::query_as(
        "SELECT id, ciphertext FROM escrows WHERE device = ? AND volume = ? AND (? IS NULL OR id = ?) \
         ORDER BY rowid DESC LIMIT 1",
    )
    .bind(device)
    .bind(volume)
    .bind(escrow)
    .bind(escrow)
    .fetch_optional(&pool)
    .await
    .map_err(|e| e.to_string())?;
    let (id, ciphertext) = row.ok_or("no escrowed key for that device and volume")?;
    let key = zeroize::Zeroizing::new(
        age::decrypt(&identity.age, &ciphertext).map_err(|e| e.to_string())?,
    );
    let who = std::env::var("SUDO_USER")
        .unwrap_or_else(|_| format!("uid {}", keyward_sys::hardening::effective_uid()));
    sqlx::query("INSERT INTO audit (at, who, action, device, volume, reason) VALUES (?, ?, 'key-show', ?, ?, ?)")
        .bind(db::now())
        .bind(&who)
        .bind(device)
        .bind(volume)
        .bind(reason)
        .execute(&pool)
        .await
        .map_err(|e| e.to_string())?;
    sqlx::query("UPDATE escrows SET rotate_after_use = 1 WHERE id = ?")
        .bind(&id)
        .execute(&pool)
        .await
        .map_err(|e| e.to_string())?;
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    out.write_all(&key)
        .and_then(|()| out.write_all(b"\n"))
        .map_err(|e| e.to_string())?;
    eprintln!("keyward-server: shown to {who}; audited; the device will rotate this key after use");
    let reported = checkin::latest(&pool, device).await?.and_then(|(at, r)| {
        r.volumes
            .into_iter()
            .find(|v| v.volume.as_str() == volume)
            .map(|v| (at, v.escrow_id))
    });
    match reported {
        Some((at, Some(active))) if active == id => {
            eprintln!("keyward-server: the device reported this key ({id}) active at {at}")
        }
        Some((at, other)) => eprintln!(
            "keyward-server: note: at its last check-in ({at}) the device reported {} active, not this key ({id}); \
             if it does not open the disk, its rotation may not have been committed",
            other.as_deref().unwrap_or("no escrowed key")
        ),
        None => eprintln!(
            "keyward-server: note: the device has not reported this volume yet, so this key ({id}) is not confirmed active"
        ),
    }
    Ok(())
}

async fn audit(at: &Where) -> Result<(), String> {
    let pool = db::open(&db_url(at)).await?;
    let rows: Vec<(
        String,
        String,
        String,
        Option<String>,
        Option<String>,
        Option<String>,
    )> = sqlx::query_as("SELECT at, who, action, device, volume, reason FROM audit ORDER BY id")
        .fetch_all(&pool)
        .await
        .map_err(|e| e.to_string())?;
    for (at, who, action, device, volume, reason) in rows {
        let quoted = |s: Option<String>| keyward_core::quote(s.as_deref().unwrap_or(""));
        println!(
            "{at} {action} by {} device={} volume={} reason={}",
            keyward_core::quote(&who),
            quoted(device),
            quoted(volume),
            quoted(reason)
        );
    }
    Ok(())
}
