//! Crash tests for the FileVault operations (issue 16), on the simulated Mac of a
//! `simulated-mac` helper, which keeps the Mac and its System keychain in the state directory
//! (`simulated-mac.json`, `simulated-keychain.json`) as a real Mac keeps them on disk.
//!
//! Each operation is run once with `KEYWARD_FAILPOINT_TRACE`, and the helper names every crash
//! point it passes (`STEP#N`: the Nth time it reached STEP). Then, for every one of them, the
//! operation runs on a fresh instance with `KEYWARD_FAILPOINT=STEP#N`, the helper dies by
//! SIGKILL there, and a new helper starts from what the dead one left. What must hold then:
//! everyone who could unlock before still unlocks — checked on the saved Mac with the same
//! `diskutil apfs unlockVolume -verify` (and `fdesetup validaterecovery`) the helper uses — the
//! service account's token, if it has one, opens with a password in the keychain, keyward's
//! status has no invariant violation, `keyward audit --verify` passes, and running the
//! operation again completes. The restarted helper is then killed in its own start-up settle
//! too, at every step that settle writes. The escrowed rotation (agent and server) is in
//! `filevault_crash/escrow.rs`. A last test lists every `failpoint("filevault…")` in the
//! helper's FileVault code and fails if no operation here reached it.
//! Needs the `failpoints` and `simulated-mac` features (the README's test command sets them).
#![allow(clippy::unwrap_used)]

mod common;
#[path = "filevault_crash/escrow.rs"]
mod escrow;

use std::collections::BTreeSet;

use common::*;
use keyward_core::Secret;
use keyward_macos::build::{diskutil, fdesetup};
use keyward_macos::fake::{persist, FakeMac};
use keyward_macos::keychain::{Keychain, KeychainItem, MemoryKeychain};
use keyward_macos::names::{GeneratedUid, VolumeOperand};
use keyward_macos::parse;
use keyward_macos::runner::Runner;
use serde_json::Value;

const ADMIN_PW: &str = "admin-pw";
const ALICE_PW: &str = "alice-pw";
/// The typical simulated Mac's personal recovery key.
const FIRST_KEY: &str = "AU2A-PHMK-WBGX-PWKX-M3X3-VAPY";
const SERVICE: &str = "_keyward";

/// An instance with only the FileVault volume `mac`, its helper started; with `people`, the
/// helper runs over a copy of /etc in which the Mac's people exist for NSS with the Mac's uids
/// and passwords (as on a Mac): `alice` (502, managed through `keyward-users`), `admin` (501),
/// and the agent's account `kcfvagent`, which exists only there, so `keyward uninstall` (run
/// outside) has no system user to delete and touches nothing outside the instance.
fn mac_instance(people: bool) -> Instance {
    prepare_mac(people).start()
}

/// [`mac_instance`], not started yet.
fn prepare_mac(people: bool) -> Instance {
    let mut inst = Instance::prepare();
    let cfg = std::fs::read_to_string(&inst.config).unwrap();
    let start = cfg.find("[[volume]]\nname = \"data\"").unwrap();
    let end = start
        + cfg[start..]
            .find("\n[[volume]]")
            .map_or(cfg.len() - start, |e| e + 1);
    let mut cfg = format!("{}{}", &cfg[..start], &cfg[end..]);
    cfg.push_str(
        "[[volume]]\nname = \"mac\"\ndevice = \"/\"\nkind = \"filevault\"\nservice_account = \"_keyward\"\n",
    );
    std::fs::write(&inst.config, cfg).unwrap();
    chmod(&inst.config, 0o644);
    if people {
        with_mac_people(&mut inst);
    }
    inst
}

fn with_mac_people(inst: &mut Instance) {
    let script = r#"
set -euo pipefail
cd "$T"
cp -a /etc etc-work
mount --bind etc-work /etc
groupadd keyward-users
useradd --no-create-home --uid 501 admin
useradd --no-create-home --uid 502 --groups keyward-users alice
useradd --system --no-create-home kcfvagent
printf 'admin:admin-pw\nalice:alice-pw\n' | chpasswd
"#;
    run_namespace_script(inst, script);
    let cfg = std::fs::read_to_string(&inst.config)
        .unwrap()
        .replace("service_user = \"nobody\"", "service_user = \"kcfvagent\"");
    std::fs::write(&inst.config, cfg).unwrap();
    set_policy(inst, "managed_group = \"keyward-users\"");
    // A token keyward granted goes at the next login of a user who is no longer managed.
    set_policy(inst, "revoke_unmanaged = true");
    inst.helper_in_namespace(
        r#"mount --bind "$0" /etc && exec "$@""#,
        &[&inst.path("etc-work").display().to_string()],
    );
}

