//! A whole isolated keyward instance in a temp directory: a LUKS2 image made by stock
//! cryptsetup, a root-owned config, the real helper process, and the real CLI run as root or as
//! other uids. The service user is `nobody`, so no account has to be created. `daemon` and `bin`
//! are managed (`uid_min = 1`), so `keyward grant` can give them rights: add to the config's
//! `[policy]` table with [`policy_line`], never a second `[policy]`.
#![allow(dead_code, clippy::unwrap_used)]

pub mod browser;
pub mod escrow;
pub mod hostile;
pub mod http;
pub mod pki;
pub mod team;
pub mod ui_client;

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const INSTALL_PASS: &str = "installer passphrase 7f3a";
pub const NOBODY: u32 = 65534;

/// A suite (or part of one) that cannot run on this machine. Where every suite must run — CI,
/// and `scripts/test`, which sets `KEYWARD_REQUIRE_ALL=1` — that is a failure; elsewhere it
/// says SKIPPED on the terminal (past the test harness's output capture), never a silent pass.
pub fn skip_or_fail(what: &str) {
    let required = ["KEYWARD_REQUIRE_ALL", "CI"]
        .iter()
        .any(|v| std::env::var_os(v).is_some_and(|x| !x.is_empty()));
    assert!(
        !required,
        "{what}: this suite must run here (bash scripts/test installs and starts what it needs)"
    );
    let _ = std::io::stderr().write_all(format!("SKIPPED: {what}\n").as_bytes());
}

pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap();
    let p = dir.join(name);
    assert!(
        p.exists(),
        "{} not built: run `cargo test --workspace`",
        p.display()
    );
    p
}

pub struct Instance {
    pub root: tempfile::TempDir,
    pub image: PathBuf,
    pub config: PathBuf,
    pub helper: Option<Child>,
    pub helper_log: PathBuf,
    /// Extra environment for the next helper start (failpoints).
    pub helper_env: Vec<(String, String)>,
    /// A command the helper is started through (its path and arguments follow), e.g. to give
    /// it a private mount namespace.
    pub helper_prefix: Vec<String>,
    /// How the last helper that exited during [`Instance::try_start`] ended.
    pub start_exit: Option<std::process::ExitStatus>,
}

impl Instance {
    /// Start the helper (from its next start) in a private mount namespace, through `sh -c
    /// script ARGS… HELPER HELPER-ARGS…`: `script` mounts what it needs (its `$0`, `$1`, … are
    /// `args`) and ends with `exec "$@"` — `exec` all the way, so the helper keeps the child's
    /// pid and its death is observed directly.
    pub fn helper_in_namespace(&mut self, script: &str, args: &[&str]) {
        self.helper_prefix = [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            script,
        ]
        .iter()
        .chain(args)
        .map(|s| (*s).to_owned())
        .collect();
    }

