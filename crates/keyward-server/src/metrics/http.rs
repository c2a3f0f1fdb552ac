//! `/metrics` and the request-counting middleware: the handlers, over the shared state (the
//! counters and the token they read are the parent module's).

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::header::WWW_AUTHENTICATE;
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::authorized;
use crate::app_state::AppState;

/// The label of a request's method: one of the standard methods, or `OTHER`, so an outsider
/// sending made-up methods (`X1`, `X2`, …) cannot grow the counters without bound.
fn method_label(m: &axum::http::Method) -> &'static str {
    match m.as_str() {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "POST" => "POST",
        "PUT" => "PUT",
        "DELETE" => "DELETE",
        "PATCH" => "PATCH",
        "OPTIONS" => "OPTIONS",
        "CONNECT" => "CONNECT",
        "TRACE" => "TRACE",
        _ => "OTHER",
    }
}

/// Count and log one request.
pub async fn track(State(s): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = method_label(req.method());
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

/// `GET /metrics`: memory only, no database.
pub async fn metrics(State(s): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if let Some(token) = &s.metrics_token {
        if !authorized(token, &headers) {
            return (
                StatusCode::UNAUTHORIZED,
                [(WWW_AUTHENTICATE, "Bearer")],
                "a bearer token is required\n",
            )
                .into_response();
        }
    }
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
    let g = &s.gauges;
    for (name, help, v) in [
        (
            "keyward_fleet_refreshes_total",
            "Walks over the fleet that refreshed the gauges below.",
            &g.refreshes,
        ),
        (
            "keyward_fleet_refresh_failures_total",
            "Walks that failed (the gauges below kept their previous values).",
            &g.failures,
        ),
    ] {
        let v = v.load(std::sync::atomic::Ordering::Relaxed);
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
        );
    }
    if let Some(snapshot) = g.latest() {
        fleet_gauges(&mut out, &snapshot);
    }
    if let Some(n) = &s.notifier {
        notify_metrics(&mut out, &n.stats);
    }
    ([("content-type", "text/plain; version=0.0.4")], out).into_response()
}

/// The `[notify]` webhook's: this instance's counters, and the outbox's depth at its last look.
fn notify_metrics(out: &mut String, stats: &crate::notify::Stats) {
    use std::sync::atomic::Ordering::Relaxed;
    for (name, help, v) in [
        (
            "keyward_notify_delivered_total",
            "Webhook events the receiver accepted (2xx).",
            &stats.delivered,
        ),
        (
            "keyward_notify_failed_attempts_total",
            "Webhook attempts that failed (retried later, or given up).",
            &stats.failed_attempts,
        ),
        (
            "keyward_notify_given_up_total",
            "Webhook events given up on (each audited as notify-failed).",
            &stats.given_up,
        ),
    ] {
        let v = v.load(Relaxed);
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
        );
    }
    let depth = stats.depth.load(Relaxed);
    let _ = writeln!(
        out,
        "# HELP keyward_notify_outbox_events Webhook events waiting in the outbox (all instances').\n\
         # TYPE keyward_notify_outbox_events gauge\nkeyward_notify_outbox_events {depth}"
    );
}

/// The gauges of one fleet snapshot.
fn fleet_gauges(out: &mut String, snapshot: &crate::fleet_gauges::Snapshot) {
    let fleet = &snapshot.fleet;
    let _ = writeln!(
        out,
        "# HELP keyward_fleet_snapshot_timestamp_seconds When the walk behind the fleet gauges began.\n\
         # TYPE keyward_fleet_snapshot_timestamp_seconds gauge\n\
         keyward_fleet_snapshot_timestamp_seconds {:.3}",
        snapshot.started
    );
    for (name, help, v) in [
        (
            "keyward_devices",
            "Enrolled devices (revoked ones included).",
            i64::try_from(fleet.devices).unwrap_or(i64::MAX),
        ),
        (
            "keyward_devices_revoked",
            "Revoked devices.",
            i64::try_from(fleet.revoked).unwrap_or(i64::MAX),
        ),
        (
            "keyward_escrows",
            "Escrowed recovery keys (all versions).",
            fleet.escrows,
        ),
        (
            "keyward_escrows_seen",
            "Escrowed keys an admin has seen (rotation after use requested).",
            fleet.seen,
        ),
    ] {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
    }
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
}
