//! Operability: a middleware that counts and logs every request (route template, status,
//! latency; never a body), and `/metrics` in the Prometheus text format: this instance's
//! request counters, latency sums and write batches, plus fleet gauges read from the database
//! (devices, escrows, keys waiting for rotation after use, volumes by escrow state, rotation
//! lag).
//! Request counters are per instance, as Prometheus expects; gauges are the same everywhere.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::api::{internal, ApiError, AppState};

/// Per-route request counts and latency sums, by status.
#[derive(Debug, Default)]
pub struct Counters {
    by_route: Mutex<BTreeMap<(String, u16), (u64, f64)>>,
}

/// Count and log one request.
pub async fn track(State(s): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = req.method().to_string();
    let start = Instant::now();
    let resp = next.run(req).await;
    let secs = start.elapsed().as_secs_f64();
    let status = resp.status().as_u16();
    if let Ok(mut m) = s.counters.by_route.lock() {
        let e = m.entry((format!("{method} {route}"), status)).or_default();
        e.0 += 1;
        e.1 += secs;
    }
    if s.log_requests || status >= 500 {
        crate::log::info(
            "request",
            &[
                ("method", method.into()),
                ("route", route.into()),
                ("status", status.into()),
                ("ms", ((secs * 1e6).round() / 1e3).into()),
            ],
        );
    }
    resp
}

fn label(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// `GET /metrics`.
pub async fn metrics(State(s): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let mut out = String::new();
    out.push_str("# HELP keyward_http_requests_total Requests served by this instance.\n");
    out.push_str("# TYPE keyward_http_requests_total counter\n");
    let snapshot: Vec<((String, u16), (u64, f64))> = s
        .counters
        .by_route
        .lock()
        .map(|m| m.iter().map(|(k, v)| (k.clone(), *v)).collect())
        .unwrap_or_default();
    for ((route, status), (n, _)) in &snapshot {
        let _ = writeln!(
            out,
            "keyward_http_requests_total{{route=\"{}\",status=\"{status}\"}} {n}",
            label(route)
        );
    }
    out.push_str("# HELP keyward_http_request_seconds_sum Time spent serving requests.\n");
    out.push_str("# TYPE keyward_http_request_seconds_sum counter\n");
    for ((route, status), (_, secs)) in &snapshot {
        let _ = writeln!(
            out,
            "keyward_http_request_seconds_sum{{route=\"{}\",status=\"{status}\"}} {secs:.6}",
            label(route)
        );
    }
    let w = s.writer.stats();
    for (name, help, v) in [
        (
            "keyward_writer_batches_total",
            "Write transactions of this instance's writer.",
            &w.batches,
        ),
        (
            "keyward_writer_writes_total",
            "Device API writes (enrollments, escrows, check-ins, nonces) in those transactions.",
            &w.units,
        ),
        (
            "keyward_writer_retried_batches_total",
            "Write transactions that failed and were retried one write at a time.",
            &w.retried,
        ),
    ] {
        let v = v.load(std::sync::atomic::Ordering::Relaxed);
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
        );
    }
    let (devices, escrows, seen) = s.store.counts().await.map_err(internal)?;
    for (name, help, v) in [
        ("keyward_devices", "Enrolled devices.", devices),
        (
            "keyward_escrows",
            "Escrowed recovery keys (all versions).",
            escrows,
        ),
        (
            "keyward_escrows_seen",
            "Escrowed keys an admin has seen (rotation after use requested).",
            seen,
        ),
    ] {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
    }
    let fleet = crate::checkin::fleet(&s.store).await.map_err(internal)?;
    out.push_str(
        "# HELP keyward_volumes Volumes by the escrow state their device last reported.\n",
    );
    out.push_str("# TYPE keyward_volumes gauge\n");
    for (state, n) in &fleet.volumes_by_state {
        let _ = writeln!(out, "keyward_volumes{{recovery=\"{}\"}} {n}", label(state));
    }
    out.push_str("# HELP keyward_devices_checked_in Devices that have checked in at least once.\n");
    out.push_str("# TYPE keyward_devices_checked_in gauge\n");
    let _ = writeln!(out, "keyward_devices_checked_in {}", fleet.checked_in);
    out.push_str(
        "# HELP keyward_rotation_lag_seconds Age of the oldest active escrowed recovery key.\n",
    );
    out.push_str("# TYPE keyward_rotation_lag_seconds gauge\n");
    let _ = writeln!(
        out,
        "keyward_rotation_lag_seconds {}",
        fleet.max_key_age_secs
    );
    Ok(([("content-type", "text/plain; version=0.0.4")], out).into_response())
}
