//! The instance the crash tests run on, what its holders hold, and the checks after each
//! restart: keyward's own views, then stock cryptsetup on every way in, then the header.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};

use keyward_core::ipc::{Reply, Request, WireSecret};
use keyward_core::{Secret, UserName};
use serde_json::Value;

use crate::common::*;

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
    // `exec` all the way: the helper keeps the child's pid, so its death is observed directly.
    inst.helper_prefix = [
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        r#"for f in passwd group shadow; do mount --bind "$0/$f" "/etc/$f" || exit 1; done; exec "$@""#,
    ]
    .map(String::from)
    .to_vec();
    inst.helper_prefix.push(dir.display().to_string());
    inst.start()
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

/// A login the helper takes on.
pub fn login(inst: &Instance, user: &str, password: &str) {
    let reply = send_login(inst, user, password);
    assert!(matches!(reply, Some(Reply::Queued)), "{reply:?}");
}

/// Wait until `user` has `n` login records, the last one a success on the volume.
pub fn wait_for_login(inst: &Instance, user: &str, n: usize, step: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let logins: Vec<String> = inst
            .audit_lines()
            .into_iter()
            .filter(|l| l.contains("\"op\":\"login-capture\""))
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
            "{step}: no login record for {user}"
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

/// Whether any keyslot opens with `pass` (stock cryptsetup, trying every slot).
pub fn opens_any(inst: &Instance, pass: &str) -> bool {
    run(
        Command::new("cryptsetup")
            .args(["open", "--test-passphrase"])
            .arg(&inst.image)
            .args(["--key-file", "-"]),
        pass.as_bytes(),
    )
    .status
    .success()
}

/// `keyward status data --json`: the volume's report.
pub fn status(inst: &Instance) -> Value {
    let out = inst.keyward(&["status", "data", "--json"], b"");
    assert_eq!(code(&out), Some(0), "status: {}", stderr(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v["volumes"][0].clone()
}

fn slots_where(vol: &Value, keep: impl Fn(&Value) -> bool) -> Vec<u64> {
    vol["holders"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| keep(h))
        .map(|h| h["slot"].as_u64().unwrap())
        .collect()
}

pub fn service_slot(vol: &Value) -> Option<u64> {
    let s = slots_where(vol, |h| h["role"] == "service");
    assert!(s.len() <= 1, "more than one service slot: {vol}");
    s.first().copied()
}

pub fn user_slots(vol: &Value, user: &str) -> Vec<u64> {
    slots_where(vol, |h| h["user"] == user)
}

pub fn active_recovery(vol: &Value) -> Vec<u64> {
    slots_where(vol, |h| h["role"] == "recovery" && h["state"] == "active")
}

pub fn pending_recovery(vol: &Value) -> Option<u64> {
    slots_where(vol, |h| h["role"] == "recovery" && h["state"] == "pending")
        .first()
        .copied()
}

/// What an interrupted operation may rightly leave for the admin to re-run.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Unfinished {
    /// Nothing: the volume is fully settled.
    None,
    /// An undone bootstrap: no service slot (verify says `missing`).
    ServiceMissing,
    /// An undone repair: this stale service slot is still there (verify says `drift`).
    ServiceDrift(u64),
    /// A release under way: some of keyward's slots, the service slot too, may be gone.
    Releasing,
}

/// Every check after a restart; returns the volume's status report.
pub fn check(inst: &Instance, held: &Held, step: &str, allowed: Unfinished) -> Value {
    let vol = status(inst);
    assert_eq!(vol["violations"], serde_json::json!([]), "{step}: {vol}");
    assert!(vol["error"].is_null(), "{step}: {vol}");

    // Every keyslot in the header is a reported holder, none half-made: no slot leaked.
    let meta = inst.metadata();
    let header: BTreeSet<u64> = meta["keyslots"]
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.parse().unwrap())
        .collect();
    let reported: BTreeSet<u64> = slots_where(&vol, |_| true).into_iter().collect();
    assert_eq!(header, reported, "{step}: {vol}");
    // A keyslot keyward made and lost track of would show as unmanaged: only the installer's is.
    let unmanaged = slots_where(&vol, |h| h["role"] == "unmanaged");
    let installer: &[u64] = if held.no_installer { &[] } else { &[0] };
    assert_eq!(unmanaged, installer, "{step}: a keyslot leaked: {vol}");
    let pending_key = std::fs::read(inst.path("state/pending/data")).ok();
    for h in vol["holders"].as_array().unwrap() {
        let settled = h["state"] == "active" || h["state"] == "unmanaged";
        // A pending recovery key is settled too while its stored key opens it.
        let pending_ok = h["role"] == "recovery"
            && h["state"] == "pending"
            && pending_key
                .as_ref()
                .is_some_and(|k| inst.opens(h["slot"].as_u64().unwrap(), k));
        assert!(settled || pending_ok, "{step}: unsettled holder {h}");
    }
    if pending_key.is_some() {
        assert!(
            pending_recovery(&vol).is_some(),
            "{step}: a stored key with no slot"
        );
    }

    // Stock cryptsetup on every way in a person holds; `proven` collects those that opened.
    let mut proven = Vec::new();
    if !held.no_installer {
        assert!(
            inst.opens(0, INSTALL_PASS.as_bytes()),
            "{step}: installer slot"
        );
        proven.push(0);
    }
    let releasing = allowed == Unfinished::Releasing;
    for (user, pw) in &held.users {
        let mine = user_slots(&vol, user);
        if releasing && mine.is_empty() {
            continue;
        }
        assert_eq!(mine.len(), 1, "{step}: {user}: {vol}");
        assert!(
            inst.opens(mine[0], pw.as_bytes()),
            "{step}: {user} locked out"
        );
        proven.push(mine[0]);
    }
    let active = active_recovery(&vol);
    assert!(
        active.len() <= 1,
        "{step}: two committed recovery keys: {vol}"
    );
    if let Some(key) = &held.recovery {
        if !(releasing && active.is_empty()) {
            let works: Vec<u64> = active
                .iter()
                .copied()
                .filter(|s| inst.opens(*s, key.as_bytes()))
                .collect();
            assert!(
                !works.is_empty(),
                "{step}: the recovery key opens nothing: {vol}"
            );
            proven.extend(works);
        }
    }
    // The volume is never left with keyward's service slot as its only way in.
    assert!(
        !proven.is_empty(),
        "{step}: only the service slot is left: {vol}"
    );
    let service = service_slot(&vol);
    let verify_says = match service {
        Some(s) => {
            let secret = std::fs::read(inst.path("state/service/data")).unwrap_or_default();
            if inst.opens(s, &secret) {
                "ok"
            } else {
                assert_eq!(allowed, Unfinished::ServiceDrift(s), "{step}: {vol}");
                "drift"
            }
        }
        None => {
            let may = [Unfinished::ServiceMissing, Unfinished::Releasing];
            assert!(may.contains(&allowed), "{step}: no service slot: {vol}");
            "missing"
        }
    };

    let out = inst.keyward(&["verify", "--json"], b"");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let report = &v["volumes"][0];
    assert_eq!(report["service"], verify_says, "{step}: {v}");
    assert_eq!(report["violations"], serde_json::json!([]), "{step}: {v}");
    if verify_says == "ok" {
        assert_eq!(code(&out), Some(0), "{step}: verify: {v}");
    }
    let out = inst.keyward(&["audit", "--verify"], b"");
    assert_eq!(code(&out), Some(0), "{step}: audit: {}", stderr(&out));
    vol
}
