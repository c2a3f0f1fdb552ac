//! keyward-loadgen: load for keyward-server's device API, measured.
//!
//! ```text
//! keyward-server token create --state DIR --count 200 |
//!     keyward-loadgen --server http://127.0.0.1:8443 --concurrency 32 --duration 10
//! keyward-loadgen --devices-from FLEET --mode checkin --server URL1 --server URL2
//! ```
//!
//! Enrolls one simulated device (its own Ed25519 key) per token read from standard input,
//! `--enroll-concurrency` at a time (or loads devices enrolled before, `--devices-from`; a new
//! fleet can be kept with `--save-devices`), then runs `--concurrency` threads, each on one
//! keep-alive connection to one of the `--server`s, for `--duration` seconds after `--warmup`:
//! signed escrow PUTs (a random rotation id and a fresh ~400-byte ciphertext each), check-ins,
//! or a mix of both with every receipt verified against `--server-key`. `--recipient` seals
//! real keys to the server's age recipient and `--receipts` appends each receipt to a file as
//! it arrives (for `keyward-server escrow check`). Prints requests, errors by status, answers
//! per second and latency percentiles per kind of request, and `RESULT kind=… rps=…` lines,
//! the last one `RESULT rps=... p50_ms=... p99_ms=... errors=...` for all requests. A non-200
//! answer is an error in the count, not a failure of the run; exit status 1 is for a run that
//! could not start (no tokens, an enrollment refused), 2 for bad arguments.
#![forbid(unsafe_code)]

mod device;
mod error;
mod fleet;
mod http;
mod receipts;
mod run;
mod stats;

use std::io::BufRead;
use std::path::PathBuf;
use std::process::ExitCode;
use std::str::FromStr;
use std::time::{Duration, Instant};

use clap::Parser;
use keyward_core::VolumeName;

use crate::device::Sealer;
use crate::error::LoadError;
use crate::receipts::Receipts;
use crate::run::Mode;
use crate::stats::{Summary, Tally};

/// At most this many devices per run: a limit on what standard input can make us hold.
const MAX_TOKENS: usize = 100_000;

