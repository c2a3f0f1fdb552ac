//! The device list (search by id substring, the devices that need someone first) and a
//! device's page: its volumes as last reported, every escrow the server holds for it, and —
//! for a role that may — the form that requests a recovery key (two-person reveal) or reveals
//! it at once (`[reveal] require_approval = false`). Reads only; requesting is `requests.rs`,
//! revealing `reveal.rs`.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::response::Html;
use keyward_core::schedule::{CheckIn, RecoveryState, VolumeCheckIn};
use maud::{html, Markup};
use serde::Deserialize;

use super::health::{self, DeviceHealth, Held, Reported, VolumeHealth};
use super::layout::{self, badge, device_href, when};
use super::session::Admin;
use super::{db, UiError};
use crate::app_state::AppState;
use crate::roles::Right;
use crate::store::{Device, Escrow};

/// Devices on one page; a search narrows a fleet down.
const PAGE: usize = 500;
/// Longest search kept.
const MAX_SEARCH: usize = 100;

/// `?q=`: a substring of the device id.
#[derive(Deserialize)]
pub struct Search {
    #[serde(default)]
    q: String,
}

/// A device with what the pages say about it.
struct Assessed {
    device: Device,
    report: Option<CheckIn>,
    volumes: Vec<(VolumeCheckIn, VolumeHealth)>,
    health: DeviceHealth,
}

fn recovery_word(r: RecoveryState) -> String {
    serde_json::to_value(r)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| "unknown".into())
}

fn service_word(v: &VolumeCheckIn) -> String {
    serde_json::to_value(v.service)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| "unknown".into())
}

/// Judge each device's last report against what the server holds, in one query for all.
async fn assess(s: &AppState, devices: Vec<Device>, now: u64) -> Result<Vec<Assessed>, UiError> {
    let reports: Vec<Option<CheckIn>> =
        devices.iter().map(|d| d.report().map(|(_, r)| r)).collect();
    let ids: Vec<&str> = reports
        .iter()
        .flatten()
        .flat_map(|r| r.volumes.iter().filter_map(|v| v.escrow_id.as_deref()))
        .collect();
    let marks = db::escrow_marks(s.store.pool(), &ids).await?;
    let stale_after = s.ui.stale_after_secs;
    Ok(devices
        .into_iter()
        .zip(reports)
        .map(|(device, report)| {
            let held = |id: &str| match marks.get(id) {
                Some((owner, seen)) if *owner == device.id => Held::Stored { seen: *seen },
                _ => Held::Missing,
            };
            let volumes: Vec<(VolumeCheckIn, VolumeHealth)> = report
                .iter()
                .flat_map(|r| r.volumes.iter())
                .map(|v| {
                    let reported = Reported {
                        recovery: v.recovery,
                        escrow_id: v.escrow_id.as_deref(),
                    };
                    (v.clone(), health::volume_health(reported, held))
                })
                .collect();
            let last = device
                .checkin
                .as_ref()
                .and_then(|(at, _)| layout::unix_of(at));
            let healths: Vec<VolumeHealth> = volumes.iter().map(|(_, h)| *h).collect();
            let health = if device.revoked.is_some() {
                DeviceHealth::Revoked
            } else {
                health::device_health(now, last, &healths, stale_after)
            };
            Assessed {
                device,
                report,
                volumes,
                health,
            }
        })
        .collect())
}

fn device_badge(h: DeviceHealth) -> Markup {
    let title = match h {
        DeviceHealth::Stale { silent_secs } => {
            format!("no check-in for {}", layout::span(silent_secs))
        }
        DeviceHealth::Revoked => "revoked: the server refuses its requests".into(),
        DeviceHealth::NeverCheckedIn => "enrolled, but it has never reported".into(),
        DeviceHealth::Attention => "a volume has no key escrowed here".into(),
        DeviceHealth::NoVolumes => "it reported no volumes".into(),
        DeviceHealth::Pending => "a key rotation is under way".into(),
        DeviceHealth::Verified => "every volume's active key is escrowed here".into(),
    };
    let label = match h {
        DeviceHealth::Stale { silent_secs } => format!("stale · {}", layout::span(silent_secs)),
        other => other.label().to_owned(),
    };
    badge(&label, h.tone(), &title)
}

