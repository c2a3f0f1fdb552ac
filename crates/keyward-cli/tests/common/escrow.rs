//! The real escrow server in a test: `keyward-server init` in the instance's directory,
//! enrollment tokens, `serve` on a loopback port (restartable on the same address), the admin's
//! `key show` and `device list`, and faults injected into its real SQLite database.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::{bin, chmod, code, stderr, Instance, NOBODY};

pub struct Server {
    pub state: PathBuf,
    /// The `[escrow]` lines `init` printed (recipient and signing key).
    pub lines: String,
    pub addr: String,
    child: Option<Child>,
}

pub fn server_cmd(args: &[&str], state: &std::path::Path) -> Output {
    Command::new(bin("keyward-server"))
        .args(args)
        .arg("--state")
        .arg(state)
        .output()
        .unwrap()
}

impl Server {
    /// Init and start on a free loopback port.
    pub fn start(inst: &Instance) -> Self {
        let state = inst.path("server");
        let out = server_cmd(&["init"], &state);
        assert!(out.status.success(), "{}", stderr(&out));
        let mut s = Server {
            state,
            lines: String::from_utf8(out.stdout).unwrap(),
            addr: "127.0.0.1:0".into(),
            child: None,
        };
        s.resume();
        s
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Serve again (on the address it had, once it had one).
    pub fn resume(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let mut child = Command::new(bin("keyward-server"))
                .args(["serve", "--listen", &self.addr, "--state"])
                .arg(&self.state)
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            let mut first = String::new();
            let mut err = BufReader::new(child.stderr.take().unwrap());
            err.read_line(&mut first).unwrap();
            if let Some(addr) = first.trim().rsplit_once("http://").map(|(_, a)| a) {
                self.addr = addr.to_owned();
                // Keep draining its log so it never blocks on a full pipe.
                std::thread::spawn(move || std::io::copy(&mut err, &mut std::io::sink()));
                self.child = Some(child);
                return;
            }
            let _ = child.wait();
            // The port may still be held by the process just killed.
            assert!(Instant::now() < deadline, "server did not start: {first}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// One single-use enrollment token.
    pub fn token(&self) -> String {
        let out = server_cmd(&["token", "create"], &self.state);
        assert!(out.status.success(), "{}", stderr(&out));
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }

    /// `key show DEVICE data --reason REASON`: the key (checked to be audited).
    pub fn key_show(&self, device: &str, reason: &str) -> String {
        let out = server_cmd(
            &["key", "show", device, "data", "--reason", reason],
            &self.state,
        );
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(stderr(&out).contains("audited"), "{}", stderr(&out));
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }

    /// `key show DEVICE data --escrow ID`: that escrowed key, if the server holds it.
    pub fn key_by_id(&self, device: &str, escrow_id: &str) -> Option<String> {
        let out = server_cmd(
            &[
                "key",
                "show",
                device,
                "data",
                "--escrow",
                escrow_id,
                "--reason",
                "crash test",
            ],
            &self.state,
        );
        out.status
            .success()
            .then(|| String::from_utf8(out.stdout).unwrap().trim().to_owned())
    }

    /// `device list --json`.
    pub fn devices(&self) -> serde_json::Value {
        let out = server_cmd(&["device", "list", "--json"], &self.state);
        assert!(out.status.success(), "{}", stderr(&out));
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// Run SQL against the server's live database with the stock sqlite3 shell (fault
    /// injection: a trigger makes the real server fail where a disk or database would).
    pub fn sql(&self, statement: &str) {
        let out = Command::new("sqlite3")
            .arg(self.state.join("keyward.db"))
            .arg(statement)
            .output()
            .unwrap();
        assert!(out.status.success(), "sqlite3: {}", stderr(&out));
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Append an `[escrow]` section for `server` (plus `extra` lines) to the instance's config.
pub fn configure(inst: &Instance, server: &Server, extra: &str) {
    let mut cfg = std::fs::read_to_string(&inst.config).unwrap();
    cfg.push_str(&format!(
        "[escrow]\nurl = \"{}\"\n{}{extra}",
        server.url(),
        server.lines
    ));
    std::fs::write(&inst.config, cfg).unwrap();
    chmod(&inst.config, 0o644);
}

/// Start the agent, wait for its control socket, and enroll through `keyward enroll`.
/// Returns the agent and the device id.
pub fn enroll_agent(inst: &Instance, server: &Server) -> (Child, String) {
    let agent_dir = inst.path("agent");
    let agent = inst.spawn_agent(&inst.path("agent.stderr"));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !agent_dir.join("agent.sock").exists() {
        assert!(
            Instant::now() < deadline,
            "agent did not start: {}",
            agent_log(inst)
        );
        std::thread::sleep(Duration::from_millis(25));
    }
    let out = inst.keyward(
        &["enroll", &server.url(), "--token-stdin"],
        format!("{}\n", server.token()).as_bytes(),
    );
    assert_eq!(code(&out), Some(0), "{}\n{}", stderr(&out), agent_log(inst));
    let key_file = std::fs::metadata(agent_dir.join("device.key")).unwrap();
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&key_file), NOBODY);
    let enrolled: serde_json::Value =
        serde_json::from_slice(&std::fs::read(agent_dir.join("device.json")).unwrap()).unwrap();
    (agent, enrolled["device_id"].as_str().unwrap().to_owned())
}

pub fn agent_log(inst: &Instance) -> String {
    std::fs::read_to_string(inst.path("agent.stderr")).unwrap_or_default()
}

/// The `recovery` lines of `keyward status data`.
pub fn recovery_lines(inst: &Instance) -> Vec<String> {
    let status = String::from_utf8(inst.keyward(&["status", "data"], b"").stdout).unwrap();
    status
        .lines()
        .filter(|l| l.contains("recovery"))
        .map(str::to_owned)
        .collect()
}

/// The active escrowed recovery key: (slot, escrow id), if there is exactly one recovery slot.
pub fn settled_key(inst: &Instance) -> Option<(u64, String)> {
    let lines = recovery_lines(inst);
    let [line] = lines.as_slice() else {
        return None;
    };
    if !line.contains("active") {
        return None;
    }
    let slot = line.split_whitespace().next()?.parse().ok()?;
    let id = line.split("escrowed as ").nth(1)?.split(',').next()?.trim();
    Some((slot, id.to_owned()))
}

/// Wait until `f` gives `Some`, or panic with the agent's log.
pub fn wait_for<T>(inst: &Instance, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}\nagent:\n{}\nhelper:\n{}",
            agent_log(inst),
            inst.helper_stderr()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
