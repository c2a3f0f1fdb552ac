//! The real escrow server in a test: `keyward-server init` in the instance's directory,
//! enrollment tokens, `serve` on a loopback port (restartable on the same address), the admin's
//! `key show` and `device list`, and faults injected into its real SQLite database.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::{bin, chmod, code, stderr, Instance, NOBODY};

/// Which database the server runs on.
#[derive(Debug, Clone)]
pub enum Backend {
    /// The embedded default: a file in the state directory.
    Sqlite,
    /// A fresh database on the test PostgreSQL server (`scripts/postgres`).
    Postgres(String),
}

/// SQLite, and PostgreSQL when `KEYWARD_TEST_POSTGRES_URL` names a server (CI always does).
pub fn backends() -> Vec<Backend> {
    match std::env::var("KEYWARD_TEST_POSTGRES_URL") {
        Ok(url) => vec![Backend::Sqlite, Backend::Postgres(url)],
        Err(_) => {
            super::skip_or_fail(
                "PostgreSQL runs: KEYWARD_TEST_POSTGRES_URL is unset (scripts/postgres starts one)",
            );
            vec![Backend::Sqlite]
        }
    }
}

fn psql(url: &str, sql: &str) {
    let out = Command::new("psql")
        .args(["-v", "ON_ERROR_STOP=1", "-q", url, "-c", sql])
        .output()
        .unwrap();
    assert!(out.status.success(), "psql: {}", stderr(&out));
}

/// `--db` for a new, empty database on `backend` (None: SQLite in the state directory).
pub fn fresh_db(backend: &Backend) -> Option<String> {
    match backend {
        Backend::Sqlite => None,
        Backend::Postgres(url) => {
            let mut b = [0u8; 6];
            getrandom::fill(&mut b).unwrap();
            let name: String = b.iter().map(|x| format!("{x:02x}")).collect();
            psql(url, &format!("CREATE DATABASE kw_{name}"));
            let (base, _) = url.rsplit_once('/').unwrap();
            Some(format!("{base}/kw_{name}"))
        }
    }
}

pub struct Server {
    pub state: PathBuf,
    /// `--db` for every command (PostgreSQL); None: SQLite in the state directory.
    pub db: Option<String>,
    /// The `[escrow]` lines `init` printed (recipient and signing key).
    pub lines: String,
    pub addr: String,
    /// HTTPS with this certificate and key (PEM files).
    pub tls: Option<(PathBuf, PathBuf)>,
    /// More `serve` flags (limits, timeouts), given at every start.
    pub serve_args: Vec<String>,
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
    /// Init and start on a free loopback port, on SQLite.
    pub fn start(inst: &Instance) -> Self {
        Self::start_on(inst, &Backend::Sqlite)
    }

    /// Init and start on a free loopback port, on `backend`.
    pub fn start_on(inst: &Instance, backend: &Backend) -> Self {
        Self::start_full(inst, backend, None)
    }

    /// Init and start serving HTTPS with this certificate and key, on SQLite.
    pub fn start_tls(inst: &Instance, cert: PathBuf, key: PathBuf) -> Self {
        Self::start_full(inst, &Backend::Sqlite, Some((cert, key)))
    }

    fn start_full(inst: &Instance, backend: &Backend, tls: Option<(PathBuf, PathBuf)>) -> Self {
        let state = inst.path("server");
        let db = fresh_db(backend);
        let mut s = Server {
            state,
            db,
            lines: String::new(),
            addr: "127.0.0.1:0".into(),
            tls,
            serve_args: Vec::new(),
            child: None,
        };
        let out = s.cmd(&["init"]);
        assert!(out.status.success(), "{}", stderr(&out));
        s.lines = String::from_utf8(out.stdout).unwrap();
        s.resume();
        s
    }

    /// A server that is not running (yet): a state directory and a database.
    pub fn offline(state: PathBuf, db: Option<String>) -> Self {
        Server {
            state,
            db,
            lines: String::new(),
            addr: "127.0.0.1:0".into(),
            tls: None,
            serve_args: Vec::new(),
            child: None,
        }
    }

    /// `keyward-server ARGS --state … [--db …]` with `stdin`.
    pub fn cmd_stdin(&self, args: &[&str], stdin: &[u8]) -> Output {
        let mut c = Command::new(bin("keyward-server"));
        c.args(args).arg("--state").arg(&self.state);
        if let Some(db) = &self.db {
            c.args(["--db", db]);
        }
        super::run(&mut c, stdin)
    }

