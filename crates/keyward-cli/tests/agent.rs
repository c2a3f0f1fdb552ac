//! keywardd refuses root, and as the service user verifies through the helper on its schedule
//! and reports drift.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::Read;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

#[test]
fn agent_refuses_root() {
    let inst = Instance::prepare();
    let out = Command::new(bin("keywardd"))
        .arg("--config")
        .arg(&inst.config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("refusing to run as root"));
}

#[test]
fn agent_verifies_on_schedule_and_reports_drift() {
    let inst = Instance::prepare().start();
    inst.bootstrap();
    let log = inst.path("agent.stderr");
    let mut agent = inst.spawn_agent(&log);
    let wait_for = |needle: &str| {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            let mut text = String::new();
            std::fs::File::open(&log)
                .unwrap()
                .read_to_string(&mut text)
                .unwrap();
            if text.contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    };
    let ok = wait_for("data: service secret ok");
    // Drift: the stored secret no longer opens the service slot.
    let secret = inst.path("state/service/data");
    std::fs::write(
        &secret,
        b"0000000000000000000000000000000000000000000000000000000000000000",
    )
    .unwrap();
    let drift = wait_for("DRIFT data: service secret drift");
    let _ = agent.kill();
    let _ = agent.wait();
    assert!(ok, "{}", std::fs::read_to_string(&log).unwrap());
    assert!(drift, "{}", std::fs::read_to_string(&log).unwrap());
    let audited = inst
        .audit_lines()
        .iter()
        .filter(|l| l.contains("\"caller\":\"agent\"") && l.contains("\"op\":\"verify\""))
        .count();
    // Every second, folded into one record a minute (issue 14: the agent cannot flood the log).
    assert!(audited >= 1);
}
