//! Printing replies for people (tables) and programs (`--json`, a stable shape).

use keyward_core::ipc::{FindingReport, UnlockCostReport, VerifyReport, VolumeReport, WorkReport};
use keyward_core::json_view::{StatusJson, VerifyJson};

use crate::Failure;

/// The stable shape (keyward_core::json_view, docs/MACHINE-OUTPUT.md), never a wire type.
fn print_json(v: serde_json::Result<serde_json::Value>) -> Result<(), Failure> {
    let text = v
        .and_then(|v| serde_json::to_string_pretty(&v))
        .map_err(|e| Failure::new(1, e.to_string()))?;
    println!("{text}");
    Ok(())
}

/// `keyward status`.
pub fn status(volumes: &[VolumeReport], json: bool) -> Result<(), Failure> {
    if json {
        return print_json(serde_json::to_value(StatusJson::new(volumes)));
    }
    for v in volumes {
        println!("{}:", v.volume);
        if let Some(e) = &v.error {
            println!("  cannot read: {e}");
            continue;
        }
        println!(
            "  {:<5} {:<10} {:<20} {:<14} STATE",
            "SLOT", "ROLE", "HOLDER", "KDF"
        );
        for h in &v.holders {
            let who = match (&h.user, h.uid) {
                (Some(u), Some(uid)) => format!("{u} ({uid})"),
                _ => "-".into(),
            };
            let escrow = match (&h.escrow_id, h.role.as_str()) {
                (Some(id), _) => format!(", escrowed as {id}"),
                (None, "recovery") => ", not escrowed".to_owned(),
                (None, _) => String::new(),
            };
            let since = match (h.role.as_str(), h.created) {
                ("recovery" | "service", Some(t)) => {
                    let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(t);
                    format!(", since {}", humantime::format_rfc3339_seconds(at))
                }
                _ => String::new(),
            };
            let standing = match h.standing.as_deref() {
                Some("managed") | None => String::new(),
                Some(s) => format!(", holder {s}"),
            };
            println!(
                "  {:<5} {:<10} {:<20} {:<14} {}{escrow}{since}{standing}",
                h.slot, h.role, who, h.kdf, h.state
            );
        }
        for w in &v.violations {
            println!("  warning: {w}");
        }
        for f in &v.findings {
            println!("  {}", finding(f));
        }
        if let Some(c) = &v.unlock_cost {
            for line in unlock_cost(c) {
                println!("  {line}");
            }
        }
    }
    Ok(())
}

/// The slowest unlocks at the boot prompt, as KDF work (docs/MACHINE-OUTPUT.md).
fn unlock_cost(c: &UnlockCostReport) -> Vec<String> {
    let order: Vec<String> = c.order.iter().map(ToString::to_string).collect();
    let mut lines = vec![format!(
        "boot unlock: a typed passphrase tries slots {}",
        if order.is_empty() {
            "(none)".to_owned()
        } else {
            order.join(", ")
        }
    )];
    if let (Some(user), Some(slot), Some(w)) = (&c.last_user, c.last_user_slot, &c.last_user_cost) {
        lines.push(format!(
            "  last user tried, {user} (slot {slot}): {}",
            work(w)
        ));
    }
    lines.push(format!("  wrong passphrase: {}", work(&c.wrong_password)));
    lines
}

/// `4 slots: argon2 147456 KiB-passes, pbkdf2 1000 iterations`.
fn work(w: &WorkReport) -> String {
    let unknown = match w.unknown_slots {
        0 => String::new(),
        n => format!(", {n} of unknown cost"),
    };
    format!(
        "{} slots: argon2 {} KiB-passes, pbkdf2 {} iterations{unknown}",
        w.slots, w.argon2_kib_passes, w.pbkdf2_iterations
    )
}

/// One finding as a line: `weak-kdf: keyslot 1 (unmanaged): pbkdf2-sha256, 1000 iterations: …`.
fn finding(f: &FindingReport) -> String {
    let holder = match &f.user {
        Some(u) => format!("{} {u}", f.role),
        None => f.role.clone(),
    };
    format!("{}: keyslot {} ({holder}): {}", f.finding, f.slot, f.detail)
}

/// `keyward verify`: exits 1 if any volume drifted, could not be checked, breaks an invariant, or
/// has a finding (a passphrase slot below the KDF floor).
pub fn verify(reports: &[VerifyReport], json: bool) -> Result<(), Failure> {
    if json {
        print_json(serde_json::to_value(VerifyJson::new(reports)))?;
    } else {
        for r in reports {
            match &r.detail {
                Some(d) => println!("{}: service secret {}: {d}", r.volume, r.service),
                None => println!("{}: service secret {}", r.volume, r.service),
            }
            for u in &r.users {
                let action = if u.revoked { ": slot revoked" } else { "" };
                let detail = u
                    .detail
                    .as_deref()
                    .map(|d| format!(" ({d})"))
                    .unwrap_or_default();
                println!(
                    "{}: user {} (keyslot {}): {}{action}{detail}",
                    r.volume, u.user, u.slot, u.status
                );
            }
            for w in &r.violations {
                println!("{}: violation: {w}", r.volume);
            }
            for f in &r.findings {
                println!("{}: {}", r.volume, finding(f));
            }
        }
    }
    let users_ok = |r: &VerifyReport| r.users.iter().all(|u| u.status == "managed" || u.revoked);
    if reports.iter().all(|r| {
        r.service == "ok" && users_ok(r) && r.violations.is_empty() && r.findings.is_empty()
    }) {
        Ok(())
    } else {
        Err(Failure::new(1, "verification found problems"))
    }
}
