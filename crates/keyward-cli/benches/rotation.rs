//! End-to-end recovery rotation, measured against a baseline in the same run on the same
//! image: keyward's `keyward recovery rotate` (CLI → agent → helper begin → signed upload to the
//! embedded escrow server → receipt → helper commit, old slot retired) against stock
//! `systemd-cryptenroll --recovery-key` followed by `systemd-cryptenroll --wipe-slot=OLD`
//! (which escrows nothing). Prints p50/p90 and the ratio.
//!
//! Run with `bash scripts/bench` (release binaries).
#![allow(clippy::unwrap_used, clippy::print_stdout)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::escrow::*;
use common::*;

const ROUNDS: usize = 20;

fn percentile(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// `systemd-cryptenroll --recovery-key`, unlocking with the installer passphrase; the new slot.
fn cryptenroll_recovery(inst: &Instance) -> u32 {
    let out = Command::new("systemd-cryptenroll")
        .arg("--recovery-key")
        .arg(&inst.image)
        .env("PASSWORD", INSTALL_PASS)
        .env("SYSTEMD_LOG_LEVEL", "info")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    stderr(&out)
        .split("key slot ")
        .nth(1)
        .and_then(|s| s.trim().trim_end_matches('.').split('.').next())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| panic!("no slot in: {}", stderr(&out)))
}

fn cryptenroll_wipe(inst: &Instance, slot: u32) {
    let out = Command::new("systemd-cryptenroll")
        .arg(format!("--wipe-slot={slot}"))
        .arg(&inst.image)
        .env("PASSWORD", INSTALL_PASS)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
}

fn main() {
    if Command::new("systemd-cryptenroll")
        .arg("--version")
        .output()
        .is_err()
    {
        println!("systemd-cryptenroll is not installed: run `bash scripts/deps`");
        return;
    }
    let inst = Instance::prepare();
    // Release binaries are a shipped build: their helper refuses danger_fast_kdf. Rotations
    // make random-key slots only.
    set_table_line(&inst, "kdf", "danger_fast_kdf = false");
    let srv = Server::start(&inst);
    configure(&inst, &srv, "");
    let inst = inst.start();
    inst.bootstrap();
    let (mut agent, _) = enroll_agent(&inst, &srv);
    wait_for(&inst, "the first escrowed key", || settled_key(&inst));

    let (mut keyward, mut stock) = (Vec::new(), Vec::new());
    let mut old = cryptenroll_recovery(&inst);
    for _ in 0..ROUNDS {
        let t = Instant::now();
        let out = inst.keyward(&["recovery", "rotate", "data"], b"");
        keyward.push(t.elapsed());
        assert_eq!(code(&out), Some(0), "{}", stderr(&out));

        let t = Instant::now();
        let new = cryptenroll_recovery(&inst);
        cryptenroll_wipe(&inst, old);
        stock.push(t.elapsed());
        old = new;
    }
    let _ = agent.kill();
    let _ = agent.wait();
    let (k50, k90) = (percentile(&mut keyward, 0.5), percentile(&mut keyward, 0.9));
    let (s50, s90) = (percentile(&mut stock, 0.5), percentile(&mut stock, 0.9));
    println!("recovery rotation benchmark: {ROUNDS} rotations each, same image, same run");
    println!("{:<58} {:>10} {:>10}", "", "p50", "p90");
    println!(
        "{:<58} {:>8.1}ms {:>8.1}ms",
        "keyward recovery rotate (escrowed, receipt, commit)",
        ms(k50),
        ms(k90)
    );
    println!(
        "{:<58} {:>8.1}ms {:>8.1}ms",
        "systemd-cryptenroll --recovery-key + --wipe-slot (no escrow)",
        ms(s50),
        ms(s90)
    );
    println!(
        "keyward / systemd-cryptenroll: {:.2}x at p50, {:.2}x at p90",
        k50.as_secs_f64() / s50.as_secs_f64(),
        k90.as_secs_f64() / s90.as_secs_f64()
    );
}
