//! A FileVault volume end to end on Linux: the real CLI, helper, agent and escrow server, with
//! a `kind = "filevault"` volume served by keyward-macos's simulated Mac (the helper is built
//! with `simulated-mac`; the Mac's state is kept in the helper's state directory, so it outlives a
//! killed helper as a real Mac would: an admin holding a
//! Secure Token with password `admin-pw`, a user `alice` with `alice-pw` and no token, FileVault
//! on). Beside it, a LUKS2 image formatted by stock cryptsetup, so both kinds are compared
//! through the same commands.
#![allow(clippy::unwrap_used)]

mod common;
#[path = "filevault/login.rs"]
mod login;

use std::collections::BTreeSet;

use common::escrow::{configure, enroll_agent, wait_for, Server};
use common::*;
use serde_json::Value;

/// An instance with the LUKS2 volume `data` and the FileVault volume `mac`.
fn instance() -> Instance {
    let inst = Instance::prepare();
    add_mac_volume(&inst);
    inst
}

fn add_mac_volume(inst: &Instance) {
    let mut cfg = std::fs::read_to_string(&inst.config).unwrap();
    // The agent runs as `nobody` here; the Mac's token holder is its own hidden account.
    cfg.push_str(
        "[[volume]]\nname = \"mac\"\ndevice = \"/\"\nkind = \"filevault\"\nservice_account = \"_keyward\"\n",
    );
    std::fs::write(&inst.config, cfg).unwrap();
    chmod(&inst.config, 0o644);
}

fn bootstrap_mac(inst: &Instance) -> std::process::Output {
    inst.keyward(
        &[
            "bootstrap",
            "mac",
            "--holder",
            "admin",
            "--passphrase-stdin",
        ],
        b"admin-pw\n",
    )
}

fn status_json(inst: &Instance) -> Value {
    let out = inst.keyward(&["status", "--json"], b"");
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn volume<'a>(status: &'a Value, name: &str) -> &'a Value {
    status["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["volume"] == name)
        .unwrap_or_else(|| panic!("no {name} in {status}"))
}

fn holder<'a>(vol: &'a Value, role: &str) -> &'a Value {
    vol["holders"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["role"] == role)
        .unwrap_or_else(|| panic!("no {role} holder in {vol}"))
}

/// Every `path: type` in a JSON value (array elements share the path `[]`).
fn typed_paths(v: &Value, path: &str, out: &mut BTreeSet<String>) {
    let kind = match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(items) => {
            for item in items {
                typed_paths(item, &format!("{path}[]"), out);
            }
            "array"
        }
        Value::Object(map) => {
            for (k, item) in map {
                typed_paths(item, &format!("{path}.{k}"), out);
            }
            "object"
        }
    };
    out.insert(format!("{path}: {kind}"));
}

fn shape(v: &Value) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    typed_paths(v, "", &mut out);
    out
}

/// A standalone rotation (`--show`, then the last group typed back); returns the key.
fn rotate_standalone(inst: &Instance, vol: &str) -> String {
    let args = ["recovery", "rotate", vol, "--show", "--confirm-stdin"];
    let out = inst.keyward(&args, b"");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let key = text
        .split_whitespace()
        .find(|w| w.matches('-').count() >= 5)
        .unwrap_or_else(|| panic!("no key in {text}"))
        .to_owned();
    let group = key.rsplit('-').next().unwrap().to_ascii_lowercase();
    let out = inst.keyward(&args, format!("{group}\n").as_bytes());
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    key
}