    /// Files and config only; call [`Instance::start`] to run the helper.
    pub fn prepare() -> Self {
        let root = tempfile::tempdir().unwrap();
        std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let image = root.path().join("disk.img");
        format_image(&image);
        let r = root.path().display().to_string();
        let config = root.path().join("keyward.toml");
        std::fs::write(
            &config,
            format!(
                "service_user = \"nobody\"\nstate_dir = \"{r}/state\"\nagent_state_dir = \"{r}/agent\"\n\
                 runtime_dir = \"{r}/run\"\nlog_dir = \"{r}/log\"\nverify_interval_secs = 1\n[kdf]\ndanger_fast_kdf = true\n\
                 [policy]\nuid_min = 1\nmanaged_users = [\"daemon\", \"bin\"]\n\
                 [[volume]]\nname = \"data\"\ndevice = \"{}\"\n",
                image.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();
        let helper_log = root.path().join("helper.stderr");
        Instance {
            root,
            image,
            config,
            helper: None,
            helper_log,
            helper_env: Vec::new(),
            helper_prefix: Vec::new(),
            start_exit: None,
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.path().join(rel)
    }

    pub fn socket(&self) -> PathBuf {
        self.path("run/helper.sock")
    }

    /// Start the helper and wait for its socket; returns false if it exited instead.
    // The child is kept in `self.helper` and reaped in `Drop`.
    #[allow(clippy::zombie_processes)]
    pub fn try_start(&mut self) -> bool {
        // A killed helper leaves its socket behind; wait for the new one, not the old one.
        let stale = std::fs::symlink_metadata(self.socket())
            .is_ok_and(|m| std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()));
        if stale {
            let _ = std::fs::remove_file(self.socket());
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.helper_log)
            .unwrap();
        let mut cmd = match self.helper_prefix.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(bin("keyward-helper"));
                c
            }
            None => Command::new(bin("keyward-helper")),
        };
        let mut child = cmd
            .envs(self.helper_env.iter().map(|(k, v)| (k, v)))
            .arg("--config")
            .arg(&self.config)
            .env_remove("KEYWARD_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            let is_socket = std::fs::symlink_metadata(self.socket())
                .is_ok_and(|m| std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()));
            // Ready means answering, not just bound: a helper finishes its start-up reconcile
            // before it serves.
            let answering = is_socket
                && keyward_sys::helper_client::call_within(
                    &self.socket(),
                    keyward_core::ipc::Request::Status { volume: None },
                    Duration::from_secs(30),
                )
                .map_or_else(|e| e.code != 5, |_| true);
            if answering {
                self.helper = Some(child);
                return true;
            }
            if let Some(status) = child.try_wait().unwrap() {
                self.start_exit = Some(status);
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        panic!(
            "helper did not start: {}",
            std::fs::read_to_string(&self.helper_log).unwrap_or_default()
        );
    }

    pub fn start(mut self) -> Self {
        assert!(self.try_start(), "helper exited: {}", self.helper_stderr());
        self
    }

    /// Start keywardd as the service user (`nobody` here), its stderr to `log`.
    pub fn spawn_agent(&self, log: &Path) -> Child {
        // The agent's own state directory, as `keyward install` makes it.
        let dir = self.path("agent");
        if !dir.exists() {
            std::fs::create_dir(&dir).unwrap();
            std::os::unix::fs::chown(&dir, Some(NOBODY), Some(NOBODY)).unwrap();
            chmod(&dir, 0o700);
        }
        Command::new("setpriv")
            .args([
                format!("--reuid={NOBODY}"),
                format!("--regid={NOBODY}"),
                "--clear-groups".into(),
            ])
            .arg(bin("keywardd"))
            .arg("--config")
            .arg(&self.config)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap()
    }

    /// Stop the helper (SIGKILL) and reap it.
    pub fn stop_helper(&mut self) {
        if let Some(mut c) = self.helper.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Wait for a helper that is expected to die by itself (a failpoint); true if it did, the
    /// way a power cut ends it: by SIGKILL, with no handler or destructor run.
    pub fn helper_died(&mut self) -> bool {
        let Some(mut c) = self.helper.take() else {
            return true;
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some(status) = c.try_wait().unwrap() {
                use std::os::unix::process::ExitStatusExt;
                assert_eq!(
                    status.signal(),
                    Some(9),
                    "a failpoint must SIGKILL: {status}"
                );
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = c.kill();
        let _ = c.wait();
        false
    }

    pub fn helper_stderr(&self) -> String {
        std::fs::read_to_string(&self.helper_log).unwrap_or_default()
    }

    pub fn helper_pid(&self) -> u32 {
        self.helper.as_ref().unwrap().id()
    }

    pub fn helper_alive(&mut self) -> bool {
        self.helper
            .as_mut()
            .is_some_and(|c| c.try_wait().unwrap().is_none())
    }

    /// Run `keyward ARGS` as `uid` (root if None) with `stdin`. Other uids run through
    /// `setpriv --clear-groups`, so no supplementary group of root's leaks into the test.
    pub fn keyward_as(&self, uid: Option<u32>, args: &[&str], stdin: &[u8]) -> Output {
        let mut cmd = match uid {
            Some(u) => {
                let mut c = Command::new("setpriv");
                c.arg(format!("--reuid={u}"))
                    .arg(format!("--regid={u}"))
                    .arg("--clear-groups");
                c.arg(bin("keyward"));
                c
            }
            None => Command::new(bin("keyward")),
        };
        cmd.arg("--config")
            .arg(&self.config)
            .args(args)
            .env_remove("KEYWARD_CONFIG");
        run(&mut cmd, stdin)
    }

    pub fn keyward(&self, args: &[&str], stdin: &[u8]) -> Output {
        self.keyward_as(None, args, stdin)
    }

    pub fn bootstrap(&self) {
        let out = self.keyward(
            &["bootstrap", "data", "--passphrase-stdin"],
            format!("{INSTALL_PASS}\n").as_bytes(),
        );
        assert!(
            out.status.success(),
            "bootstrap: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn audit_lines(&self) -> Vec<String> {
        std::fs::read_to_string(self.path("log/audit.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// `cryptsetup open --test-passphrase --key-slot N`.
    pub fn opens(&self, slot: u64, pass: &[u8]) -> bool {
        run(
            Command::new("cryptsetup")
                .args(["open", "--test-passphrase", "--key-slot", &slot.to_string()])
                .arg(&self.image)
                .args(["--key-file", "-"]),
            pass,
        )
        .status
        .success()
    }

    pub fn metadata(&self) -> serde_json::Value {
        let out = Command::new("cryptsetup")
            .args(["luksDump", "--dump-json-metadata"])
            .arg(&self.image)
            .output()
            .unwrap();
        serde_json::from_slice(&out.stdout).unwrap()
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        if let Some(mut c) = self.helper.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A 32 MiB LUKS2 image made by stock cryptsetup, slot 0 holding [`INSTALL_PASS`] (pbkdf2, so
/// tests stay fast).
pub fn format_image(image: &Path) {
    format_image_with(
        image,
        &["--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000"],
    );
}

/// cryptsetup options for an argon2id slot above keyward's KDF floor (OWASP's: 19 MiB with two
/// passes, or 9 MiB with four): 19 MiB, cryptsetup's fewest four passes, one lane. A real
/// passphrase KDF that still opens in tens of milliseconds.
pub const ARGON2_ABOVE_FLOOR: [&str; 8] = [
    "--pbkdf",
    "argon2id",
    "--pbkdf-memory",
    "19456",
    "--pbkdf-force-iterations",
    "4",
    "--pbkdf-parallel",
    "1",
];

/// [`format_image`] with the installer's slot made with these cryptsetup KDF options.
pub fn format_image_with(image: &Path, kdf: &[&str]) {
    std::fs::File::create(image)
        .unwrap()
        .set_len(32 << 20)
        .unwrap();
    let out = run(
        Command::new("cryptsetup")
            .args(["luksFormat", "--batch-mode", "--type", "luks2"])
            .args(kdf)
            .arg(image)
            .args(["--key-file", "-"]),
        INSTALL_PASS.as_bytes(),
    );
    assert!(
        out.status.success(),
        "luksFormat: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `RecoveryEscrowBegin` on volume `data`: (slot, rotation id, ciphertext, sha256).
pub fn escrow_begin(socket: &Path) -> (u32, String, Vec<u8>, String) {
    use keyward_core::ipc::{Reply, Request};
    let volume = keyward_core::VolumeName::parse("data").unwrap();
    match keyward_sys::helper_client::call(socket, Request::RecoveryEscrowBegin { volume }).unwrap()
    {
        Reply::RecoveryEscrow {
            slot,
            rotation_id,
            ciphertext,
            sha256,
        } => (slot, rotation_id, ciphertext, sha256),
        other => panic!("{other:?}"),
    }
}

pub fn run(cmd: &mut Command, stdin: &[u8]) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let _ = child.stdin.take().unwrap().write_all(stdin);
    child.wait_with_output().unwrap()
}

pub fn code(out: &Output) -> Option<i32> {
    out.status.code()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// The start of a namespace script that runs the helper itself: strict mode, the instance's
/// directory, a private copy of /etc, `kw` (the CLI on this instance), `start_helper` (stopped
/// on any exit, so a failing script never leaves it holding the test's pipes), `stop_helper`,
/// and `slot_of USER` (the user's keyslot, or nothing).
pub const SHELL_PRELUDE: &str = r#"
set -euo pipefail
cd "$T"
cp -a /etc etc-work
mount --bind etc-work /etc
kw() { "$KW" --config "$CFG" "$@"; }
start_helper() {
  rm -f run/helper.sock
  "$HELPER" --config "$CFG" 2>>helper.err & echo $! > helper.pid
  trap 'kill "$(cat "$T/helper.pid")" 2>/dev/null || true' EXIT
  for _ in $(seq 200); do [ -S run/helper.sock ] && return 0; sleep 0.05; done
  echo "helper did not start" >&2; cat helper.err >&2; exit 1
}
stop_helper() { kill "$(cat helper.pid)" 2>/dev/null || true; wait "$(cat helper.pid)" 2>/dev/null || true; }
slot_of() { kw status data --json | tr -d ' \n' | grep -o "{[^{}]*\"user\":\"$1\"[^{}]*}" | grep -o '"slot":[0-9]*' | cut -d: -f2 || true; }
"#;

/// Run a bash `script` in a private mount namespace (`unshare --mount`; the script bind-mounts
/// its own copy of /etc), in the instance's directory `T`, with the binaries and the test
/// passphrase in `KW`, `HELPER`, `SO`, `CFG` and `INSTALL_PASS`. Asserts that it succeeded.
pub fn run_namespace_script(inst: &Instance, script: &str) -> Output {
    let out = namespace_script(inst, script).output().unwrap();
    assert!(
        out.status.success(),
        "script: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        script_context(inst)
    );
    out
}

/// The command [`run_namespace_script`] runs, for a caller that adds to its environment or
/// judges its outcome itself.
pub fn namespace_script(inst: &Instance, script: &str) -> Command {
    let mut cmd = Command::new("unshare");
    cmd.args(["--mount", "--propagation", "private", "bash", "-c", script])
        .env("T", inst.root.path())
        .env("KW", bin("keyward"))
        .env("HELPER", bin("keyward-helper"))
        .env("SO", bin("libpam_keyward.so"))
        .env("CFG", &inst.config)
        .env("INSTALL_PASS", INSTALL_PASS);
    cmd
}

/// The config text with `line` added to its `[policy]` table (a key the table already has is
/// replaced).
pub fn policy_line(config: &str, line: &str) -> String {
    table_line(config, "policy", line)
}

/// The config text with `line` added to its `[table]` (a key the config already has, in any
/// table, is replaced; the instance's config has each key once).
pub fn table_line(config: &str, table: &str, line: &str) -> String {
    let key = line.split('=').next().unwrap_or("").trim();
    let kept: Vec<&str> = config
        .lines()
        .filter(|l| l.split('=').next().unwrap_or("").trim() != key)
        .collect();
    let mut text = kept.join("\n") + "\n";
    let header = format!("[{table}]\n");
    text = text.replacen(&header, &format!("{header}{line}\n"), 1);
    text
}

/// Add `line` to the instance's `[policy]` table (see [`policy_line`]).
pub fn set_policy(inst: &Instance, line: &str) {
    set_table_line(inst, "policy", line);
}

/// Add `line` to the instance's `[table]` (see [`table_line`]), e.g. `kdf`.
pub fn set_table_line(inst: &Instance, table: &str, line: &str) {
    let text = std::fs::read_to_string(&inst.config).unwrap();
    std::fs::write(&inst.config, table_line(&text, table, line)).unwrap();
}

/// A file a script left in the instance's directory, trimmed ("" if there is none).
pub fn script_output(inst: &Instance, file: &str) -> String {
    std::fs::read_to_string(inst.path(file))
        .unwrap_or_default()
        .trim()
        .to_owned()
}

/// The helper's stderr and the audit log a script left, for failure messages.
pub fn script_context(inst: &Instance) -> String {
    format!(
        "helper: {}\naudit:\n{}",
        script_output(inst, "helper.err"),
        script_output(inst, "log/audit.jsonl")
    )
}

/// Put the instance's log directory on a tmpfs of `size` (e.g. "2m") in the helper's own mount
/// namespace (set as its start prefix), root:adm 0750 as install makes it; returns the path.
pub fn log_dir_on_tmpfs(inst: &mut Instance, size: &str) -> PathBuf {
    let log_dir = inst.path("log");
    std::fs::create_dir(&log_dir).unwrap();
    chmod(&log_dir, 0o750);
    let gid = keyward_sys::users::log_reader_gid().unwrap();
    std::os::unix::fs::chown(&log_dir, Some(0), Some(gid)).unwrap();
    inst.helper_prefix = vec![
        "unshare".into(),
        "-m".into(),
        "--propagation".into(),
        "private".into(),
        "sh".into(),
        "-c".into(),
        format!(
            "mount -t tmpfs -o size={size},mode=0750,gid={gid} tmpfs {} && exec \"$0\" \"$@\"",
            log_dir.display()
        ),
    ];
    log_dir
}

/// Fill the log directory's tmpfs ([`log_dir_on_tmpfs`]), in the helper's mount namespace,
/// until only `free` (a `truncate` size such as `1120K`) is left.
pub fn fill_log_dir_leaving(inst: &Instance, log_dir: &Path, free: &str) {
    let fill = log_dir.join("fill");
    in_helper_ns(
        inst,
        &format!(
            "dd if=/dev/zero of={0} bs=64k 2>/dev/null; truncate -s -{free} {0}",
            fill.display()
        ),
    );
}

/// Run `sh -c SCRIPT` in the running helper's mount namespace (where a tmpfs of its own is).
pub fn in_helper_ns(inst: &Instance, script: &str) {
    let out = Command::new("nsenter")
        .args([
            "-t",
            &inst.helper_pid().to_string(),
            "-m",
            "sh",
            "-c",
            script,
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{script}: {}", stderr(&out));
}

/// pamtester must be installed (scripts/deps installs it): a PAM test never skips silently.
pub fn require_pamtester() {
    assert!(
        Command::new("pamtester").arg("--version").output().is_ok(),
        "pamtester is not installed (scripts/deps installs it)"
    );
}

/// A bash script run in a private mount namespace (so it may bind a copy of /etc), with `$T` a
/// fresh 0755 directory, `$SO` the built PAM module and `envs` set; it must succeed.
pub struct PamScript {
    pub dir: tempfile::TempDir,
}

impl PamScript {
    pub fn run(script: &str, envs: &[(&str, String)]) -> Self {
        require_pamtester();
        let dir = tempfile::tempdir().unwrap();
        chmod(dir.path(), 0o755);
        let out = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "bash", "-c", script])
            .env("T", dir.path())
            .env("SO", bin("libpam_keyward.so"))
            .envs(envs.iter().map(|(k, v)| (*k, v.as_str())))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "script: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        PamScript { dir }
    }

    /// A file the script wrote under `$T`, trimmed ("" if it wrote none).
    pub fn read(&self, f: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(f))
            .unwrap_or_default()
            .trim()
            .to_owned()
    }
}
