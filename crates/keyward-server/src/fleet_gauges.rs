//! The fleet gauges `/metrics` serves (devices, escrows, keys seen, volumes by escrow state,
//! rotation lag), kept in memory. Computing them walks every device's latest report, so a
//! background task does it every `--metrics-refresh` and a scrape only reads the last
//! snapshot: however often and by however many `/metrics` is fetched, the database sees one
//! walk per period (issue 14). The gauges are the same at every instance, a period old at most;
//! the snapshot's start time is served with them. A failed walk keeps the previous snapshot
//! and is counted.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use crate::store::Store;

/// Devices read a page while walking the fleet.
const PAGE: i64 = 2_000;

/// Fleet totals from every device's latest report.
#[derive(Debug, Default, Clone)]
pub struct Fleet {
    /// Enrolled devices (revoked ones included).
    pub devices: u64,
    /// Revoked devices.
    pub revoked: u64,
    /// Devices with at least one check-in.
    pub checked_in: u64,
    /// Volumes by reported recovery state (`escrowed`, `pending`, …).
    pub volumes_by_state: BTreeMap<String, u64>,
    /// Age of the oldest active escrowed key, in seconds.
    pub max_key_age_secs: u64,
    /// Escrowed keys (all versions).
    pub escrows: i64,
    /// Escrowed keys an admin has seen.
    pub seen: i64,
}

/// A snapshot of the gauges.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// When the walk that made it began (Unix seconds): it holds everything committed before.
    pub started: f64,
    /// The totals.
    pub fleet: Fleet,
}

/// The latest snapshot and the walks' counters.
#[derive(Debug, Default)]
pub struct Gauges {
    latest: RwLock<Option<Arc<Snapshot>>>,
    /// Walks finished.
    pub refreshes: AtomicU64,
    /// Walks that failed (the previous snapshot was kept).
    pub failures: AtomicU64,
}

impl Gauges {
    /// The latest snapshot, if a walk has finished.
    pub fn latest(&self) -> Option<Arc<Snapshot>> {
        self.latest.read().ok().and_then(|s| s.clone())
    }

    fn set(&self, snapshot: Snapshot) {
        if let Ok(mut s) = self.latest.write() {
            *s = Some(Arc::new(snapshot));
        }
    }
}

fn unix(t: SystemTime) -> Duration {
    t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default()
}

/// Walk the fleet once, a page of devices at a time.
pub async fn take(store: &Store) -> Result<Snapshot, String> {
    let started = SystemTime::now();
    let now = unix(started).as_secs();
    let mut f = Fleet::default();
    let mut after = String::new();
    loop {
        let page = store.devices_after(&after, PAGE).await?;
        let Some(last) = page.last() else { break };
        after = last.id.clone();
        for d in &page {
            f.devices += 1;
            f.revoked += u64::from(d.revoked.is_some());
            let Some((_, report)) = d.report() else {
                continue;
            };
            f.checked_in += 1;
            for v in &report.volumes {
                let state = serde_json::to_value(v.recovery)
                    .ok()
                    .and_then(|s| s.as_str().map(str::to_owned))
                    .unwrap_or_default();
                *f.volumes_by_state.entry(state).or_default() += 1;
                if let Some(t) = v.rotated_at {
                    f.max_key_age_secs = f.max_key_age_secs.max(now.saturating_sub(t));
                }
            }
        }
        if page.len() < PAGE as usize {
            break;
        }
    }
    let (_, escrows, seen) = store.counts().await?;
    (f.escrows, f.seen) = (escrows, seen);
    Ok(Snapshot {
        started: unix(started).as_secs_f64(),
        fleet: f,
    })
}

/// Refresh the snapshot every `every`, for as long as the server runs.
pub async fn refresh_every(store: Store, gauges: Arc<Gauges>, every: Duration) {
    let mut tick = tokio::time::interval(every.max(Duration::from_millis(10)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match take(&store).await {
            Ok(snapshot) => {
                gauges.set(snapshot);
                gauges.refreshes.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                gauges.failures.fetch_add(1, Ordering::Relaxed);
                crate::log::error("refreshing the fleet gauges", &[("error", e.into())]);
            }
        }
    }
}