#[test]
fn a_filevault_volume_answers_the_same_commands_as_a_luks2_volume() {
    let inst = instance().start();

    // Before bootstrap: the Mac's own holders, unmanaged.
    let before = status_json(&inst);
    let mac = volume(&before, "mac");
    assert_eq!(mac["error"], Value::Null, "{mac}");
    let kdfs: Vec<&Value> = mac["holders"]
        .as_array()
        .unwrap()
        .iter()
        .inspect(|h| assert_eq!(h["role"], "unmanaged"))
        .map(|h| &h["kdf"])
        .collect();
    assert_eq!(kdfs, ["secure-token", "recovery-key"], "{mac}");

    // Bootstrap needs the holder's name on a Mac, and only there.
    let out = inst.keyward(&["bootstrap", "mac", "--passphrase-stdin"], b"admin-pw\n");
    assert_eq!(code(&out), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("--holder"), "{}", stderr(&out));
    let out = inst.keyward(
        &[
            "bootstrap",
            "data",
            "--holder",
            "admin",
            "--passphrase-stdin",
        ],
        format!("{INSTALL_PASS}\n").as_bytes(),
    );
    assert_eq!(code(&out), Some(2), "{}", stderr(&out));
    let out = inst.keyward(
        &[
            "bootstrap",
            "mac",
            "--holder",
            "admin",
            "--passphrase-stdin",
        ],
        b"not the password\n",
    );
    assert_eq!(code(&out), Some(3), "a refused password: {}", stderr(&out));
    let out = bootstrap_mac(&inst);
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("created the service slot"));
    let again = bootstrap_mac(&inst);
    assert!(
        String::from_utf8_lossy(&again.stdout).contains("already bootstrapped"),
        "{}",
        String::from_utf8_lossy(&again.stdout)
    );
    inst.bootstrap();

    // Grants: alice's Secure Token from the service account; daemon's LUKS2 slot.
    let out = inst.keyward(
        &["grant", "mac", "alice", "--passphrase-stdin"],
        b"alice-pw\n",
    );
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    let out = inst.keyward(
        &["grant", "mac", "nosuchuser", "--passphrase-stdin"],
        b"x\n",
    );
    assert_eq!(code(&out), Some(2), "{}", stderr(&out));
    let out = inst.keyward(
        &["grant", "data", "daemon", "--passphrase-stdin"],
        b"daemon's passphrase\n",
    );
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));

    // Recovery keys, standalone: the FileVault key in FileVault's form.
    let luks_key = rotate_standalone(&inst, "data");
    keyward_core::recovery_key::parse(luks_key.as_bytes()).unwrap();
    let mac_key = rotate_standalone(&inst, "mac");
    assert_eq!(mac_key.len(), 29, "{mac_key}");
    assert!(mac_key
        .split('-')
        .all(|g| g.len() == 4 && g.bytes().all(|b| b.is_ascii_alphanumeric())));
    assert!(
        !inst.path("state/pending/mac").exists(),
        "pending key dropped at commit"
    );
    // The commit is on the record, for the Mac volume, as the admin's.
    let committed = inst.audit_lines().into_iter().any(|l| {
        l.contains("\"op\":\"recovery-confirm\"")
            && l.contains("\"volume\":\"mac\"")
            && l.contains("\"caller\":\"admin\"")
            && l.contains("\"result\":\"ok")
    });
    assert!(committed, "{:?}", inst.audit_lines());

    // `status --json` has one shape for both kinds, holder role by holder role.
    let status = status_json(&inst);
    let (data, mac) = (volume(&status, "data"), volume(&status, "mac"));
    for role in ["service", "user", "recovery", "unmanaged"] {
        assert_eq!(
            shape(holder(data, role)),
            shape(holder(mac, role)),
            "{role} holders differ in shape"
        );
    }
    let mut d = data.clone();
    let mut m = mac.clone();
    d["holders"] = Value::Array(vec![]);
    m["holders"] = Value::Array(vec![]);
    // LUKS2's alone: the boot prompt's try order and its cost (FileVault has none).
    assert!(d["unlock_cost"].is_object(), "{d}");
    assert_eq!(m["unlock_cost"], Value::Null);
    d["unlock_cost"] = Value::Null;
    assert_eq!(shape(&d), shape(&m));
    let alice = holder(mac, "user");
    assert_eq!(alice["user"], "alice");
    assert_eq!(alice["uid"], 502);
    assert_eq!(alice["state"], "active");
    assert_eq!(holder(mac, "recovery")["state"], "active");
    assert_eq!(holder(mac, "service")["state"], "active");
    assert_eq!(mac["violations"], Value::Array(vec![]));

    // verify: the keychain's service password unlocks; a service rotation keeps it so.
    let verified = |inst: &Instance| -> Value {
        let out = inst.keyward(&["verify", "mac", "--json"], b"");
        assert_eq!(code(&out), Some(0), "{}", stderr(&out));
        serde_json::from_slice(&out.stdout).unwrap()
    };
    assert_eq!(verified(&inst)["volumes"][0]["service"], "ok");
    let out = inst.keyward(&["service", "rotate", "mac"], b"");
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    assert_eq!(verified(&inst)["volumes"][0]["service"], "ok");

    // Revoke is refused (macOS needs the holder's own password); nothing changes.
    let out = inst.keyward(&["revoke", "mac", "alice"], b"");
    assert_eq!(code(&out), Some(4), "{}", stderr(&out));
    assert!(stderr(&out).contains("own password"), "{}", stderr(&out));
    assert_eq!(
        holder(volume(&status_json(&inst), "mac"), "user")["user"],
        "alice"
    );
    // Repair has nothing to do while the service account works.
    let out = inst.keyward(
        &["service", "repair", "mac", "--passphrase-stdin"],
        b"admin-pw\n",
    );
    assert_eq!(code(&out), Some(4), "{}", stderr(&out));

    // keyward's record of the Mac is root-only; no secret reached it or the audit log.
    let registry = inst.path("state/macos-registry.json");
    let meta = std::fs::metadata(&registry).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777,
        0o600
    );
    let text = std::fs::read_to_string(&registry).unwrap() + &inst.audit_lines().join("\n");
    for secret in ["admin-pw", "alice-pw", mac_key.as_str()] {
        assert!(!text.contains(secret), "{secret} written down");
    }
    assert!(inst
        .audit_lines()
        .iter()
        .any(|l| l.contains("\"bootstrap\"") && l.contains("\"mac\"") && l.contains("admin")));
}

