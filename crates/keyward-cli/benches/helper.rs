//! The helper's cost, measured against a baseline in the same run:
//! * round trip of a `status` request (connect, hello, request, reply) — p50 and p99 — against
//!   `sudo -n true`, the usual way to ask root for something (target: ≥ 100x faster);
//! * the same through the `keyward status` process, start-up included;
//! * idle RSS of the helper and the agent (targets: ≤ 4 MiB and ≤ 12 MiB);
//! * wake-ups (context switches) of the idle agent between scheduled checks (target: none).
//!
//! Run with `bash scripts/bench` (installs sudo, builds release binaries).
#![allow(clippy::unwrap_used, clippy::print_stdout)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use keyward_core::ipc::Request;
use keyward_sys::helper_client;

fn percentile(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i]
}

fn status_field(pid: u32, field: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// The proportional set size (KiB): shared pages counted by the share each process has.
fn pss(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("Pss:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn switches(pid: u32) -> u64 {
    status_field(pid, "voluntary_ctxt_switches:") + status_field(pid, "nonvoluntary_ctxt_switches:")
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "ok"
    } else {
        "MISSED"
    }
}

fn main() {
    if Command::new("sudo").arg("--version").output().is_err() {
        println!("sudo is not installed: run `bash scripts/bench`, which installs it");
        return;
    }
    let inst = Instance::prepare();
    // Idle means idle: one verification an hour.
    let cfg = std::fs::read_to_string(&inst.config)
        .unwrap()
        .replace("verify_interval_secs = 1", "verify_interval_secs = 3600");
    std::fs::write(&inst.config, cfg).unwrap();
    // Release binaries are a shipped build: their helper refuses danger_fast_kdf. Nothing here
    // makes a passphrase slot.
    set_table_line(&inst, "kdf", "danger_fast_kdf = false");
    let inst = inst.start();
    inst.bootstrap();
    let socket = inst.socket();
    std::thread::sleep(Duration::from_millis(200));
    let helper_pss_start = pss(inst.helper_pid());

    let (mut helper_rtt, mut sudo, mut cli) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..400 {
        let t = Instant::now();
        helper_client::call(&socket, Request::Status { volume: None }).unwrap();
        helper_rtt.push(t.elapsed());
        if round % 8 == 0 {
            let t = Instant::now();
            let ok = Command::new("sudo")
                .args(["-n", "true"])
                .status()
                .unwrap()
                .success();
            sudo.push(t.elapsed());
            assert!(ok, "sudo -n true failed");
            let t = Instant::now();
            let out = inst.keyward(&["status"], b"");
            cli.push(t.elapsed());
            assert!(out.status.success());
        }
    }
    let (h50, h99) = (
        percentile(&mut helper_rtt, 0.5),
        percentile(&mut helper_rtt, 0.99),
    );
    let (s50, s99) = (percentile(&mut sudo, 0.5), percentile(&mut sudo, 0.99));
    let (c50, c99) = (percentile(&mut cli, 0.5), percentile(&mut cli, 0.99));
    println!("helper benchmark: status requests; baseline `sudo -n true` in the same run");
    println!("{:<34} {:>10} {:>10}", "", "p50", "p99");
    println!(
        "{:<34} {:>8.3}ms {:>8.3}ms",
        "helper round trip (in-process)",
        ms(h50),
        ms(h99)
    );
    println!(
        "{:<34} {:>8.3}ms {:>8.3}ms",
        "keyward status (process)",
        ms(c50),
        ms(c99)
    );
    println!(
        "{:<34} {:>8.3}ms {:>8.3}ms",
        "sudo -n true",
        ms(s50),
        ms(s99)
    );
    let speedup = s50.as_secs_f64() / h50.as_secs_f64();
    println!(
        "helper round trip vs sudo: {speedup:.0}x faster at p50, {:.0}x at p99 (target >= 100x: {})",
        s99.as_secs_f64() / h99.as_secs_f64(),
        verdict(speedup >= 100.0)
    );

    let mut agent = inst.spawn_agent(&inst.path("agent.stderr"));
    // Let the agent make its first check, then watch both idle.
    std::thread::sleep(Duration::from_secs(1));
    let (hp, ap) = (inst.helper_pid(), agent.id());
    let (h0, a0) = (switches(hp), switches(ap));
    std::thread::sleep(Duration::from_secs(5));
    let (h1, a1) = (switches(hp), switches(ap));
    let helper_rss = status_field(hp, "VmRSS:");
    let agent_rss = status_field(ap, "VmRSS:");
    let (helper_anon, agent_anon) = (status_field(hp, "RssAnon:"), status_field(ap, "RssAnon:"));
    let (helper_pss, agent_pss) = (pss(hp), pss(ap));
    let _ = agent.kill();
    let _ = agent.wait();
    println!(
        "idle Pss: helper {helper_pss_start} KiB after bootstrap, {helper_pss} KiB after 400 requests (target <= 4096: {}), agent {agent_pss} KiB",
        verdict(helper_pss_start.max(helper_pss) <= 4096),
    );
    println!(
        "idle RSS: helper {helper_rss} KiB, agent {agent_rss} KiB (agent target <= 12288: {}); private (RssAnon): helper {helper_anon} KiB, agent {agent_anon} KiB; the rest is library pages",
        verdict(agent_rss <= 12288)
    );
    println!(
        "idle wake-ups over 5 s between checks: helper {}, agent {} (target 0: {})",
        h1 - h0,
        a1 - a0,
        verdict(a1 == a0)
    );
}