/// The login-capture records of `user`'s logins so far.
fn captures(inst: &Instance, user: &str) -> Vec<Value> {
    inst.audit_lines()
        .iter()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|r| r["op"] == "login-capture" && r["user"] == user)
        .collect()
}

/// What the authorization plugin sends at a console login.
fn capture(inst: &Instance, user: &str, password: &str) {
    keyward_sys::helper_client::send_login_capture(
        &inst.socket(),
        keyward_core::UserName::parse(user).unwrap(),
        &Secret::copy_from(password.as_bytes()),
    )
    .unwrap();
}

/// Wait for `user`'s `n`th login-capture record; its result.
fn nth_capture(inst: &Instance, user: &str, n: usize, step: &str) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        if let Some(r) = captures(inst, user).get(n - 1) {
            return r["result"].as_str().unwrap().to_owned();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{step}: no login-capture record {n} for {user}: {}",
            inst.helper_stderr()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// The Mac as the helper left it on disk.
struct SavedMac {
    mac: FakeMac,
    keys: MemoryKeychain,
}

fn saved_mac(inst: &Instance) -> SavedMac {
    let read = |name: &str| std::fs::read(inst.path(&format!("state/{name}")));
    let mac = match read("simulated-mac.json") {
        Ok(b) => persist::mac_from_json(&b).unwrap(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => FakeMac::typical(),
        Err(e) => panic!("simulated-mac.json: {e}"),
    };
    let keys = match read("simulated-keychain.json") {
        Ok(b) => persist::keychain_from_json(&b).unwrap(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => MemoryKeychain::default(),
        Err(e) => panic!("simulated-keychain.json: {e}"),
    };
    SavedMac { mac, keys }
}

impl SavedMac {
    /// `diskutil apfs unlockVolume / -user UUID -verify` with `password`, as the helper runs it.
    fn unlocks(&mut self, user: &str, password: &[u8]) -> bool {
        let Some(a) = self.mac.account(user) else {
            return false;
        };
        let uuid = GeneratedUid::parse(&a.generated_uid).unwrap();
        let inv = diskutil::verify_unlock(
            &VolumeOperand::default(),
            &uuid,
            &Secret::copy_from(password),
        );
        let out = self.mac.run(&inv).unwrap();
        parse::diskutil::verify(&out).unwrap()
    }

    /// `fdesetup validaterecovery` with `key`.
    fn validates(&mut self, key: &str) -> bool {
        let inv = fdesetup::validate_recovery(&Secret::copy_from(key.as_bytes())).unwrap();
        let out = self.mac.run(&inv).unwrap();
        parse::fdesetup::validate_recovery(&out).unwrap()
    }

    fn keychain(&mut self, item: KeychainItem) -> Option<Secret> {
        self.keys.read(item).unwrap()
    }
}

/// Who unlocks the Mac: accounts with their passwords, the recovery key (when the operation
/// cannot have replaced it), and whether the service account must hold a working token.
struct Held {
    users: Vec<(&'static str, &'static str)>,
    recovery: Option<String>,
    service: bool,
}

impl Held {
    fn typical() -> Self {
        Held {
            users: vec![("admin", ADMIN_PW)],
            recovery: Some(FIRST_KEY.into()),
            service: false,
        }
    }
}

fn status(inst: &Instance) -> Value {
    let out = inst.keyward(&["status", "--json"], b"");
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    let all: Value = serde_json::from_slice(&out.stdout).unwrap();
    all["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["volume"] == "mac")
        .unwrap()
        .clone()
}

fn holders<'a>(vol: &'a Value, role: &str) -> Vec<&'a Value> {
    vol["holders"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["role"] == role)
        .collect()
}

/// What must hold after every crash and restart (`step` names the crash point).
fn check(inst: &Instance, held: &Held, step: &str) -> Value {
    let mut mac = saved_mac(inst);
    for (user, pw) in &held.users {
        assert!(
            mac.unlocks(user, pw.as_bytes()),
            "{step}: {user} no longer unlocks FileVault"
        );
    }
    if let Some(key) = &held.recovery {
        assert!(
            mac.validates(key),
            "{step}: the recovery key no longer unlocks"
        );
    }
    // The service account's token, if it has one, opens with a password keyward keeps.
    let has_token = mac.mac.account(SERVICE).is_some_and(|a| a.token);
    assert!(
        has_token || !held.service,
        "{step}: the service account lost its token"
    );
    if has_token {
        let stored: Vec<Secret> = [KeychainItem::ServiceCurrent, KeychainItem::ServiceNext]
            .into_iter()
            .filter_map(|i| mac.keychain(i))
            .collect();
        assert!(
            stored.iter().any(|p| mac.unlocks(SERVICE, p.expose())),
            "{step}: the service account's token opens with no password keyward keeps"
        );
    }
    let out = inst.keyward(&["audit", "--verify"], b"");
    assert_eq!(code(&out), Some(0), "{step}: audit: {}", stderr(&out));
    let vol = status(inst);
    assert_eq!(vol["error"], Value::Null, "{step}: {vol}");
    assert_eq!(vol["violations"], Value::Array(vec![]), "{step}: {vol}");
    vol
}

/// After the re-run: the service account works, as `keyward verify` judges it.
fn service_ok(inst: &Instance, step: &str) {
    let out = inst.keyward(&["verify", "mac", "--json"], b"");
    let v: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("{step}: verify: {}", stderr(&out)));
    assert_eq!(v["volumes"][0]["service"], "ok", "{step}: {v}");
}

fn ok(out: &std::process::Output, step: &str, what: &str) {
    assert_eq!(code(out), Some(0), "{step}: {what}: {}", stderr(out));
}

fn bootstrap(inst: &Instance, step: &str) {
    let args = [
        "bootstrap",
        "mac",
        "--holder",
        "admin",
        "--passphrase-stdin",
    ];
    ok(&inst.keyward(&args, b"admin-pw\n"), step, "bootstrap");
}

fn grant_alice(inst: &Instance, step: &str) {
    let args = ["grant", "mac", "alice", "--passphrase-stdin"];
    ok(&inst.keyward(&args, b"alice-pw\n"), step, "grant");
}

/// Grant again after a crash: done now, or already done (the start-up reconcile finished a
/// grant whose token was there), as for a LUKS2 volume.
fn grant_alice_again(inst: &Instance, step: &str) {
    let args = ["grant", "mac", "alice", "--passphrase-stdin"];
    let out = inst.keyward(&args, b"alice-pw\n");
    let already = code(&out) == Some(4) && stderr(&out).contains("already has keyslot");
    assert!(
        code(&out) == Some(0) || already,
        "{step}: grant: {}",
        stderr(&out)
    );
}

const ROTATE: [&str; 5] = ["recovery", "rotate", "mac", "--show", "--confirm-stdin"];

/// Begin a standalone recovery rotation; the key it shows (pending until confirmed).
fn begin_recovery(inst: &Instance, step: &str) -> String {
    let out = inst.keyward(&ROTATE, b"");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.split_whitespace()
        .find(|w| w.matches('-').count() == 5)
        .unwrap_or_else(|| panic!("{step}: no key in {text}: {}", stderr(&out)))
        .to_owned()
}

/// Confirm a begun rotation by typing the key's last group back.
fn confirm_recovery(inst: &Instance, key: &str) -> std::process::Output {
    let group = key.rsplit('-').next().unwrap().to_ascii_lowercase();
    inst.keyward(&ROTATE, format!("{group}\n").as_bytes())
}

/// One FileVault operation and what surrounds it.
struct Op {
    name: &'static str,
    /// The helper needs the Mac's people in its NSS (a login).
    people: bool,
    /// Bring a fresh instance to the operation's start; who unlocks then.
    setup: fn(&Instance) -> Held,
    /// The operation: the CLI's output (the helper may die in it), or `None` for a login,
    /// which the helper takes on in the background.
    run: fn(&Instance) -> Option<std::process::Output>,
    /// Crash points outside the FileVault seams that the operation passes (named in full).
    more: &'static [&'static str],
    /// The operation may replace the recovery key (FileVault retires the old one at once).
    replaces_recovery: bool,
    /// After the crash and the checks: run it again to completion and check what it made.
    finish: fn(&Instance, Held, &str),
}

