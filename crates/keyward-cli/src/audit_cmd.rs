//! `keyward audit [--verify] [--json]`: reads the log and its head directly (the CLI runs as
//! root), together under the log's lock; nothing here writes.

use keyward_core::audit::{self, Record};
use keyward_core::config::Config;

use crate::Failure;

pub fn run(config: &Config, verify: bool, json: bool) -> Result<(), Failure> {
    let path = config.audit_log();
    // The log and its head, read together under the log's lock (the helper holds it while it
    // writes a record and its head).
    let (bytes, head) =
        keyward_sys::audit_file::read_log_and_head(&path, &config.state_dir, 1 << 30)
            .map_err(|e| Failure::new(1, format!("audit log: {e}")))?;
    let text = String::from_utf8(bytes).map_err(|_| Failure::new(1, "audit log is not UTF-8"))?;
    let lines: Vec<&str> = text.lines().collect();
    if verify {
        let records = audit::verify(lines.iter().copied(), head.as_ref())
            .map_err(|e| Failure::new(1, format!("audit log {}: {e}", path.display())))?;
        if let Some((i, r)) = records
            .iter()
            .enumerate()
            .find(|(_, r)| r.op == "audit-discontinuity")
        {
            return Err(Failure::new(
                1,
                format!("audit log line {}: {}", i + 1, r.result),
            ));
        }
        if json {
            println!(
                "{}",
                serde_json::json!({ "verified": true, "records": records.len() })
            );
        } else {
            println!(
                "audit log verified: {} records, chain intact",
                records.len()
            );
        }
        return Ok(());
    }
    for line in &lines {
        if json {
            println!("{line}");
        } else if let Ok(r) = serde_json::from_str::<Record>(line) {
            let on = [r.volume.as_deref(), r.user.as_deref()]
                .iter()
                .flatten()
                .copied()
                .collect::<Vec<_>>()
                .join(" ");
            println!(
                "{:>5} {} {:<8} uid={:<6} pid={:<7} {:<14} {:<16} {}",
                r.seq, r.time, r.caller, r.uid, r.pid, r.op, on, r.result
            );
        }
    }
    Ok(())
}