#[test]
fn a_filevault_recovery_key_is_escrowed_by_the_agent_and_shown_to_an_admin() {
    let inst = instance();
    let srv = Server::start(&inst);
    configure(&inst, &srv, "");
    let inst = inst.start();
    inst.bootstrap();
    assert_eq!(code(&bootstrap_mac(&inst)), Some(0));
    let (mut agent, device) = enroll_agent(&inst, &srv);

    // Enrolled, the agent escrows both volumes' recovery keys by itself.
    let escrowed = |inst: &Instance| {
        let status = status_json(inst);
        let mac = volume(&status, "mac");
        let r = mac["holders"]
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h["role"] == "recovery")?;
        (r["state"] == "active" && r["escrow_id"].is_string())
            .then(|| r["escrow_id"].as_str().unwrap().to_owned())
    };
    let first = wait_for(&inst, "the FileVault key escrowed", || escrowed(&inst));
    let shown = |id: &str| {
        let out = srv.cmd(&[
            "key", "show", &device, "mac", "--escrow", id, "--reason", "drill",
        ]);
        assert!(out.status.success(), "{}", stderr(&out));
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    let key1 = shown(&first);
    assert_eq!(key1.len(), 29, "a FileVault key: {key1}");
    assert!(!inst.path("state/pending/mac").exists());

    // An admin's rotation goes through the agent too; the server holds the new key.
    let out = inst.keyward(&["recovery", "rotate", "mac"], b"");
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    let second = escrowed(&inst).unwrap();
    assert_ne!(first, second);
    let key2 = shown(&second);
    assert_ne!(key1, key2);
    // The agent carried it: the commit is the agent's record for the Mac volume (its begins,
    // idempotent, are folded into one record a minute with the other volume's).
    let agent_did = |op: &str, volume: &str| {
        inst.audit_lines().into_iter().any(|l| {
            l.contains(&format!("\"op\":\"{op}\""))
                && l.contains(volume)
                && l.contains("\"caller\":\"agent\"")
                && l.contains("\"result\":\"ok")
        })
    };
    assert!(agent_did("recovery-begin", "\"volume\""));
    assert!(agent_did("recovery-commit", "\"volume\":\"mac\""));
    let _ = agent.kill();
    let _ = agent.wait();
}