#[derive(Parser, Debug)]
#[command(
    name = "keyward-loadgen",
    version,
    about = "Load generator for keyward-server's device API; enrollment tokens on stdin, one a line"
)]
struct Cli {
    /// A server, plain HTTP on loopback; repeat (or separate with commas) to spread the load.
    #[arg(long, default_value = "http://127.0.0.1:8443", value_delimiter = ',')]
    server: Vec<String>,
    /// What the devices send.
    #[arg(long, value_enum, default_value_t = Mode::Escrow)]
    mode: Mode,
    /// Concurrent clients, each a thread with its own keep-alive connection.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u16).range(1..=4096))]
    concurrency: u16,
    /// Seconds measured (0: only enroll).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(0..=3600))]
    duration: u64,
    /// Seconds of load before the measured window, not counted.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=600))]
    warmup: u64,
    /// Volume name in every request.
    #[arg(long, default_value = "data")]
    volume: String,
    /// Enrollments in flight at once.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=1024))]
    enroll_concurrency: u16,
    /// Use the devices in this file (from --save-devices) instead of enrolling new ones.
    #[arg(long, conflicts_with = "save_devices")]
    devices_from: Option<PathBuf>,
    /// Write the devices enrolled to this file (0600), for --devices-from.
    #[arg(long)]
    save_devices: Option<PathBuf>,
    /// The server's receipt key (server_signing_key from `keyward-server init`): every
    /// receipt's signature is verified, as the helper does.
    #[arg(long)]
    server_key: Option<String>,
    /// Seal real keys to this age recipient (the server's `recipient`), so they decrypt.
    #[arg(long)]
    recipient: Option<String>,
    /// Append every accepted receipt to this file as it arrives.
    #[arg(long)]
    receipts: Option<PathBuf>,
    /// In mixed mode, one turn in this many is an escrow; the others are check-ins.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    escrow_every: u32,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("keyward-loadgen: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `http://host:port` with a loopback host, without a trailing `/`.
fn loopback_base(url: &str) -> Result<String, LoadError> {
    let bad = || LoadError::BadUrl(url.to_owned());
    let base = url.trim_end_matches('/');
    let authority = base.strip_prefix("http://").ok_or_else(bad)?;
    let host = match authority.rsplit_once(':') {
        Some((host, port)) if port.parse::<u16>().is_ok() => host,
        Some(_) => return Err(bad()),
        None => authority,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let loopback = host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if loopback && !authority.contains('/') {
        Ok(base.to_owned())
    } else {
        Err(bad())
    }
}

fn read_tokens(input: impl BufRead) -> Result<Vec<String>, LoadError> {
    let mut tokens = Vec::new();
    for line in input.lines() {
        let line = line.map_err(LoadError::Stdin)?;
        let token = line.trim();
        if token.is_empty() || token.starts_with('#') {
            continue;
        }
        if tokens.len() == MAX_TOKENS {
            return Err(LoadError::TooManyTokens(MAX_TOKENS));
        }
        tokens.push(token.to_owned());
    }
    if tokens.is_empty() {
        return Err(LoadError::NoTokens);
    }
    Ok(tokens)
}

fn run(cli: &Cli) -> Result<(), LoadError> {
    let bases = cli
        .server
        .iter()
        .map(|s| loopback_base(s))
        .collect::<Result<Vec<_>, _>>()?;
    let volume =
        VolumeName::parse(&cli.volume).map_err(|_| LoadError::BadVolume(cli.volume.clone()))?;
    if cli.mode == Mode::Mixed && cli.server_key.is_none() {
        return Err(LoadError::NoServerKey);
    }
    let sealer = match &cli.recipient {
        None => Sealer::Random,
        Some(r) => Sealer::Age(
            age::x25519::Recipient::from_str(r.trim()).map_err(|_| LoadError::BadRecipient)?,
        ),
    };
    let receipts = Receipts::new(cli.server_key.as_deref(), cli.receipts.as_deref())?;
    let devices = match &cli.devices_from {
        Some(path) => fleet::load(path, MAX_TOKENS)?,
        None => {
            let tokens = read_tokens(std::io::stdin().lock())?;
            let began = Instant::now();
            let (devices, tally) =
                fleet::enroll(&bases, &tokens, usize::from(cli.enroll_concurrency))?;
            report_enrollment(tally, began.elapsed(), cli.enroll_concurrency);
            if let Some(path) = &cli.save_devices {
                fleet::save(path, &devices)?;
            }
            devices
        }
    };
    if cli.duration == 0 {
        return Ok(());
    }
    eprintln!(
        "keyward-loadgen: {} devices; {} clients, {:?} mode, for {} s (+{} s warm-up) against {}",
        devices.len(),
        cli.concurrency,
        cli.mode,
        cli.duration,
        cli.warmup,
        bases.join(" "),
    );
    let plan = run::Plan {
        bases,
        volume,
        mode: cli.mode,
        escrow_every: cli.escrow_every,
        sealer,
        receipts,
        concurrency: usize::from(cli.concurrency),
        warmup: Duration::from_secs(cli.warmup),
        duration: Duration::from_secs(cli.duration),
    };
    let run::Ran {
        by_kind,
        window,
        sent,
    } = run::run(&plan, &devices);
    plan.receipts.finish().map_err(|source| LoadError::File {
        path: cli
            .receipts
            .as_ref()
            .map_or_else(String::new, |p| p.display().to_string()),
        source,
    })?;
    println!(
        "devices      {}\nservers      {}\nconcurrency  {}\nwindow s     {:.2}\nsent         {sent} (warm-up included)",
        devices.len(),
        plan.bases.len(),
        plan.concurrency,
        window.as_secs_f64()
    );
    let mut all = Tally::default();
    let mut lines = Vec::new();
    for (kind, tally) in by_kind {
        let summary = Summary::new(tally.clone(), window);
        println!("== {kind}\n{summary}");
        lines.push(summary.kind_line(&kind.to_string()));
        all.merge(tally);
    }
    for line in lines {
        println!("{line}");
    }
    println!("{}", Summary::new(all, window).result_line());
    Ok(())
}

/// The enrollment phase, on standard output like the run: how long 100,000 devices take.
fn report_enrollment(tally: Tally, took: Duration, concurrency: u16) {
    let summary = Summary::new(tally, took);
    println!(
        "== enroll ({concurrency} at a time, {:.2} s)\n{summary}\n{}",
        took.as_secs_f64(),
        summary.kind_line("enroll")
    );
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn only_plain_http_on_loopback_is_a_target() {
        assert_eq!(
            loopback_base("http://127.0.0.1:8443/").unwrap(),
            "http://127.0.0.1:8443"
        );
        assert!(loopback_base("http://localhost:1").is_ok());
        assert!(loopback_base("http://[::1]:80").is_ok());
        for bad in [
            "https://127.0.0.1:8443",
            "http://10.0.0.1:8443",
            "http://127.0.0.1:x",
            "http://127.0.0.1:80/v1",
            "127.0.0.1:8443",
        ] {
            assert!(loopback_base(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn tokens_are_lines_without_blanks_or_comments() {
        let t = read_tokens(&b"# tokens\nabc\n\n  def \n"[..]).unwrap();
        assert_eq!(t, ["abc", "def"]);
        assert!(matches!(
            read_tokens(&b"\n\n"[..]),
            Err(LoadError::NoTokens)
        ));
    }
}
