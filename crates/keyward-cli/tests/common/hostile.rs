//! The hostile escrow server (`tests/hostile/escrow_server.py`) as a test drives it: started in
//! one misbehaviour, its requests counted, stopped on drop; and the agent's side of an
//! episode: the agent itself (killed on drop, also when a test fails), which server its
//! enrollment points at, and how much CPU and memory it has used.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

use super::{chmod, Instance, NOBODY};

pub struct Hostile {
    pub url: String,
    log: PathBuf,
    child: Child,
}

impl Hostile {
    /// Start in `mode` with the script's further `args` (`--reply FILE`, `--upstream URL`, …).
    pub fn start(inst: &Instance, mode: &str, args: &[&str]) -> Self {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/hostile/escrow_server.py");
        static STARTED: AtomicUsize = AtomicUsize::new(0);
        let n = STARTED.fetch_add(1, Ordering::Relaxed);
        let log = inst.path(&format!("hostile-{n}-{mode}.log"));
        let mut child = Command::new("python3")
            .arg(script)
            .arg(mode)
            .arg("--log")
            .arg(&log)
            .args(args)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut first = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut first)
            .unwrap();
        let url = first
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("hostile server did not start: {first}"))
            .to_owned();
        Hostile { url, log, child }
    }

    /// Every request it received, "METHOD PATH", in order.
    pub fn requests(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// How long the agent read each reply it hung up on, in seconds, in order.
    pub fn gave_up_after(&self) -> Vec<f64> {
        let mut log = self.log.clone().into_os_string();
        log.push(".gaveup");
        std::fs::read_to_string(log)
            .unwrap_or_default()
            .lines()
            .map(|l| {
                l.rsplit_once("gave up after ")
                    .and_then(|(_, secs)| secs.trim().parse().ok())
                    .unwrap_or_else(|| panic!("not a gave-up line: {l}"))
            })
            .collect()
    }
}

/// The agent, killed and reaped when dropped (a failing test leaves no agent behind).
pub struct Agent(pub Child);

impl Agent {
    pub fn id(&self) -> u32 {
        self.0.id()
    }

    /// Whether it is still running.
    pub fn alive(&mut self) -> bool {
        self.0.try_wait().unwrap().is_none()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Hostile {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Point the enrolled agent at `url` from its next request on, as re-enrolling with a server
/// at that address would: its `device.json` (the agent's own, 0600) is rewritten.
pub fn point_agent_at(inst: &Instance, url: &str) {
    let file = inst.path("agent/device.json");
    let mut enrollment: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    enrollment["url"] = url.into();
    let tmp = inst.path("agent/device.json.new");
    std::fs::write(&tmp, serde_json::to_vec(&enrollment).unwrap()).unwrap();
    std::os::unix::fs::chown(&tmp, Some(NOBODY), Some(NOBODY)).unwrap();
    chmod(&tmp, 0o600);
    std::fs::rename(&tmp, &file).unwrap();
}

/// The agent's device key (its `device.key`, read as root).
pub fn device_key(inst: &Instance) -> ed25519_dalek::SigningKey {
    use base64::Engine;
    let raw = std::fs::read_to_string(inst.path("agent/device.key")).unwrap();
    let seed = base64::engine::general_purpose::STANDARD
        .decode(raw.trim())
        .unwrap();
    ed25519_dalek::SigningKey::from_bytes(&seed.try_into().unwrap())
}

/// User plus system CPU time `pid` has used, in clock ticks (1/100 s on Linux).
pub fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let after = stat.rsplit_once(')').unwrap().1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after the name.
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// A `/proc/PID/status` value in KiB (`VmRSS`, `VmHWM`, …).
pub fn proc_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}