fn bootstrapped(inst: &Instance) -> Held {
    bootstrap(inst, "setup");
    Held {
        service: true,
        ..Held::typical()
    }
}

fn with_alice(inst: &Instance) -> Held {
    let mut held = bootstrapped(inst);
    grant_alice(inst, "setup");
    held.users.push(("alice", ALICE_PW));
    held
}

/// Bootstrapped, a rotation begun (its key in force, pending); the pending key's holder.
fn with_pending(inst: &Instance) -> Held {
    let mut held = bootstrapped(inst);
    held.recovery = Some(begin_recovery(inst, "setup"));
    held
}

fn pending_key_file(inst: &Instance) -> std::path::PathBuf {
    inst.path("state/pending/mac")
}

/// The recovery holder keyward records is active, and the key it gives validates.
fn recovery_settled(inst: &Instance, key: &str, step: &str) {
    let vol = status(inst);
    let rec = holders(&vol, "recovery");
    assert_eq!(rec.len(), 1, "{step}: {vol}");
    assert_eq!(rec[0]["state"], "active", "{step}: {vol}");
    assert!(
        saved_mac(inst).validates(key),
        "{step}: {key} does not unlock"
    );
    assert!(
        !pending_key_file(inst).exists(),
        "{step}: a pending key left"
    );
}