/// `GET /ui/devices?q=`.
pub async fn list(
    State(s): State<Arc<AppState>>,
    admin: Admin,
    Query(search): Query<Search>,
) -> Result<Html<String>, UiError> {
    let q: String = search.q.trim().chars().take(MAX_SEARCH).collect();
    let limit = i64::try_from(PAGE + 1).unwrap_or(i64::MAX);
    let mut devices = s.store.devices(&q, limit).await?;
    let truncated = devices.len() > PAGE;
    devices.truncate(PAGE);
    let now = crate::clock::unix_secs();
    let mut rows = assess(&s, devices, now).await?;
    rows.sort_by_key(|a| a.health.urgency());
    let count = |f: fn(&DeviceHealth) -> bool| rows.iter().filter(|a| f(&a.health)).count();
    let needs = count(|h| matches!(h, DeviceHealth::Attention | DeviceHealth::Stale { .. }));
    let pending = count(|h| *h == DeviceHealth::Pending);
    let verified = count(|h| *h == DeviceHealth::Verified);
    let body = html! {
        div.heading {
            h1 { "Devices" }
            form.search method="get" action="/ui/devices" role="search" {
                label.visually-hidden for="q" { "Device id contains" }
                input #q type="search" name="q" value=(q) placeholder="Search device id"
                    autocomplete="off" spellcheck="false" autofocus;
                button type="submit" { "Search" }
                @if !q.is_empty() { a.clear href="/ui/devices" { "Clear" } }
            }
        }
        p.summary {
            strong { (rows.len()) } @if truncated { "+" } " device" @if rows.len() != 1 { "s" }
            @if !q.is_empty() { " matching “" code { (q) } "”" }
            " · " span.count.bad { (needs) " need attention" }
            " · " span.count.busy { (pending) " pending" }
            " · " span.count.good { (verified) " verified" }
        }
        @if rows.is_empty() {
            p.empty { @if q.is_empty() { "No devices enrolled yet." } @else { "No device id contains that." } }
        } @else {
            table.devices {
                thead { tr { th { "Device" } th { "Health" } th { "Last check-in" } th { "Volumes" } } }
                tbody {
                    @for a in &rows {
                        tr {
                            td { a.device-link href=(device_href(&a.device.id)) { (a.device.id) } }
                            td { (device_badge(a.health)) }
                            td {
                                @match &a.device.checkin {
                                    Some((at, _)) => (when(at, now)),
                                    None => span.muted { "never" },
                                }
                            }
                            td { div.volumes {
                                @if a.device.checkin.is_none() { span.muted { "—" } }
                                @for (v, h) in &a.volumes {
                                    span.volume title=(h.explain()) {
                                        code { (v.volume.as_str()) }
                                        " " (badge(h.label(), h.tone(), h.explain()))
                                        " " span.holders { (v.holders) " holder" @if v.holders != 1 { "s" } }
                                    }
                                }
                                @if a.report.is_none() && a.device.checkin.is_some() {
                                    span.muted { "report unreadable" }
                                }
                            } }
                        }
                    }
                }
            }
            @if truncated { p.muted { "Only the first " (PAGE) " are shown: search to narrow." } }
        }
    };
    Ok(Html(
        layout::page("Devices", Some(&admin), body).into_string(),
    ))
}

