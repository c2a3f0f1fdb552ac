//! The instance the crash tests run on, how the helper is killed and restarted, and what its
//! holders hold (the checks after each restart are in `check.rs`). Shared by `op_crashes.rs`
//! and `op_crashes_more.rs`; each uses a part.
#![allow(dead_code)]

use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::*;
use keyward_core::ipc::{Reply, Request, WireSecret};
use keyward_core::{Secret, UserName};

/// Managed users; they, and the service account `kcservice`, exist only in the helper's
/// private copies of /etc/passwd, /etc/group and /etc/shadow.
pub const ALICE: &str = "kcalice";
pub const BOB: &str = "kcbob";
const ACCOUNTS: &[(&str, u32)] = &[(ALICE, 2201), (BOB, 2202), ("kcservice", 2290)];

/// An instance whose helper runs with private accounts. The service account is not in the
/// machine's /etc, so `keyward uninstall` (run outside) has no account to delete and touches
/// nothing outside the instance. `policy` is appended to the `[policy]` table.
pub fn fixture(policy: &str) -> Instance {
    let mut inst = Instance::prepare();
    let cfg = std::fs::read_to_string(&inst.config)
        .unwrap()
        .replace("service_user = \"nobody\"", "service_user = \"kcservice\"");
    let mut cfg = policy_line(&cfg, &format!("managed_users = [\"{ALICE}\", \"{BOB}\"]"));
    for line in policy.lines().filter(|l| !l.trim().is_empty()) {
        cfg = policy_line(&cfg, line);
    }
    std::fs::write(&inst.config, cfg).unwrap();
    let dir = inst.path("etc");
    std::fs::create_dir(&dir).unwrap();
    let mut passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    let mut group = std::fs::read_to_string("/etc/group").unwrap();
    let mut shadow = std::fs::read_to_string("/etc/shadow").unwrap();
    for (name, id) in ACCOUNTS {
        passwd.push_str(&format!(
            "{name}:x:{id}:{id}::/nonexistent:/usr/sbin/nologin\n"
        ));
        group.push_str(&format!("{name}:x:{id}:\n"));
        shadow.push_str(&format!("{name}:*:19000:0:99999:7:::\n"));
    }
    for (file, text, mode) in [
        ("passwd", passwd, 0o644),
        ("group", group, 0o644),
        ("shadow", shadow, 0o600),
    ] {
        std::fs::write(dir.join(file), text).unwrap();
        chmod(&dir.join(file), mode);
    }
    inst.helper_in_namespace(
        r#"for f in passwd group shadow; do mount --bind "$0/$f" "/etc/$f" || exit 1; done; exec "$@""#,
        &[&dir.display().to_string()],
    );
    inst.start()
}

/// Kill the helper at `step` while `run` drives it; it stays down.
pub fn kill_at(inst: &mut Instance, step: &str, run: impl FnOnce(&Instance)) {
    inst.stop_helper();
    inst.helper_env = vec![("KEYWARD_FAILPOINT".into(), step.into())];
    assert!(inst.try_start(), "{step}: start: {}", inst.helper_stderr());
    run(inst);
    assert!(inst.helper_died(), "{step}: the failpoint was not reached");
    inst.helper_env.clear();
}

/// Kill the helper at `step` while `run` drives it; restart it without the failpoint (its
/// start-up repair and reconcile run before it serves).
pub fn crash_at(inst: &mut Instance, step: &str, run: impl FnOnce(&Instance)) {
    kill_at(inst, step, run);
    assert!(
        inst.try_start(),
        "{step}: restart: {}",
        inst.helper_stderr()
    );
}

/// Start the helper so that it dies at `step` of its start-up work (SIGKILL, before it
/// serves); it stays down.
pub fn dies_at_start(inst: &mut Instance, step: &str) {
    inst.stop_helper();
    inst.helper_env = vec![("KEYWARD_FAILPOINT".into(), step.into())];
    assert!(!inst.try_start(), "{step}: the failpoint was not reached");
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&inst.start_exit.unwrap()),
        Some(9),
        "{step}: a failpoint must SIGKILL"
    );
    inst.helper_env.clear();
}

/// A CLI run the helper died in: the connection was lost (exit 5).
pub fn died_in(inst: &Instance, step: &str, args: &[&str], stdin: &[u8]) {
    let out = inst.keyward(args, stdin);
    assert_eq!(
        code(&out),
        Some(5),
        "{step}: {args:?} should have lost the helper: {}",
        stderr(&out)
    );
}

/// Change `user`'s password in the helper's shadow file, as `passwd` without pam_keyward (or a
/// directory admin) would. Written in place: the bind mount follows the inode.
pub fn set_password(inst: &Instance, user: &str, password: &str) {
    let out = run(
        Command::new("openssl").args(["passwd", "-6", "-stdin"]),
        password.as_bytes(),
    );
    assert!(out.status.success(), "openssl: {}", stderr(&out));
    let hash = String::from_utf8(out.stdout).unwrap();
    let path = inst.path("etc/shadow");
    let text: String = std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .map(|l| match l.split_once(':') {
            Some((name, rest)) if name == user => {
                let tail = rest.split_once(':').map_or("", |(_, t)| t);
                format!("{name}:{}:{tail}\n", hash.trim())
            }
            _ => format!("{l}\n"),
        })
        .collect();
    std::fs::write(path, text).unwrap();
}

