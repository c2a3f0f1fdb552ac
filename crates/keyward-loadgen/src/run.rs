//! The timed run: `concurrency` worker threads, each with its own keep-alive connection to one
//! of the servers, sending signed requests for its share of the devices in turn until the
//! deadline: escrow PUTs, check-ins, or a mix (a device escrows every Nth turn and otherwise
//! checks in, reporting the escrow id of its last receipt). Owns the clock and the threads;
//! request construction is `device`'s, receipt checking `receipts`'s, the arithmetic `stats`'s,
//! the wire `http`'s.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use keyward_core::escrow::Receipt;
use keyward_core::schedule::CheckInReply;
use keyward_core::VolumeName;

use crate::device::{hex, Device, Sealer, Signed};
use crate::http::Conn;
use crate::receipts::Receipts;
use crate::stats::{ByKind, Failure, Kind, Tally};

/// What the devices send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// Escrow PUTs only (a new rotation each).
    Escrow,
    /// Check-ins only, each reporting one escrowed volume.
    Checkin,
    /// Check-ins, and an escrow every `--escrow-every` turns, receipts verified.
    Mixed,
}

/// What a run does.
#[derive(Debug)]
pub struct Plan {
    /// `http://host:port` of each server, no trailing `/`; worker `w` uses `bases[w % len]`.
    pub bases: Vec<String>,
    /// The volume every request is about.
    pub volume: VolumeName,
    /// What is sent.
    pub mode: Mode,
    /// In mixed mode, one turn in this many is an escrow.
    pub escrow_every: u32,
    /// What escrows carry.
    pub sealer: Sealer,
    /// How receipts are checked and logged.
    pub receipts: Receipts,
    /// Worker threads, each one connection.
    pub concurrency: usize,
    /// Requests sent before this are not counted (connections, caches and the WAL warm up).
    pub warmup: Duration,
    /// The measured window, after the warm-up.
    pub duration: Duration,
}

/// A pause after a transport failure, so a dead server is not hammered with reconnects.
const TRANSPORT_BACKOFF: Duration = Duration::from_millis(10);

/// What a run did: the tallies of the measured window, the window, and every request sent
/// (the warm-up's too: what the servers' CPU over the whole run was spent on).
#[derive(Debug)]
pub struct Ran {
    /// Answers and failures by kind, in the measured window.
    pub by_kind: ByKind,
    /// The measured window.
    pub window: Duration,
    /// Requests sent from start to end, warm-up included.
    pub sent: u64,
}

/// Run `plan` with `devices` (at least one).
pub fn run(plan: &Plan, devices: &[Device]) -> Ran {
    if devices.is_empty() || plan.concurrency == 0 || plan.bases.is_empty() {
        return Ran {
            by_kind: ByKind::new(),
            window: Duration::ZERO,
            sent: 0,
        };
    }
    let start = Instant::now();
    let measure_from = start + plan.warmup;
    let deadline = measure_from + plan.duration;
    let results: Vec<(ByKind, Instant, u64)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..plan.concurrency)
            .map(|worker| {
                scope.spawn(move || {
                    // Worker w sends for devices w, w+C, w+2C, ...: every device is used.
                    let mine: Vec<&Device> = devices
                        .iter()
                        .skip(worker % devices.len())
                        .step_by(plan.concurrency)
                        .collect();
                    let base = &plan.bases[worker % plan.bases.len()];
                    work(plan, base, &mine, measure_from, deadline)
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().unwrap_or_else(|_| (panicked(), deadline, 0)))
            .collect()
    });
    let mut total = ByKind::new();
    let mut last = deadline;
    let mut sent = 0;
    for (by_kind, finished, n) in results {
        for (kind, tally) in by_kind {
            total.entry(kind).or_default().merge(tally);
        }
        last = last.max(finished);
        sent += n;
    }
    Ran {
        by_kind: total,
        window: last.saturating_duration_since(measure_from),
        sent,
    }
}

