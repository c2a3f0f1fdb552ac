//! The timed run: `concurrency` worker threads, each with its own keep-alive connection,
//! sending signed escrow PUTs for the enrolled devices in turn until the deadline. Owns the
//! clock and the threads; request construction is `device`'s, the arithmetic `stats`'s.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use keyward_core::escrow::Receipt;

use crate::device::{Device, SignedPut};
use crate::stats::{Failure, Tally};

/// What a run does.
#[derive(Debug, Clone)]
pub struct Plan {
    /// `http://host:port`, no trailing `/`.
    pub base: String,
    /// The volume name every escrow is for.
    pub volume: String,
    /// Worker threads, each one connection.
    pub concurrency: usize,
    /// Requests sent before this are not counted (connections, caches and the WAL warm up).
    pub warmup: Duration,
    /// The measured window, after the warm-up.
    pub duration: Duration,
}

/// An HTTP client for one worker: one pooled keep-alive connection, statuses as values.
pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(30)))
        .http_status_as_error(false)
        .max_idle_connections(1)
        .max_idle_connections_per_host(1)
        .build()
        .into()
}

/// A pause after a transport failure, so a dead server is not hammered with reconnects.
const TRANSPORT_BACKOFF: Duration = Duration::from_millis(10);

/// Run `plan` with `devices` (at least one). Returns the merged tally and the measured window.
pub fn run(plan: &Plan, devices: &[Device]) -> (Tally, Duration) {
    if devices.is_empty() || plan.concurrency == 0 {
        return (Tally::default(), Duration::ZERO);
    }
    let start = Instant::now();
    let measure_from = start + plan.warmup;
    let deadline = measure_from + plan.duration;
    let results: Vec<(Tally, Instant)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..plan.concurrency)
            .map(|worker| {
                scope.spawn(move || {
                    // Worker w sends for devices w, w+C, w+2C, ...: every device is used.
                    let mine = devices.iter().skip(worker % devices.len());
                    let mine = mine.step_by(plan.concurrency).cycle();
                    work(plan, mine, measure_from, deadline)
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().unwrap_or_else(|_| (panicked(), deadline)))
            .collect()
    });
    let mut total = Tally::default();
    let mut last = deadline;
    for (tally, finished) in results {
        total.merge(tally);
        last = last.max(finished);
    }
    (total, last.saturating_duration_since(measure_from))
}

/// A worker that panicked counts as one local failure rather than taking the report down.
fn panicked() -> Tally {
    let mut t = Tally::default();
    t.failed(Failure::Local);
    t
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// One worker's loop; returns its tally and when its last request ended.
fn work<'a>(
    plan: &Plan,
    devices: impl Iterator<Item = &'a Device>,
    measure_from: Instant,
    deadline: Instant,
) -> (Tally, Instant) {
    let agent = agent();
    let mut tally = Tally::default();
    let mut last = Instant::now();
    for device in devices {
        if last >= deadline {
            break;
        }
        let put = match device.escrow_put(&plan.volume, unix_now()) {
            Ok(put) => put,
            Err(_) => {
                tally.failed(Failure::Local);
                break;
            }
        };
        let sent = Instant::now();
        let outcome = send(&agent, &plan.base, device, &put);
        last = Instant::now();
        if sent < measure_from {
            continue;
        }
        match outcome {
            Ok(failure) => tally.answered(last - sent, failure),
            Err(()) => {
                tally.failed(Failure::Transport);
                std::thread::sleep(TRANSPORT_BACKOFF);
            }
        }
    }
    (tally, last)
}

/// Send `put`; `Ok(None)` for its receipt, `Ok(Some(_))` for another answer, `Err` for none.
fn send(
    agent: &ureq::Agent,
    base: &str,
    device: &Device,
    put: &SignedPut,
) -> Result<Option<Failure>, ()> {
    let mut req = agent
        .put(format!("{base}{}", put.path))
        .header("content-type", "application/json");
    for (name, value) in &put.headers {
        req = req.header(*name, value);
    }
    let mut resp = req.send(put.body.as_str()).map_err(drop)?;
    let status = resp.status().as_u16();
    // Read the whole body even on errors, so the connection goes back to the pool.
    let body = resp
        .body_mut()
        .with_config()
        .limit(64 * 1024)
        .read_to_vec()
        .map_err(drop)?;
    if status != 200 {
        return Ok(Some(Failure::Status(status)));
    }
    let ok =
        serde_json::from_slice::<Receipt>(&body).is_ok_and(|r| put.answered_by(&device.id, &r));
    Ok((!ok).then_some(Failure::BadReceipt))
}