const OPS: &[Op] = &[
    Op {
        name: "bootstrap",
        people: false,
        setup: |_| Held::typical(),
        run: |i| {
            let args = [
                "bootstrap",
                "mac",
                "--holder",
                "admin",
                "--passphrase-stdin",
            ];
            Some(i.keyward(&args, b"admin-pw\n"))
        },
        more: &[],
        replaces_recovery: false,
        finish: |i, mut held, step| {
            bootstrap(i, step);
            service_ok(i, step);
            held.service = true;
            check(i, &held, step);
            // The service account it made grants.
            grant_alice(i, step);
            held.users.push(("alice", ALICE_PW));
            check(i, &held, step);
        },
    },
    Op {
        name: "grant",
        people: false,
        setup: bootstrapped,
        run: |i| {
            Some(i.keyward(
                &["grant", "mac", "alice", "--passphrase-stdin"],
                b"alice-pw\n",
            ))
        },
        more: &[],
        replaces_recovery: false,
        finish: |i, mut held, step| {
            grant_alice_again(i, step);
            held.users.push(("alice", ALICE_PW));
            let vol = check(i, &held, step);
            let users = holders(&vol, "user");
            assert_eq!(users.len(), 1, "{step}: {vol}");
            assert_eq!(users[0]["user"], "alice", "{step}: {vol}");
            service_ok(i, step);
        },
    },
    Op {
        name: "service rotate",
        people: false,
        setup: with_alice,
        run: |i| Some(i.keyward(&["service", "rotate", "mac"], b"")),
        more: &[],
        replaces_recovery: false,
        finish: |i, held, step| {
            ok(
                &i.keyward(&["service", "rotate", "mac"], b""),
                step,
                "rotate",
            );
            service_ok(i, step);
            let mut mac = saved_mac(i);
            let current = mac.keychain(KeychainItem::ServiceCurrent).unwrap();
            assert!(mac.unlocks(SERVICE, current.expose()), "{step}");
            assert!(mac.keychain(KeychainItem::ServiceNext).is_none(), "{step}");
            check(i, &held, step);
        },
    },
    Op {
        name: "recovery begin",
        people: false,
        setup: bootstrapped,
        run: |i| Some(i.keyward(&ROTATE, b"")),
        more: &["recovery-begin.sealed"],
        replaces_recovery: true,
        finish: |i, mut held, step| {
            // Begin again: the sealed pending key if it survived, else a new one; confirm it.
            let key = begin_recovery(i, step);
            ok(&confirm_recovery(i, &key), step, "confirm");
            recovery_settled(i, &key, step);
            held.recovery = Some(key);
            check(i, &held, step);
        },
    },
    Op {
        name: "recovery commit",
        people: false,
        setup: with_pending,
        run: |i| {
            let key = std::fs::read_to_string(i.path("pending-key-for-test")).unwrap();
            Some(confirm_recovery(i, &key))
        },
        more: &[],
        replaces_recovery: false,
        finish: |i, held, step| {
            let key = held.recovery.clone().unwrap();
            if holders(&status(i), "recovery")[0]["state"] == "pending" {
                ok(&confirm_recovery(i, &key), step, "confirm");
            }
            recovery_settled(i, &key, step);
            check(i, &held, step);
        },
    },
    Op {
        name: "recovery abort",
        people: false,
        setup: with_pending,
        run: |i| Some(i.keyward(&["recovery", "abort", "mac"], b"")),
        more: &[],
        replaces_recovery: false,
        finish: |i, held, step| {
            let out = i.keyward(&["recovery", "abort", "mac"], b"");
            ok(&out, step, "abort");
            // FileVault cannot go back: the aborted key stays in force, not escrowed.
            recovery_settled(i, held.recovery.as_deref().unwrap(), step);
            check(i, &held, step);
            // And the next rotation replaces it.
            let key = begin_recovery(i, step);
            ok(&confirm_recovery(i, &key), step, "confirm");
            recovery_settled(i, &key, step);
        },
    },
    Op {
        name: "login capture",
        people: true,
        setup: bootstrapped,
        run: |i| {
            capture(i, "alice", ALICE_PW);
            None
        },
        more: &[],
        replaces_recovery: false,
        finish: |i, mut held, step| {
            // The login the crash cut short left no record; the next login finishes the grant.
            let n = captures(i, "alice").len() + 1;
            capture(i, "alice", ALICE_PW);
            let result = nth_capture(i, "alice", n, step);
            assert!(
                result.starts_with("ok: mac: granted a Secure Token (slot ")
                    || result.starts_with("ok: mac: holds its Secure Token"),
                "{step}: {result}"
            );
            held.users.push(("alice", ALICE_PW));
            let vol = check(i, &held, step);
            assert_eq!(holders(&vol, "user").len(), 1, "{step}: {vol}");
        },
    },
    Op {
        name: "login revoke",
        people: true,
        // alice's first login gave her a token; then she left keyward-users. Her token goes
        // at her next login, on purpose: she is not among those who must still unlock.
        setup: |i| {
            let held = bootstrapped(i);
            capture(i, "alice", ALICE_PW);
            let first = nth_capture(i, "alice", 1, "setup");
            assert!(first.starts_with("ok: mac: granted"), "{first}");
            in_helper_ns(i, "gpasswd -d alice keyward-users >/dev/null");
            held
        },
        run: |i| {
            capture(i, "alice", ALICE_PW);
            None
        },
        more: &[],
        replaces_recovery: false,
        finish: |i, held, step| {
            let n = captures(i, "alice").len() + 1;
            capture(i, "alice", ALICE_PW);
            let result = nth_capture(i, "alice", n, step);
            assert!(
                result.starts_with("ok: mac: not-managed: revoked its Secure Token")
                    || result.starts_with("error:Refused: not managed"),
                "{step}: {result}"
            );
            let vol = check(i, &held, step);
            assert!(holders(&vol, "user").is_empty(), "{step}: {vol}");
            let mac = saved_mac(i);
            assert!(!mac.mac.account("alice").unwrap().token, "{step}");
        },
    },
    Op {
        name: "release",
        people: true,
        // The service account goes on purpose; admin, alice and the key must stay.
        setup: |i| Held {
            service: false,
            ..with_alice(i)
        },
        run: |i| Some(i.keyward(&["uninstall", "--yes", "--package"], b"")),
        more: &[],
        replaces_recovery: false,
        finish: |i, held, step| {
            let mac_before = std::fs::read(i.path("state/simulated-mac.json")).unwrap();
            let out = i.keyward(&["uninstall", "--yes", "--package"], b"");
            ok(&out, step, "uninstall");
            assert!(
                !i.path("state").exists(),
                "{step}: the state directory is left"
            );
            // The state directory (and the simulated Mac in it) is gone; the Mac as it was
            // just before the finishing run still let everyone else in.
            let mut mac = SavedMac {
                mac: persist::mac_from_json(&mac_before).unwrap(),
                keys: MemoryKeychain::default(),
            };
            for (user, pw) in &held.users {
                assert!(mac.unlocks(user, pw.as_bytes()), "{step}: {user}");
            }
        },
    },
];