    /// Stop this server, then `serve --config` with `toml` (written next to the state): it
    /// must refuse to start, exiting 1 within 10 s (one that serves is killed, failing the
    /// test). Its standard error.
    pub fn refused_config(&mut self, toml: &str) -> String {
        self.stop();
        let config = self.state.with_file_name("server-refused.toml");
        std::fs::write(&config, toml).unwrap();
        let mut c = Command::new(bin("keyward-server"));
        c.args(["serve", "--listen", "127.0.0.1:0", "--config"])
            .arg(&config)
            .arg("--state")
            .arg(&self.state);
        if let Some(db) = &self.db {
            c.args(["--db", db]);
        }
        let mut child = c
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                let out = child.wait_with_output().unwrap();
                panic!("it served with {toml}: {}", stderr(&out));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let out = child.wait_with_output().unwrap();
        assert_eq!(code(&out), Some(1), "{toml}: {}", stderr(&out));
        stderr(&out)
    }

    /// `keyward-server ARGS --state … [--db …]`.
    pub fn cmd(&self, args: &[&str]) -> Output {
        let mut c = Command::new(bin("keyward-server"));
        c.args(args).arg("--state").arg(&self.state);
        if let Some(db) = &self.db {
            c.args(["--db", db]);
        }
        c.output().unwrap()
    }

    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// Serve again (on the address it had, once it had one).
    pub fn resume(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let mut cmd = Command::new(bin("keyward-server"));
            cmd.args(["serve", "--listen", &self.addr, "--state"])
                .arg(&self.state);
            if let Some(db) = &self.db {
                cmd.args(["--db", db]);
            }
            if let Some((cert, key)) = &self.tls {
                cmd.arg("--tls-cert").arg(cert).arg("--tls-key").arg(key);
            }
            cmd.args(&self.serve_args);
            // Fleet gauges a moment old, not a minute (`http::fresh_metrics` waits for them).
            if !self.serve_args.iter().any(|a| a == "--metrics-refresh") {
                cmd.args(["--metrics-refresh", "100ms"]);
            }
            let mut child = cmd.stderr(Stdio::piped()).spawn().unwrap();
            let mut first = String::new();
            let mut err = BufReader::new(child.stderr.take().unwrap());
            err.read_line(&mut first).unwrap();
            // {"ts":…,"level":"info","msg":"listening on http(s)://ADDR"}
            let addr = first
                .rsplit_once("://")
                .and_then(|(_, a)| a.split('"').next());
            if let Some(addr) = addr {
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

    /// The serving process's pid, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Kill the serving process with SIGKILL, as a crash would: no shutdown, no flush.
    pub fn crash(&mut self) {
        self.stop();
    }

    /// `count` single-use enrollment tokens, one a line.
    pub fn tokens(&self, count: u32) -> String {
        let out = self.cmd(&["token", "create", "--count", &count.to_string()]);
        assert!(out.status.success(), "{}", stderr(&out));
        String::from_utf8(out.stdout).unwrap()
    }

    /// The `recipient` and `server_signing_key` values `init` printed.
    pub fn public_keys(&self) -> (String, String) {
        let value = |name: &str| {
            self.lines
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().strip_prefix('='))
                .map(|v| v.trim().trim_matches('"').to_owned())
                .unwrap_or_else(|| panic!("no {name} in {}", self.lines))
        };
        (value("recipient"), value("server_signing_key"))
    }

    /// One single-use enrollment token.
    pub fn token(&self) -> String {
        let out = self.cmd(&["token", "create"]);
        assert!(out.status.success(), "{}", stderr(&out));
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }

    /// `key show DEVICE data --reason REASON`: the key (checked to be audited).
    pub fn key_show(&self, device: &str, reason: &str) -> String {
        let out = self.cmd(&["key", "show", device, "data", "--reason", reason]);
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(stderr(&out).contains("audited"), "{}", stderr(&out));
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }

    /// `key show DEVICE data --escrow ID`: that escrowed key, if the server holds it.
    pub fn key_by_id(&self, device: &str, escrow_id: &str) -> Option<String> {
        let out = self.cmd(&[
            "key",
            "show",
            device,
            "data",
            "--escrow",
            escrow_id,
            "--reason",
            "crash test",
        ]);
        if !out.status.success() {
            eprintln!("key show --escrow {escrow_id}: {}", stderr(&out));
        }
        out.status
            .success()
            .then(|| String::from_utf8(out.stdout).unwrap().trim().to_owned())
    }

    /// `device list --json`.
    pub fn devices(&self) -> serde_json::Value {
        let out = self.cmd(&["device", "list", "--json"]);
        assert!(out.status.success(), "{}", stderr(&out));
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// Make the live database refuse every new escrow, as a failing disk or database would
    /// (a trigger, with the stock `sqlite3` or `psql` client): the real server answers 500.
    pub fn fail_escrows(&self) {
        match &self.db {
            None => self.sqlite(
                "CREATE TRIGGER fault BEFORE INSERT ON escrows BEGIN SELECT RAISE(ABORT, 'injected fault'); END;",
            ),
            Some(url) => psql(
                url,
                "CREATE FUNCTION fault() RETURNS trigger AS $$ BEGIN RAISE EXCEPTION 'injected fault'; END $$ LANGUAGE plpgsql; \
                 CREATE TRIGGER fault BEFORE INSERT ON escrows FOR EACH ROW EXECUTE FUNCTION fault();",
            ),
        }
    }

    /// Undo [`Server::fail_escrows`].
    pub fn heal(&self) {
        match &self.db {
            None => self.sqlite("DROP TRIGGER fault;"),
            Some(url) => psql(url, "DROP TRIGGER fault ON escrows; DROP FUNCTION fault();"),
        }
    }

    fn sqlite(&self, statement: &str) {
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

/// Append an `[escrow]` section pinning a test server key and age recipient (no real server),
/// naming the device; `extra` lines follow.
pub fn pin_test_server(
    inst: &Instance,
    url: &str,
    recipient: &age::x25519::Recipient,
    server: &ed25519_dalek::SigningKey,
    device: &str,
    extra: &str,
) {
    use base64::Engine;
    let pinned =
        base64::engine::general_purpose::STANDARD.encode(server.verifying_key().to_bytes());
    let mut cfg = std::fs::read_to_string(&inst.config).unwrap();
    cfg.push_str(&format!(
        "[escrow]\nurl = \"{url}\"\nrecipient = \"{recipient}\"\nserver_signing_key = \"{pinned}\"\ndevice_id = \"{device}\"\n{extra}"
    ));
    std::fs::write(&inst.config, cfg).unwrap();
}

/// Start the agent, wait for its control socket, and enroll through `keyward enroll`.
/// Returns the agent and the device id.
pub fn enroll_agent(inst: &Instance, server: &Server) -> (Child, String) {
    enroll_agent_at(inst, server, &server.url())
}

/// [`enroll_agent`] with `server`'s token, given at `url` (a proxy in front of it).
pub fn enroll_agent_at(inst: &Instance, server: &Server, url: &str) -> (Child, String) {
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
        &["enroll", url, "--token-stdin"],
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

/// The admin web UI's side of the server (`web_ui.rs`, `web_ui_browser.rs`).
impl Server {
    /// `admin add NAME --password-stdin`, the password on standard input.
    pub fn add_admin(&self, name: &str, password: &str) {
        let mut c = Command::new(bin("keyward-server"));
        c.args(["admin", "add", name, "--password-stdin", "--state"])
            .arg(&self.state);
        if let Some(db) = &self.db {
            c.args(["--db", db]);
        }
        let out = super::run(&mut c, format!("{password}\n").as_bytes());
        assert!(out.status.success(), "{}", stderr(&out));
    }

    /// `admin add NAME --role ROLE --password-stdin`.
    pub fn add_account(&self, name: &str, password: &str, role: &str) {
        let out = self.cmd_stdin(
            &["admin", "add", name, "--role", role, "--password-stdin"],
            format!("{password}\n").as_bytes(),
        );
        assert!(out.status.success(), "{}", stderr(&out));
    }

    /// `api-token add NAME --role ROLE`: the token it printed.
    pub fn api_token(&self, name: &str, role: &str) -> String {
        let out = self.cmd(&["api-token", "add", name, "--role", role]);
        assert!(out.status.success(), "{}", stderr(&out));
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }

    /// Serve from now on with this `server.toml` (written next to the state directory).
    pub fn reconfigure(&mut self, toml: &str) {
        let file = self.state.with_file_name("server.toml");
        std::fs::write(&file, toml).unwrap();
        if !self.serve_args.iter().any(|a| a == "--config") {
            self.serve_args
                .extend(["--config".to_owned(), file.display().to_string()]);
        }
        self.stop();
        self.resume();
    }

    /// Run SQL on the server's database with the stock client (`sqlite3` or `psql`); the rows
    /// it printed, columns separated by `|`.
    pub fn query(&self, sql: &str) -> String {
        let mut c = match &self.db {
            None => {
                let mut c = Command::new("sqlite3");
                c.arg(self.state.join("keyward.db")).arg(sql);
                c
            }
            Some(url) => {
                let mut c = Command::new("psql");
                c.args(["-v", "ON_ERROR_STOP=1", "-q", "-A", "-t", url, "-c", sql]);
                c
            }
        };
        let out = c.output().unwrap();
        assert!(out.status.success(), "{sql}: {}", stderr(&out));
        String::from_utf8(out.stdout).unwrap()
    }
}
