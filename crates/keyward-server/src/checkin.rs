//! Device check-in: a signed report of each volume's escrow state and service health, kept as
//! the device's latest report, answered with the volumes whose active recovery key an admin
//! has seen (rotate-after-use). Also the admin's view of those reports (`device list`).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::Json;
use keyward_core::schedule::{CheckIn, CheckInReply};

use crate::app_state::AppState;
use crate::device_auth::{bad, internal, refuse, replayed, revoked, token_ok, verify, ApiError};
use crate::store::{Device, Store};
use crate::writer::{CheckInWrite, Outcome, Unit};

/// At most this many volumes in one report.
const MAX_VOLUMES: usize = 64;

/// At most this many command reports in one check-in: as many outcomes as the agent keeps
/// unreported (`keyward-agent`'s `MAX_UNREPORTED`). Each is a statement in the writer's
/// transaction, which every device waits behind; the body limit alone let a device send
/// about a thousand.
const MAX_COMMAND_REPORTS: usize = 256;

/// `POST /v1/devices/{device}/checkin`. The report is kept, the device's command reports
/// recorded and its answer read in the writer's transaction (`writer/batch.rs`).
pub async fn checkin(
    State(s): State<Arc<AppState>>,
    Path(device): Path<String>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<CheckInReply>, ApiError> {
    let nonce = verify(&s, &device, "POST", uri.path(), &headers, &body).await?;
    let write = match parse_body(&body) {
        Ok(write) => write,
        Err(why) => return Err(refuse(&s, nonce, why).await),
    };
    match s
        .writer
        .submit(Unit::CheckIn(nonce, write))
        .await
        .map_err(internal)?
    {
        Outcome::CheckedIn { rotate, commands } => {
            let commands = commands
                .iter()
                .map(|c| serde_json::from_str(c))
                .collect::<Result<_, _>>()
                .map_err(internal)?;
            Ok(Json(CheckInReply { rotate, commands }))
        }
        Outcome::Replayed => Err(replayed()),
        Outcome::Revoked => Err(revoked()),
        other => Err(internal(format!("check-in answered {other:?}"))),
    }
}

/// A check-in body, checked, as the writer keeps it.
fn parse_body(body: &[u8]) -> Result<CheckInWrite, ApiError> {
    let report: CheckIn =
        serde_json::from_slice(body).map_err(|_| bad("malformed check-in report"))?;
    if report.volumes.len() > MAX_VOLUMES {
        return Err(bad("too many volumes"));
    }
    if report.commands.len() > MAX_COMMAND_REPORTS {
        return Err(bad("too many command reports"));
    }
    // A command id is the server's own `[A-Za-z0-9_-]{1,64}`; the agent echoes no other.
    if !report.commands.iter().all(|c| token_ok(&c.id, 1)) {
        return Err(bad("bad command id"));
    }
    let mut escrow_ids = Vec::new();
    for v in &report.volumes {
        let Some(id) = &v.escrow_id else { continue };
        if !token_ok(id, 1) {
            return Err(bad("bad escrow_id"));
        }
        escrow_ids.push((v.volume.clone(), id.clone()));
    }
    // Re-serialised from the parsed form: only known fields, checked types, are stored.
    Ok(CheckInWrite {
        report: serde_json::to_string(&report).map_err(internal)?,
        escrow_ids,
        commands: report.commands,
    })
}

/// `keyward-server device list`: every device, whether it is revoked, its last check-in, and
/// per volume the escrow state it reported and whether its key waits for rotation after use.
pub async fn list(store: &Store, json: bool) -> Result<(), String> {
    let mut all = Vec::new();
    for d in store.devices("", i64::MAX).await? {
        let last = Device::report(&d);
        let mut volumes = Vec::new();
        for v in last
            .as_ref()
            .map(|(_, r)| r.volumes.as_slice())
            .unwrap_or(&[])
        {
            let seen = match &v.escrow_id {
                Some(id) => store.seen(&d.id, v.volume.as_str(), id).await?,
                None => false,
            };
            let mut entry = serde_json::to_value(v).map_err(|e| e.to_string())?;
            entry["rotate_after_use"] = seen.into();
            volumes.push(entry);
        }
        let revoked = d
            .revoked
            .as_ref()
            .map(|r| serde_json::json!({ "at": r.at, "by": r.by }));
        all.push(serde_json::json!({
            "device": d.id,
            "state": if revoked.is_some() { "revoked" } else { "active" },
            "revoked": revoked,
            "enrolled": d.created,
            "last_checkin": last.as_ref().map(|(at, _)| at.clone()),
            "volumes": volumes,
        }));
    }
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&all).map_err(|e| e.to_string())?
        );
        return Ok(());
    }
    println!(
        "{:<28} {:<7} {:<22} {:<8} {:<11} {:<30} SERVICE",
        "DEVICE", "STATE", "LAST CHECK-IN", "VOLUME", "RECOVERY", "ESCROW"
    );
    for d in &all {
        let last = d["last_checkin"]
            .as_str()
            .map_or("never", |t| t.get(..19).unwrap_or(t));
        let state = d["state"].as_str().unwrap_or("");
        let volumes = d["volumes"].as_array().map(Vec::as_slice).unwrap_or(&[]);
        if volumes.is_empty() {
            println!(
                "{:<28} {state:<7} {last:<22}",
                d["device"].as_str().unwrap_or("")
            );
        }
        for v in volumes {
            let mut escrow = v["escrow_id"].as_str().unwrap_or("-").to_owned();
            if v["rotate_after_use"] == true {
                escrow.push_str(" (seen; rotating)");
            }
            println!(
                "{:<28} {state:<7} {last:<22} {:<8} {:<11} {escrow:<30} {}",
                d["device"].as_str().unwrap_or(""),
                v["volume"].as_str().unwrap_or(""),
                v["recovery"].as_str().unwrap_or(""),
                v["service"].as_str().unwrap_or(""),
            );
        }
    }
    Ok(())
}