/// The crash points `op` passes, in order, from one traced run.
fn trace(op: &Op) -> Vec<String> {
    let mut inst = mac_instance(op.people);
    let held = (op.setup)(&inst);
    remember_pending(&inst, &held);
    inst.stop_helper();
    let log_start = inst.helper_stderr().len();
    inst.helper_env = vec![("KEYWARD_FAILPOINT_TRACE".into(), "1".into())];
    assert!(inst.try_start(), "{}: {}", op.name, inst.helper_stderr());
    let logins = captures(&inst, "alice").len();
    match (op.run)(&inst) {
        // (A begun rotation waits for a confirmation that does not come: not exit 0, but alive.)
        Some(out) => assert_ne!(code(&out), Some(5), "{}: {}", op.name, stderr(&out)),
        None => drop(nth_capture(&inst, "alice", logins + 1, op.name)),
    }
    assert!(inst.helper_alive(), "{}: the traced run", op.name);
    let log = inst.helper_stderr();
    let mut points: Vec<String> = log[log_start..]
        .lines()
        .filter_map(|l| l.strip_prefix("keyward-helper: crash point "))
        .map(str::to_owned)
        .collect();
    points.extend(op.more.iter().map(|s| (*s).to_owned()));
    assert!(!points.is_empty(), "{}: no crash point reached", op.name);
    points
}