/// A worker that panicked counts as one local failure rather than taking the report down.
fn panicked() -> ByKind {
    let mut t = Tally::default();
    t.failed(Failure::Local);
    ByKind::from([(Kind::Escrow, t)])
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A device's escrowed key as it would report it: (escrow id, when rotated).
type Escrowed = Option<(String, u64)>;

/// One worker's loop; returns its tallies, when its last request ended, and how many it sent.
fn work(
    plan: &Plan,
    base: &str,
    devices: &[&Device],
    measure_from: Instant,
    deadline: Instant,
) -> (ByKind, Instant, u64) {
    let mut conn = Conn::new(base);
    let mut tallies = ByKind::new();
    let mut state: Vec<Escrowed> = devices
        .iter()
        .map(|_| match plan.mode {
            // A fleet that escrowed long ago: an id the server does not know, a day old.
            Mode::Checkin => getrandom_id().map(|id| (id, unix_now().saturating_sub(86_400))),
            Mode::Escrow | Mode::Mixed => None,
        })
        .collect();
    let mut last = Instant::now();
    let mut turn: u64 = 0;
    for (i, device) in devices.iter().enumerate().cycle() {
        if last >= deadline {
            break;
        }
        turn += 1;
        let kind = match plan.mode {
            Mode::Escrow => Kind::Escrow,
            Mode::Checkin => Kind::CheckIn,
            Mode::Mixed if turn.is_multiple_of(u64::from(plan.escrow_every.max(1))) => Kind::Escrow,
            Mode::Mixed => Kind::CheckIn,
        };
        let sent = Instant::now();
        let outcome = match kind {
            Kind::Escrow => escrow(plan, &mut conn, device, &mut state[i]),
            Kind::CheckIn => checkin(plan, &mut conn, device, &state[i]),
        };
        last = Instant::now();
        let tally = tallies.entry(kind).or_default();
        match outcome {
            Err(Failure::Local) => {
                tally.failed(Failure::Local);
                break;
            }
            _ if sent < measure_from => {}
            Ok(()) => tally.answered(last - sent, None),
            Err(Failure::Transport) => {
                tally.failed(Failure::Transport);
                std::thread::sleep(TRANSPORT_BACKOFF);
            }
            Err(f) => tally.answered(last - sent, Some(f)),
        }
    }
    (tallies, last, turn)
}

fn getrandom_id() -> Option<String> {
    let mut b = [0u8; 12];
    getrandom::fill(&mut b).ok()?;
    Some(format!("esc-{}", hex(&b)))
}

/// One escrow; on a good receipt, the device's escrowed key is the new one.
fn escrow(
    plan: &Plan,
    conn: &mut Conn,
    device: &Device,
    escrowed: &mut Escrowed,
) -> Result<(), Failure> {
    let now = unix_now();
    let put = device
        .escrow_put(plan.volume.as_str(), &plan.sealer, now)
        .map_err(|_| Failure::Local)?;
    let body = send(conn, &put.req)?;
    let receipt: Receipt = serde_json::from_slice(&body).map_err(|_| Failure::BadAnswer)?;
    if !plan
        .receipts
        .accept(&device.id, &plan.volume, &put, &receipt)
    {
        return Err(Failure::BadAnswer);
    }
    *escrowed = Some((receipt.escrow_id, now));
    Ok(())
}

/// One check-in reporting the device's escrowed key (or a pending rotation, if it has none).
fn checkin(
    plan: &Plan,
    conn: &mut Conn,
    device: &Device,
    escrowed: &Escrowed,
) -> Result<(), Failure> {
    let (id, at) = match escrowed {
        Some((id, at)) => (Some(id.as_str()), *at),
        None => (None, unix_now()),
    };
    let post = device
        .checkin_post(&plan.volume, id, at, unix_now())
        .map_err(|_| Failure::Local)?;
    let body = send(conn, &post)?;
    serde_json::from_slice::<CheckInReply>(&body)
        .map(drop)
        .map_err(|_| Failure::BadAnswer)
}

/// Send `req`; the body of a 200, or why there is none.
fn send(conn: &mut Conn, req: &Signed) -> Result<Vec<u8>, Failure> {
    let headers = req.headers.each_ref().map(|(n, v)| (*n, v.as_str()));
    let (status, body) = conn
        .send(req.method, &req.path, &headers, req.body.as_bytes())
        .map_err(|_| Failure::Transport)?;
    if status != 200 {
        return Err(Failure::Status(status));
    }
    Ok(body)
}