/// `GET /ui/devices/{device}`.
pub async fn page(
    State(s): State<Arc<AppState>>,
    admin: Admin,
    Path(id): Path<String>,
) -> Result<Html<String>, UiError> {
    let device = s
        .store
        .device(&id)
        .await?
        .ok_or(UiError::NotFound("no device has that id"))?;
    let now = crate::clock::unix_secs();
    let escrows = s.store.escrows(&id).await?;
    let assessed = assess(&s, vec![device], now)
        .await?
        .pop()
        .ok_or_else(|| UiError::Internal("assessed nothing".into()))?;
    let active: HashMap<&str, &str> = assessed
        .volumes
        .iter()
        .filter_map(|(v, _)| Some((v.volume.as_str(), v.escrow_id.as_deref()?)))
        .collect();
    // Every volume the device reported or the server holds a key for.
    let volumes: BTreeSet<&str> = assessed
        .volumes
        .iter()
        .map(|(v, _)| v.volume.as_str())
        .chain(escrows.iter().map(|(vol, _)| vol.as_str()))
        .collect();
    let d = &assessed.device;
    let body = html! {
        p.crumbs { a href="/ui/devices" { "← Devices" } }
        div.title-row {
            h1 { "Device " code { (d.id) } }
            (device_badge(assessed.health))
        }
        dl.facts {
            dt { "Enrolled" } dd { (when(&d.created, now)) }
            dt { "Last check-in" } dd {
                @match &d.checkin { Some((at, _)) => (when(at, now)), None => "never" }
            }
            @if let Some(r) = &d.revoked {
                dt { "Revoked" } dd.revoked { (when(&r.at, now)) " by " (r.by) }
            }
        }
        h2 { "Volumes" }
        @if assessed.volumes.is_empty() {
            p.empty { "The device has not reported any volume." }
        } @else {
            table.volumes {
                thead { tr {
                    th { "Volume" } th { "Escrow" } th { "Active escrow id" } th { "Reported state" }
                    th { "Unlock holders" } th { "Service secret" } th { "Violations" }
                } }
                tbody {
                    @for (v, h) in &assessed.volumes {
                        tr {
                            td { code { (v.volume.as_str()) } }
                            td { (badge(h.label(), h.tone(), h.explain())) div.explain { (h.explain()) } }
                            td { @match &v.escrow_id { Some(e) => code.escrow-id { (e) }, None => span.muted { "none" } } }
                            td { (recovery_word(v.recovery)) }
                            td.num { (v.holders) }
                            td { (service_word(v)) }
                            td.num { @if v.violations > 0 { strong.bad-text { (v.violations) } } @else { "0" } }
                        }
                    }
                }
            }
        }
        h2 { "Escrowed keys" }
        @if escrows.is_empty() {
            p.empty { "The server holds no key for this device." }
        } @else {
            table.escrows {
                thead { tr { th { "Stored" } th { "Volume" } th { "Escrow id" } th { "Status" } } }
                tbody {
                    @for (vol, e) in &escrows {
                        tr {
                            td { (when(&e.created, now)) }
                            td { code { (vol) } }
                            td { code.escrow-id { (e.id) } }
                            td {
                                @if active.get(vol.as_str()) == Some(&e.id.as_str()) {
                                    span.badge.good { "active" } " "
                                }
                                @if e.rotate_after_use { span.badge.busy { "seen" } } @else { span.muted { "not seen" } }
                            }
                        }
                    }
                }
            }
        }
        @if !admin.role.may(Right::RequestReveal) {
            h2 { "Recovery keys" }
            p.empty #no-reveal { "Your role (" (admin.role.as_str()) ") does not show recovery keys."
                @if admin.role.may(Right::Decide) { " Requests from the help desk wait for you under "
                    a href="/ui/requests" { "Requests" } "." } }
        } @else if s.reveal.require_approval {
            (request_forms(&admin, &d.id, &volumes, &escrows, s.reveal.approval_hours))
        } @else {
        h2 { "Show a recovery key" }
        @if volumes.is_empty() {
            p.empty { "Nothing to show." }
        }
        @for vol in volumes.iter().filter(|v| !escrows.iter().any(|(e, _)| e == *v)) {
            p.empty { "No key for volume " code { (vol) } " is escrowed here." }
        }
        @for vol in volumes.iter().filter(|v| escrows.iter().any(|(e, _)| e == *v)) {
            form.reveal method="post" action={ (device_href(&d.id)) "/reveal" } {
                input type="hidden" name="csrf" value=(admin.csrf);
                input type="hidden" name="volume" value=(vol);
                h3 { "Volume " code { (vol) } }
                label for={ "escrow-" (vol) } { "Key" }
                select id={ "escrow-" (vol) } name="escrow" {
                    option value="" selected { "the latest stored" }
                    @for (_, e) in escrows.iter().filter(|(v, _)| v == vol) {
                        option value=(e.id) {
                            (e.id) " · " (e.created.get(..16).unwrap_or(&e.created).replace('T', " "))
                            @if active.get(*vol) == Some(&e.id.as_str()) { " · active" }
                        }
                    }
                }
                label for={ "reason-" (vol) } { "Reason (recorded in the audit log)" }
                textarea id={ "reason-" (vol) } name="reason" required maxlength=(crate::keys::MAX_REASON)
                    rows="2" placeholder="e.g. ticket 4711: user locked out after a firmware update" {}
                p.warning {
                    "Showing a key is audited under your name, and the device replaces the key "
                    "at its next check-in."
                }
                button.danger type="submit" { "Show recovery key" }
            }
        }
        }
    };
    Ok(Html(
        layout::page(&format!("Device {id}"), Some(&admin), body).into_string(),
    ))
}

/// The two-person reveal's first step: one request form per volume with an escrowed key.
fn request_forms(
    admin: &Admin,
    device: &str,
    volumes: &BTreeSet<&str>,
    escrows: &[(String, Escrow)],
    hours: u32,
) -> Markup {
    let held = |v: &&&str| escrows.iter().any(|(e, _)| e == **v);
    html! {
        h2 { "Request a recovery key" }
        @if volumes.is_empty() {
            p.empty { "Nothing to request." }
        }
        @for vol in volumes.iter().filter(|v| !held(v)) {
            p.empty { "No key for volume " code { (vol) } " is escrowed here." }
        }
        @for vol in volumes.iter().filter(held) {
            form.reveal.request method="post" action={ (device_href(device)) "/request" } {
                input type="hidden" name="csrf" value=(admin.csrf);
                input type="hidden" name="volume" value=(vol);
                h3 { "Volume " code { (vol) } }
                label for={ "reason-" (vol) } { "Reason (recorded in the audit log)" }
                textarea id={ "reason-" (vol) } name="reason" required maxlength=(crate::keys::MAX_REASON)
                    rows="2" placeholder="e.g. ticket 4711: user locked out after a firmware update" {}
                p.warning {
                    "A second person (an approver) must approve the request. Then you may reveal "
                    "the key once, within " (hours) " hours, under My requests; the device "
                    "replaces it at its next check-in."
                }
                button.primary type="submit" { "Request key" }
            }
        }
    }
}