/// The test's copy of a pending key (the commit's run types its last group back).
fn remember_pending(inst: &Instance, held: &Held) {
    if let Some(key) = &held.recovery {
        std::fs::write(inst.path("pending-key-for-test"), key).unwrap();
    }
}

/// `state/` and `log/` as the dead helper left them.
fn snapshot(inst: &Instance) -> std::path::PathBuf {
    let snap = inst.path("snapshot");
    let _ = std::fs::remove_dir_all(&snap);
    std::fs::create_dir(&snap).unwrap();
    for dir in ["state", "log"] {
        let out = run(
            std::process::Command::new("cp")
                .arg("-a")
                .arg(inst.path(dir))
                .arg(&snap),
            b"",
        );
        assert!(out.status.success(), "cp: {}", stderr(&out));
    }
    snap
}

fn restore(inst: &Instance, snap: &std::path::Path) {
    for dir in ["state", "log"] {
        std::fs::remove_dir_all(inst.path(dir)).unwrap();
        let out = run(
            std::process::Command::new("cp")
                .arg("-a")
                .arg(snap.join(dir))
                .arg(inst.root.path()),
            b"",
        );
        assert!(out.status.success(), "cp: {}", stderr(&out));
    }
}

/// The helper is down after a crash at `step`. The next one's start-up settle (reconcile, an
/// interrupted password rotation finished) writes too: list its crash points with one traced
/// start, then for each, start from what the crash left and die there as well, start again,
/// and check. Leaves the helper running, settled.
fn crash_in_the_settle(inst: &mut Instance, held: &Held, step: &str) {
    let snap = snapshot(inst);
    let log_start = inst.helper_stderr().len();
    inst.helper_env = vec![("KEYWARD_FAILPOINT_TRACE".into(), "1".into())];
    assert!(
        inst.try_start(),
        "{step}: restart: {}",
        inst.helper_stderr()
    );
    let settle: Vec<String> = inst.helper_stderr()[log_start..]
        .lines()
        .filter_map(|l| l.strip_prefix("keyward-helper: crash point "))
        .map(str::to_owned)
        .collect();
    inst.helper_env.clear();
    for point in settle {
        let step = format!("{step}, then in the start-up settle at {point}");
        inst.stop_helper();
        restore(inst, &snap);
        inst.helper_env = vec![("KEYWARD_FAILPOINT".into(), point.clone())];
        assert!(!inst.try_start(), "{step}: not reached");
        let died = inst.start_exit.take().unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&died),
            Some(9),
            "{step}: a crash point must SIGKILL"
        );
        inst.helper_env.clear();
        assert!(
            inst.try_start(),
            "{step}: restart: {}",
            inst.helper_stderr()
        );
        check(inst, held, &step);
        SETTLE_CRASHES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Crashes in a start-up settle, over all the tests of this process (printed, for the record).
