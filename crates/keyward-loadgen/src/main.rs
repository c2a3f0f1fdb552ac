//! keyward-loadgen: load for keyward-server's escrow API, measured.
//!
//! ```text
//! keyward-server token create --state DIR --count 200 |
//!     keyward-loadgen --server http://127.0.0.1:8443 --concurrency 32 --duration 10
//! ```
//!
//! Enrolls one simulated device (its own Ed25519 key) per token read from standard input, then
//! runs `--concurrency` threads, each on one keep-alive connection, sending signed escrow PUTs
//! (a random rotation id and a fresh ~400-byte ciphertext each) for `--duration` seconds after
//! `--warmup`. Prints requests, errors by status, receipts per second and latency percentiles,
//! and last a line `RESULT rps=... p50_ms=... p99_ms=... errors=...` for scripts. A non-200
//! answer is an error in the count, not a failure of the run; exit status 1 is for a run that
//! could not start (no tokens, an enrollment refused), 2 for bad arguments.

mod device;
mod error;
mod run;
mod stats;

use std::io::BufRead;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;

use crate::device::Device;
use crate::error::LoadError;

/// At most this many devices per run: a limit on what standard input can make us hold.
const MAX_TOKENS: usize = 100_000;

#[derive(Parser, Debug)]
#[command(
    name = "keyward-loadgen",
    version,
    about = "Load generator for keyward-server's escrow API; enrollment tokens on stdin, one a line"
)]
struct Cli {
    /// The server, plain HTTP on loopback.
    #[arg(long, default_value = "http://127.0.0.1:8443")]
    server: String,
    /// Concurrent clients, each a thread with its own keep-alive connection.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u16).range(1..=4096))]
    concurrency: u16,
    /// Seconds measured.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    duration: u64,
    /// Seconds of load before the measured window, not counted.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=600))]
    warmup: u64,
    /// Volume name in the escrow path.
    #[arg(long, default_value = "data")]
    volume: String,
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
    let base = loopback_base(&cli.server)?;
    let tokens = read_tokens(std::io::stdin().lock())?;
    let began = Instant::now();
    let agent = run::agent();
    let devices = tokens
        .iter()
        .enumerate()
        .map(|(i, token)| Device::enroll(&agent, &base, i, token))
        .collect::<Result<Vec<_>, _>>()?;
    eprintln!(
        "keyward-loadgen: enrolled {} devices in {:.2} s; {} clients for {} s (+{} s warm-up) against {base}",
        devices.len(),
        began.elapsed().as_secs_f64(),
        cli.concurrency,
        cli.duration,
        cli.warmup,
    );
    let plan = run::Plan {
        base,
        volume: cli.volume.clone(),
        concurrency: usize::from(cli.concurrency),
        warmup: Duration::from_secs(cli.warmup),
        duration: Duration::from_secs(cli.duration),
    };
    let (tally, window) = run::run(&plan, &devices);
    let summary = stats::Summary::new(tally, window);
    println!(
        "devices      {}\nconcurrency  {}\nwindow s     {:.2}",
        devices.len(),
        plan.concurrency,
        window.as_secs_f64()
    );
    println!("{summary}");
    Ok(())
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
