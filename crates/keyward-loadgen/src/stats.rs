//! What a run measured and how it is reported: per-worker tallies by kind of request, merged
//! into summaries with nearest-rank latency percentiles, printed for people and as `RESULT`
//! lines for scripts. No I/O and no clock here.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

/// What a request was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// A signed escrow PUT, answered with a receipt.
    Escrow,
    /// A signed check-in POST, answered with the server's instructions.
    CheckIn,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Escrow => "escrow",
            Kind::CheckIn => "checkin",
        })
    }
}

/// Tallies by kind of request.
pub type ByKind = BTreeMap<Kind, Tally>;

/// How one request ended, when it was not the answer it asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Failure {
    /// The server answered with this non-200 status.
    Status(u16),
    /// A 200 whose body is not this request's receipt (or check-in answer), or a receipt
    /// that could not be written to the receipts file.
    BadAnswer,
    /// No answer: connection refused or reset, timeout.
    Transport,
    /// The load generator could not build the request (random source failed).
    Local,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Status(s) => write!(f, "{s}"),
            Failure::BadAnswer => f.write_str("bad-answer"),
            Failure::Transport => f.write_str("transport"),
            Failure::Local => f.write_str("local"),
        }
    }
}

/// One worker's counts, merged at the end.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    /// Requests answered with their receipt.
    pub ok: u64,
    /// Failed requests, by kind.
    pub failures: BTreeMap<Failure, u64>,
    /// Microseconds from send to the end of the answer, for every answered request.
    pub latencies_us: Vec<u64>,
}

impl Tally {
    /// Count a request that got an answer (`failure` is `None` for a good receipt).
    pub fn answered(&mut self, latency: Duration, failure: Option<Failure>) {
        self.latencies_us
            .push(u64::try_from(latency.as_micros()).unwrap_or(u64::MAX));
        match failure {
            None => self.ok += 1,
            Some(f) => self.failed(f),
        }
    }

    /// Count a request that failed without a timed answer.
    pub fn failed(&mut self, failure: Failure) {
        *self.failures.entry(failure).or_default() += 1;
    }

    /// Add `other`'s counts to these.
    pub fn merge(&mut self, other: Tally) {
        self.ok += other.ok;
        for (k, n) in other.failures {
            *self.failures.entry(k).or_default() += n;
        }
        self.latencies_us.extend(other.latencies_us);
    }
}

/// The figures a run reports.
#[derive(Debug)]
pub struct Summary {
    /// Requests sent in the measured window.
    pub requests: u64,
    /// Failed requests by kind.
    pub failures: BTreeMap<Failure, u64>,
    /// Receipts per second over the measured window.
    pub rps: f64,
    /// Latency percentiles in milliseconds: p50, p90, p99, max (0 when nothing was answered).
    pub p50_ms: f64,
    /// See `p50_ms`.
    pub p90_ms: f64,
    /// See `p50_ms`.
    pub p99_ms: f64,
    /// See `p50_ms`.
    pub max_ms: f64,
}

/// Nearest-rank percentile of sorted samples, in milliseconds.
fn percentile_ms(sorted_us: &[u64], pct: f64) -> f64 {
    if sorted_us.is_empty() {
        return 0.0;
    }
    let rank = (pct / 100.0 * sorted_us.len() as f64).ceil() as usize;
    let i = rank.clamp(1, sorted_us.len()) - 1;
    sorted_us[i] as f64 / 1000.0
}

impl Summary {
    /// Summarise `tally`, measured over `window`.
    pub fn new(mut tally: Tally, window: Duration) -> Self {
        tally.latencies_us.sort_unstable();
        let errors: u64 = tally.failures.values().sum();
        let secs = window.as_secs_f64();
        let l = &tally.latencies_us;
        Summary {
            requests: tally.ok + errors,
            rps: if secs > 0.0 {
                tally.ok as f64 / secs
            } else {
                0.0
            },
            p50_ms: percentile_ms(l, 50.0),
            p90_ms: percentile_ms(l, 90.0),
            p99_ms: percentile_ms(l, 99.0),
            max_ms: l.last().map_or(0.0, |&us| us as f64 / 1000.0),
            failures: tally.failures,
        }
    }

    /// Failed requests of every kind.
    pub fn errors(&self) -> u64 {
        self.failures.values().sum()
    }

    /// The last line, for scripts.
    pub fn result_line(&self) -> String {
        format!(
            "RESULT rps={:.1} p50_ms={:.2} p99_ms={:.2} errors={}",
            self.rps,
            self.p50_ms,
            self.p99_ms,
            self.errors()
        )
    }

    /// A line for one kind of request, for scripts: `RESULT kind=KIND rps=…`.
    pub fn kind_line(&self, kind: &str) -> String {
        self.result_line()
            .replacen("RESULT ", &format!("RESULT kind={kind} "), 1)
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "requests     {}", self.requests)?;
        write!(f, "errors       {}", self.errors())?;
        if !self.failures.is_empty() {
            let by_kind: Vec<String> = self
                .failures
                .iter()
                .map(|(k, n)| format!("{k}: {n}"))
                .collect();
            write!(f, " ({})", by_kind.join(", "))?;
        }
        writeln!(f)?;
        writeln!(f, "requests/s   {:.1} (answered correctly only)", self.rps)?;
        write!(
            f,
            "latency ms   p50 {:.2}  p90 {:.2}  p99 {:.2}  max {:.2}",
            self.p50_ms, self.p90_ms, self.p99_ms, self.max_ms
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tally_of(latencies_ms: impl IntoIterator<Item = u64>) -> Tally {
        let mut t = Tally::default();
        for ms in latencies_ms {
            t.answered(Duration::from_millis(ms), None);
        }
        t
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let s = Summary::new(tally_of((1..=100).rev()), Duration::from_secs(10));
        assert_eq!(
            (s.p50_ms, s.p90_ms, s.p99_ms, s.max_ms),
            (50.0, 90.0, 99.0, 100.0)
        );
        assert_eq!(s.requests, 100);
        assert!((s.rps - 10.0).abs() < 1e-9);
    }

    #[test]
    fn one_sample_is_every_percentile() {
        let s = Summary::new(tally_of([7]), Duration::from_secs(1));
        assert_eq!((s.p50_ms, s.p99_ms, s.max_ms), (7.0, 7.0, 7.0));
    }

    #[test]
    fn nothing_answered_reports_zeros_not_a_panic() {
        let mut t = Tally::default();
        t.failed(Failure::Transport);
        let s = Summary::new(t, Duration::ZERO);
        assert_eq!((s.rps, s.p99_ms, s.requests, s.errors()), (0.0, 0.0, 1, 1));
    }

    #[test]
    fn errors_are_counted_by_kind_and_excluded_from_rps() {
        let mut a = tally_of([1, 2]);
        a.answered(Duration::from_millis(3), Some(Failure::Status(401)));
        let mut b = Tally::default();
        b.answered(Duration::from_millis(4), Some(Failure::Status(401)));
        b.failed(Failure::Transport);
        a.merge(b);
        let s = Summary::new(a, Duration::from_secs(1));
        assert_eq!(s.requests, 5);
        assert_eq!(s.rps, 2.0);
        let text = s.to_string();
        assert!(
            text.contains("errors       3 (401: 2, transport: 1)"),
            "{text}"
        );
        assert_eq!(
            s.result_line(),
            "RESULT rps=2.0 p50_ms=2.00 p99_ms=4.00 errors=3"
        );
        assert_eq!(
            s.kind_line("escrow"),
            "RESULT kind=escrow rps=2.0 p50_ms=2.00 p99_ms=4.00 errors=3"
        );
    }
}