static SETTLE_CRASHES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

fn crash_everywhere(op: &Op) {
    let points = trace(op);
    eprintln!("{}: {points:?}", op.name);
    for (i, point) in points.iter().enumerate() {
        let mut inst = mac_instance(op.people);
        let mut held = (op.setup)(&inst);
        remember_pending(&inst, &held);
        inst.stop_helper();
        inst.helper_env = vec![("KEYWARD_FAILPOINT".into(), point.clone())];
        assert!(inst.try_start(), "{point}: start: {}", inst.helper_stderr());
        if let Some(out) = (op.run)(&inst) {
            assert_eq!(
                code(&out),
                Some(5),
                "{} at {point}: the helper should have died: {}",
                op.name,
                stderr(&out)
            );
        }
        assert!(inst.helper_died(), "{} at {point}: still alive", op.name);
        let step = format!("{} at {point}", op.name);
        // FileVault retires the old key when it makes a new one: from that step on, the old
        // key is gone on a real Mac too, and the re-run hands out the one in force. Before it,
        // the old key must still unlock.
        let replaced = points[..=i]
            .iter()
            .any(|p| p.starts_with("filevault-mac.recovery-changed"));
        if op.replaces_recovery && replaced {
            held.recovery = None;
        }
        crash_in_the_settle(&mut inst, &held, &step);
        check(&inst, &held, &step);
        (op.finish)(&inst, held, &step);
    }
    eprintln!(
        "{}: {} crash points, {} crashes in a start-up settle so far",
        op.name,
        points.len(),
        SETTLE_CRASHES.load(std::sync::atomic::Ordering::Relaxed)
    );
}

#[test]
fn crash_at_every_step_of_a_filevault_bootstrap() {
    crash_everywhere(&OPS[0]);
}

#[test]
fn crash_at_every_step_of_a_filevault_grant() {
    crash_everywhere(&OPS[1]);
}

#[test]
fn crash_at_every_step_of_a_filevault_service_rotation() {
    crash_everywhere(&OPS[2]);
}

#[test]
fn crash_at_every_step_of_a_filevault_recovery_begin() {
    crash_everywhere(&OPS[3]);
}

#[test]
fn crash_at_every_step_of_a_filevault_recovery_commit() {
    crash_everywhere(&OPS[4]);
}

#[test]
fn crash_at_every_step_of_a_filevault_recovery_abort() {
    crash_everywhere(&OPS[5]);
}

#[test]
fn crash_at_every_step_of_a_filevault_login_capture() {
    crash_everywhere(&OPS[6]);
}

#[test]
fn crash_at_every_step_of_a_filevault_login_revoke() {
    crash_everywhere(&OPS[7]);
}

#[test]
fn crash_at_every_step_of_a_filevault_release() {
    crash_everywhere(&OPS[8]);
}

/// Every `failpoint("filevault…")` in the helper's FileVault code.
fn crash_points_in_the_source() -> BTreeSet<String> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../keyward-helper/src/vault/filevault");
    let mut names = BTreeSet::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        for (i, _) in text.match_indices("failpoint(\"filevault") {
            let name = &text[i + "failpoint(\"".len()..];
            names.insert(name[..name.find('"').unwrap()].to_owned());
        }
    }
    names
}

#[test]
fn every_filevault_crash_point_is_reached_by_an_operation_here() {
    let in_source = crash_points_in_the_source();
    assert!(in_source.len() >= 8, "{in_source:?}");
    let reached: BTreeSet<String> = OPS
        .iter()
        .flat_map(trace)
        .map(|p| p.split('#').next().unwrap().to_owned())
        .collect();
    let missed: Vec<&String> = in_source.difference(&reached).collect();
    assert!(missed.is_empty(), "no crash test reaches {missed:?}");
}