/// What the PAM module sends after a successful login (the helper answers at once and works
/// on it in the background); the reply, if the helper lived to send one.
pub fn send_login(inst: &Instance, user: &str, password: &str) -> Option<Reply> {
    let req = Request::LoginCapture {
        user: UserName::parse(user).unwrap(),
        password: WireSecret::from_secret(&Secret::copy_from(password.as_bytes())),
    };
    keyward_sys::helper_client::call(&inst.socket(), req).ok()
}

/// What the PAM module sends after `passwd` committed a change (`pam_sm_chauthtok`): the new
/// password and the old one; the reply, if the helper lived to send one.
pub fn send_change(inst: &Instance, user: &str, old: &str, new: &str) -> Option<Reply> {
    let wire = |pw: &str| WireSecret::from_secret(&Secret::copy_from(pw.as_bytes()));
    let req = Request::PasswordChange {
        user: UserName::parse(user).unwrap(),
        new: wire(new),
        old: Some(wire(old)),
    };
    keyward_sys::helper_client::call(&inst.socket(), req).ok()
}

/// A login the helper takes on.
pub fn login(inst: &Instance, user: &str, password: &str) {
    let reply = send_login(inst, user, password);
    assert!(matches!(reply, Some(Reply::Queued)), "{reply:?}");
}

/// Wait until `user` has `n` login records, the last one a success on the volume.
pub fn wait_for_login(inst: &Instance, user: &str, n: usize, step: &str) {
    wait_for_job(inst, "login-capture", user, n, step);
}

/// Wait until `user` has `n` records of PAM event `op` (`login-capture`, `password-change`),
/// the last one a success on the volume.
pub fn wait_for_job(inst: &Instance, op: &str, user: &str, n: usize, step: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let logins: Vec<String> = inst
            .audit_lines()
            .into_iter()
            .filter(|l| l.contains(&format!("\"op\":\"{op}\"")))
            .filter(|l| l.contains(&format!("\"user\":\"{user}\"")))
            .collect();
        if logins.len() >= n {
            let last = logins.last().unwrap();
            assert!(
                last.contains("\"result\":\"ok: data: ") && !last.contains("failed"),
                "{step}: {last}"
            );
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{step}: no {op} record for {user}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// What the holders hold: users and their current passwords, the committed recovery key, and
/// whether the installer's passphrase (keyslot 0) was removed.
#[derive(Default)]
pub struct Held {
    pub users: Vec<(String, String)>,
    pub recovery: Option<String>,
    pub no_installer: bool,
}

/// `keyward grant`, remembered in `held`.
pub fn grant(inst: &Instance, held: &mut Held, user: &str, password: &str) {
    let out = inst.keyward(
        &["grant", "data", user, "--passphrase-stdin"],
        format!("{password}\n").as_bytes(),
    );
    assert_eq!(code(&out), Some(0), "grant {user}: {}", stderr(&out));
    held.users.push((user.into(), password.into()));
}

/// The key printed by `keyward recovery rotate --show`.
fn shown_key(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .find(|w| w.len() == 71 && w.matches('-').count() == 7)
        .unwrap_or_else(|| panic!("no key in {}", String::from_utf8_lossy(&out.stdout)))
        .to_owned()
}

/// Begin a standalone recovery rotation without confirming it; the pending key.
pub fn begin_recovery(inst: &Instance) -> String {
    let args = ["recovery", "rotate", "data", "--show", "--confirm-stdin"];
    shown_key(&inst.keyward(&args, b""))
}

/// A whole standalone recovery rotation; the new, committed key.
pub fn rotate_recovery(inst: &Instance) -> String {
    let key = begin_recovery(inst);
    let group = key.rsplit('-').next().unwrap();
    let args = ["recovery", "rotate", "data", "--show", "--confirm-stdin"];
    let out = inst.keyward(&args, format!("{group}\n").as_bytes());
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    key
}

/// `keyward uninstall --yes`, with the package's scope (no units or PAM to remove here).
pub fn uninstall(inst: &Instance) -> std::process::Output {
    inst.keyward(&["uninstall", "--yes", "--package"], b"")
}

/// Every step a rekey passes (a login's after a password changed elsewhere, and a PAM password
/// change's): the store's rekey, then the helper's own step before the job's record.
pub const REKEY_STEPS: &[&str] = &[
    "rekey.intent-written",
    "rekey.slot-added",
    "rekey.verified",
    "rekey.token-moved",
    "rekey.old-destroyed",
    "login.rekeyed",
];
