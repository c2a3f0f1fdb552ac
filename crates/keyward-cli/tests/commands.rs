//! Signed commands at the device, with the real helper and real LUKS2 images: each action runs
//! when the pinned server key signed it for this device; forged, redirected, expired, early,
//! over-long, malformed, tampered and replayed commands (also across a helper restart) are
//! refused with nothing changed, as stock cryptsetup and `keyward status` confirm; unknown
//! users and volumes are clean errors; and the real agent relays commands from its check-in
//! answer as the agent class, without being able to bend any of the checks.
#![allow(clippy::unwrap_used)]

mod common;
#[path = "commands/fake_server.rs"]
mod fake_server;

use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::sync::atomic::{AtomicU64, Ordering};

use base64::Engine;
use common::escrow::{agent_log, pin_test_server, wait_for};
use common::*;
use ed25519_dalek::{Signer, SigningKey};
use keyward_core::command::{Action, Command, SignedCommand};
use keyward_core::escrow::Receipt;
use keyward_core::ipc::{CommandOutcome, PolicyReport, Reply, Request};
use keyward_core::{UserName, VolumeName};
use keyward_sys::helper_client::{self, CallError};

const DEVICE: &str = "dev-1";
const DAEMON_PASS: &[u8] = b"daemon's passphrase";

fn server_key() -> SigningKey {
    SigningKey::from_bytes(&[7u8; 32])
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn vol(s: &str) -> VolumeName {
    VolumeName::parse(s).unwrap()
}

fn user(s: &str) -> UserName {
    UserName::parse(s).unwrap()
}

/// A fresh command for this device, valid for an hour.
fn command(action: Action) -> Command {
    static N: AtomicU64 = AtomicU64::new(0);
    Command {
        id: format!(
            "cmd-{:x}-{}-{}",
            now(),
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ),
        device: DEVICE.into(),
        issued: now() - 10,
        expires: now() + 3600,
        action,
    }
}

fn signed(action: Action) -> SignedCommand {
    SignedCommand::sign(command(action), &server_key())
}

fn revoke_daemon() -> Action {
    Action::RevokeUser {
        volume: vol("data"),
        user: user("daemon"),
    }
}

fn rotate_service() -> Action {
    Action::RotateService {
        volume: vol("data"),
    }
}

/// An instance whose config pins the test server key and names this device, with `url` as the
/// escrow server and `extra` lines in `[escrow]`; started and bootstrapped, `daemon` granted.
fn instance(url: &str, extra: &str) -> (Instance, age::x25519::Identity) {
    let identity = age::x25519::Identity::generate();
    let inst = Instance::prepare();
    pin_test_server(
        &inst,
        url,
        &identity.to_public(),
        &server_key(),
        DEVICE,
        extra,
    );
    let inst = inst.start();
    inst.bootstrap();
    grant_daemon(&inst);
    (inst, identity)
}

fn grant_daemon(inst: &Instance) {
    let mut pass = DAEMON_PASS.to_vec();
    pass.push(b'\n');
    let out = inst.keyward(&["grant", "data", "daemon", "--passphrase-stdin"], &pass);
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
}

fn submit(inst: &Instance, signed: &SignedCommand) -> Result<Reply, CallError> {
    helper_client::call(
        &inst.socket(),
        Request::Command {
            signed: signed.clone(),
        },
    )
}

fn done(inst: &Instance, signed: &SignedCommand) -> CommandOutcome {
    match submit(inst, signed) {
        Ok(Reply::CommandDone { id, outcome }) => {
            assert_eq!(id, signed.command.id);
            outcome
        }
        other => panic!("{other:?}\n{}", inst.helper_stderr()),
    }
}

fn refused(inst: &Instance, signed: &SignedCommand, why: &str) {
    let e = submit(inst, signed).expect_err(why);
    assert_eq!(e.code, 4, "{why}: {e}");
    assert!(e.message.contains(why), "{why}: {e}");
}

/// The volume's holders (`keyward status --json`) and its LUKS2 metadata (stock cryptsetup).
fn snapshot(inst: &Instance) -> (serde_json::Value, serde_json::Value) {
    let out = inst.keyward(&["status", "data", "--json"], b"");
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    (
        serde_json::from_slice(&out.stdout).unwrap(),
        inst.metadata(),
    )
}

fn holders(inst: &Instance, role: &str) -> Vec<serde_json::Value> {
    snapshot(inst).0["volumes"][0]["holders"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["role"] == role)
        .cloned()
        .collect()
}

fn slot_of(h: &serde_json::Value) -> u64 {
    h["slot"].as_u64().unwrap()
}

fn policy(inst: &Instance) -> PolicyReport {
    match helper_client::call(&inst.socket(), Request::Policy).unwrap() {
        Reply::Policy(p) => p,
        other => panic!("{other:?}"),
    }
}

fn root_only(inst: &Instance, rel: &str) {
    let m = std::fs::symlink_metadata(inst.path(rel)).unwrap();
    assert!(
        m.is_file() && m.uid() == 0 && m.mode() & 0o7777 == 0o600,
        "{rel}"
    );
}

#[test]
fn each_action_runs_when_signed_by_the_pinned_key() {
    let (mut inst, identity) = instance("https://escrow.invalid", "");

    // Rotate the service secret: a new slot the stored secret opens; the old one is gone.
    let old = slot_of(&holders(&inst, "service")[0]);
    let old_secret = std::fs::read(inst.path("state/service/data")).unwrap();
    let CommandOutcome::ServiceRotated { old: o, new, .. } = done(&inst, &signed(rotate_service()))
    else {
        panic!()
    };
    assert_eq!(u64::from(o), old);
    let secret = std::fs::read(inst.path("state/service/data")).unwrap();
    assert_eq!(slot_of(&holders(&inst, "service")[0]), u64::from(new));
    assert!(inst.opens(u64::from(new), &secret));
    assert!(!inst.opens(old, &old_secret));

    // Revoke a user: daemon's passphrase opens nothing any more.
    let daemon = slot_of(&holders(&inst, "user")[0]);
    let CommandOutcome::UserRevoked { slot, .. } = done(&inst, &signed(revoke_daemon())) else {
        panic!()
    };
    assert_eq!(u64::from(slot), daemon);
    assert!(holders(&inst, "user").is_empty());
    assert!(!inst.opens(daemon, DAEMON_PASS));

    // Set policy: kept root-only, reported, applied by the helper (verify now revokes the slot
    // of a user outside the managed set); an older override is refused; an empty one restores
    // keyward.toml's values.
    let set = |days, revoke, issued_ago: u64| {
        let mut c = command(Action::SetPolicy {
            recovery_rotation_days: days,
            revoke_unmanaged: revoke,
        });
        c.issued = now() - issued_ago;
        SignedCommand::sign(c, &server_key())
    };
    let first = set(Some(7), Some(true), 10);
    let CommandOutcome::PolicySet(p) = done(&inst, &first) else {
        panic!()
    };
    let want = PolicyReport {
        recovery_rotation_days: 7,
        revoke_unmanaged: true,
        override_command: Some(first.command.id.clone()),
    };
    assert_eq!((p, policy(&inst)), (want.clone(), want.clone()));
    root_only(&inst, "state/policy-override.json");
    grant_daemon(&inst);
    let daemon = slot_of(&holders(&inst, "user")[0]);
    // daemon leaves the managed set; the server's override, not keyward.toml, says revoke.
    set_policy(&inst, "managed_users = [\"bin\"]");
    inst.stop_helper();
    assert!(inst.try_start(), "{}", inst.helper_stderr());
    let out = inst.keyward(&["verify", "--json"], b"");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["volumes"][0]["users"][0]["revoked"], true, "{v}");
    assert!(!inst.opens(daemon, DAEMON_PASS));
    refused(&inst, &set(Some(1), None, 60), "superseded");
    assert_eq!(policy(&inst), want);
    let clear = set(None, None, 5);
    done(&inst, &clear);
    assert_eq!(
        policy(&inst),
        PolicyReport {
            recovery_rotation_days: 90,
            revoke_unmanaged: false,
            override_command: Some(clear.command.id.clone()),
        }
    );

    // Rotate the recovery key: the helper begins an escrowed rotation (the agent's part is to
    // upload it and bring back the receipt), and the current key stays until the commit.
    let CommandOutcome::RecoveryRotationBegun { slot, .. } = done(
        &inst,
        &signed(Action::RotateRecovery {
            volume: vol("data"),
        }),
    ) else {
        panic!()
    };
    let pending = holders(&inst, "recovery");
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0]["state"], "pending");
    let (same, rotation, ciphertext, sha) = escrow_begin(&inst.socket());
    assert_eq!(
        same, slot,
        "the agent resumes the rotation the command began"
    );
    let msg = Receipt::message(DEVICE, &vol("data"), &rotation, &sha, "e-1");
    let receipt = Receipt {
        device: DEVICE.into(),
        volume: vol("data"),
        rotation_id: rotation,
        sha256: sha,
        escrow_id: "e-1".into(),
        signature: server_key().sign(&msg).to_bytes().to_vec(),
    };
    let commit = Request::RecoveryEscrowCommit {
        volume: vol("data"),
        receipt,
    };
    helper_client::call(&inst.socket(), commit).unwrap();
    let mut key = Vec::new();
    age::decrypt(&identity, &ciphertext)
        .unwrap()
        .as_slice()
        .read_to_end(&mut key)
        .unwrap();
    assert!(inst.opens(u64::from(slot), &key));
    assert_eq!(holders(&inst, "recovery")[0]["state"], "active");

    // Every command is audited with its id and what it did.
    let audit = inst.audit_lines();
    let ran = |id: &str| {
        audit.iter().any(|l| {
            l.contains("\"op\":\"run-command\"") && l.contains(id) && l.contains("ok: command")
        })
    };
    assert!(ran(&first.command.id) && ran(&clear.command.id));
    assert_eq!(code(&inst.keyward(&["audit", "--verify"], b"")), Some(0));
}

/// Issue 14: the installer passphrase is gone and daemon's slot is the last way in a person can
/// type at boot (keyward's service slot does not count: its secret lives in the helper's
/// state). A signed `revoke-user`, `keyward revoke` and verify with `revoke_unmanaged` are all
/// refused, and daemon's passphrase still opens. With only the service slot left, status and
/// verify report the volume as a violation.
#[test]
fn the_last_human_way_in_is_never_removed() {
    let (mut inst, _) = instance("https://escrow.invalid", "");
    let install = inst
        .metadata()
        .get("keyslots")
        .and_then(|k| k.as_object())
        .map(|k| k.keys().cloned().collect::<Vec<_>>())
        .unwrap();
    let ours: Vec<u64> = snapshot(&inst).0["volumes"][0]["holders"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["role"] != "unmanaged")
        .map(slot_of)
        .collect();
    for slot in install
        .iter()
        .filter(|s| !ours.contains(&s.parse().unwrap()))
    {
        let killed = run(
            std::process::Command::new("cryptsetup")
                .args(["luksKillSlot", "-q"])
                .arg(&inst.image)
                .arg(slot),
            b"",
        );
        assert!(killed.status.success(), "{}", stderr(&killed));
    }
    assert!(holders(&inst, "unmanaged").is_empty());
    let daemon = slot_of(&holders(&inst, "user")[0]);
    let violations = |inst: &Instance| {
        let out = inst.keyward(&["status", "data", "--json"], b"");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["volumes"][0]["violations"].clone()
    };
    assert_eq!(violations(&inst), serde_json::json!([]));

    let e = submit(&inst, &signed(revoke_daemon())).expect_err("last way in");
    assert_eq!(e.code, 4, "{e}");
    let out = inst.keyward(&["revoke", "data", "daemon"], b"");
    assert_eq!(code(&out), Some(4), "{}", stderr(&out));
    assert!(stderr(&out).contains("lock"), "{}", stderr(&out));

    // daemon leaves the managed set: verify with revoke_unmanaged tries and is refused, and
    // says so.
    set_policy(&inst, "revoke_unmanaged = true");
    set_policy(&inst, "managed_users = [\"bin\"]");
    inst.stop_helper();
    assert!(inst.try_start(), "{}", inst.helper_stderr());
    let out = inst.keyward(&["verify", "data", "--json"], b"");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["volumes"][0]["users"][0]["revoked"], false, "{v}");
    assert!(inst.opens(daemon, DAEMON_PASS));

    // daemon's slot removed by hand: only keyward's service slot is left, which is reported.
    let killed = run(
        std::process::Command::new("cryptsetup")
            .args(["luksKillSlot", "-q"])
            .arg(&inst.image)
            .arg(daemon.to_string()),
        b"",
    );
    assert!(killed.status.success(), "{}", stderr(&killed));
    let v = violations(&inst);
    assert!(v.to_string().contains("I1"), "{v}");
    let out = inst.keyward(&["verify", "data"], b"");
    assert_ne!(
        code(&out),
        Some(0),
        "verify must fail: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn forged_redirected_untimely_tampered_and_replayed_commands_change_nothing() {
    let (mut inst, _) = instance("https://escrow.invalid", "");
    let before = snapshot(&inst);
    let daemon = slot_of(&holders(&inst, "user")[0]);

    let forger = SigningKey::from_bytes(&[8u8; 32]);
    let with = |change: fn(&mut Command)| {
        let mut c = command(revoke_daemon());
        change(&mut c);
        SignedCommand::sign(c, &server_key())
    };
    let tampered = |change: fn(&mut Command)| {
        let mut s = signed(rotate_service());
        change(&mut s.command);
        s
    };
    let bad = [
        (
            "forged",
            SignedCommand::sign(command(revoke_daemon()), &forger),
            "signature",
        ),
        (
            "redirected",
            with(|c| c.device = "dev-2".into()),
            "another device",
        ),
        (
            "expired",
            with(|c| {
                c.issued -= 7200;
                c.expires = c.issued + 3600;
            }),
            "expired",
        ),
        (
            "issued in the future",
            with(|c| {
                c.issued += 3600;
                c.expires += 3600;
            }),
            "not valid yet",
        ),
        (
            "valid for too long",
            with(|c| c.expires = c.issued + 8 * 86_400),
            "validity window",
        ),
        (
            "malformed id",
            with(|c| c.id = "x".into()),
            "id is malformed",
        ),
        (
            "tampered action",
            tampered(|c| c.action = revoke_daemon()),
            "signature",
        ),
        (
            "tampered device",
            tampered(|c| c.device = "dev-2".into()),
            "signature",
        ),
        ("tampered expiry", tampered(|c| c.expires += 1), "signature"),
        ("tampered id", tampered(|c| c.id.push('x')), "signature"),
    ];
    for (what, cmd, why) in &bad {
        refused(&inst, cmd, why);
        assert_eq!(snapshot(&inst), before, "{what}: nothing changed");
    }
    assert!(inst.opens(daemon, DAEMON_PASS));

    // A genuine command runs once; replayed, it is refused — also after a helper restart.
    let genuine = signed(rotate_service());
    done(&inst, &genuine);
    let after = snapshot(&inst);
    assert_ne!(after, before);
    root_only(&inst, "state/command-journal.json");
    refused(&inst, &genuine, "already used");
    assert_eq!(snapshot(&inst), after);
    inst.stop_helper();
    assert!(inst.try_start(), "{}", inst.helper_stderr());
    refused(&inst, &genuine, "already used");
    assert_eq!(snapshot(&inst), after);
    let secret = std::fs::read(inst.path("state/service/data")).unwrap();
    assert!(inst.opens(slot_of(&holders(&inst, "service")[0]), &secret));

    // Each refusal is audited, naming the command.
    let audit = inst.audit_lines();
    for (what, cmd, _) in &bad[..5] {
        assert!(
            audit.iter().any(|l| l.contains("\"op\":\"run-command\"")
                && l.contains("Refused")
                && l.contains(&cmd.command.id)),
            "{what}"
        );
    }
}

#[test]
fn unknown_users_and_volumes_are_clean_errors() {
    let (mut inst, _) = instance("https://escrow.invalid", "");
    let before = snapshot(&inst);
    let nobody_there = signed(Action::RevokeUser {
        volume: vol("data"),
        user: user("nosuchuser"),
    });
    let e = submit(&inst, &nobody_there).unwrap_err();
    assert_eq!(e.code, 1, "{e}");
    assert!(
        e.message.contains("holds no keyward slot") && e.message.contains(&nobody_there.command.id),
        "{e}"
    );
    for action in [
        Action::RotateService {
            volume: vol("other"),
        },
        Action::RevokeUser {
            volume: vol("other"),
            user: user("daemon"),
        },
    ] {
        let e = submit(&inst, &signed(action)).unwrap_err();
        assert_eq!(e.code, 2, "{e}");
        assert!(e.message.contains("no volume named other"), "{e}");
    }
    assert_eq!(snapshot(&inst), before);
    // A failed command's id is spent all the same: the server issues a new one.
    refused(&inst, &nobody_there, "already used");
    assert!(inst.helper_alive());
}

#[test]
fn the_agent_relays_commands_but_cannot_bend_them() {
    let fake = fake_server::FakeServer::start(server_key(), DEVICE);
    let fast = "checkin_interval_secs = 1\nretry_initial_secs = 1\nretry_max_secs = 2\n";
    let (inst, _) = instance(&fake.url, fast);
    // The agent as if enrolled: its device key and id in its own state, owned by it.
    let dir = inst.path("agent");
    std::fs::create_dir(&dir).unwrap();
    let enrollment = serde_json::json!({ "url": fake.url, "device_id": DEVICE }).to_string();
    let key = base64::engine::general_purpose::STANDARD.encode([9u8; 32]);
    for (name, body) in [("device.key", key), ("device.json", enrollment)] {
        std::fs::write(dir.join(name), body).unwrap();
        chmod(&dir.join(name), 0o600);
        std::os::unix::fs::chown(dir.join(name), Some(NOBODY), Some(NOBODY)).unwrap();
    }
    std::os::unix::fs::chown(&dir, Some(NOBODY), Some(NOBODY)).unwrap();
    chmod(&dir, 0o700);
    let mut agent = inst.spawn_agent(&inst.path("agent.stderr"));

    // Its schedule escrows a first recovery key (no commands involved).
    wait_for(&inst, "the first escrowed key", || {
        holders(&inst, "recovery")
            .first()
            .filter(|h| h["escrow_id"] == "e-1")
            .cloned()
    });
    let service = slot_of(&holders(&inst, "service")[0]);
    let daemon = slot_of(&holders(&inst, "user")[0]);

    let rotate_service = signed(rotate_service());
    let revoke = signed(revoke_daemon());
    let forged = SignedCommand::sign(command(revoke_daemon()), &SigningKey::from_bytes(&[8; 32]));
    let mut redirected = command(revoke_daemon());
    redirected.device = "dev-2".into();
    let redirected = SignedCommand::sign(redirected, &server_key());
    let rotate_recovery = signed(Action::RotateRecovery {
        volume: vol("data"),
    });
    let batch = [
        &forged,
        &redirected,
        &rotate_service,
        &revoke,
        &rotate_recovery,
    ];
    fake.queue(batch.iter().map(|s| (*s).clone()).collect());
    let reports = wait_for(&inst, "the command reports", || {
        let r = fake.reports();
        (r.len() >= batch.len()).then_some(r)
    });
    let status = |s: &SignedCommand| {
        let r = reports.iter().find(|r| r.0 == s.command.id).unwrap();
        (r.1.clone(), r.2.clone())
    };
    assert_eq!(status(&forged).0, "refused", "{reports:?}");
    assert!(status(&forged).1.contains("signature"));
    assert_eq!(status(&redirected).0, "refused");
    assert!(status(&redirected).1.contains("another device"));
    assert_eq!(status(&rotate_service).0, "done", "{reports:?}");
    assert_eq!(status(&revoke).0, "done");
    assert_eq!(status(&rotate_recovery).0, "done", "{}", agent_log(&inst));
    assert!(status(&rotate_recovery).1.contains("escrowed as e-2"));

    // The forged and redirected revocations changed nothing; the genuine ones did.
    assert_ne!(slot_of(&holders(&inst, "service")[0]), service);
    assert!(holders(&inst, "user").is_empty());
    assert!(!inst.opens(daemon, DAEMON_PASS));
    let recovery = holders(&inst, "recovery");
    assert_eq!(recovery.len(), 1);
    assert_eq!(recovery[0]["escrow_id"], "e-2");

    // Replayed through the agent: refused by the helper.
    let seen = fake.reports().len();
    fake.queue(vec![rotate_service.clone()]);
    let replay = wait_for(&inst, "the replay's report", || {
        fake.reports().get(seen).cloned()
    });
    assert_eq!(replay.0, rotate_service.command.id);
    assert_eq!(replay.1, "refused");
    assert!(replay.2.contains("already used"), "{replay:?}");

    // The helper saw every one from the agent class and audited it.
    let audit = inst.audit_lines();
    for s in batch {
        assert!(
            audit.iter().any(|l| l.contains("\"caller\":\"agent\"")
                && l.contains("\"op\":\"run-command\"")
                && l.contains(&s.command.id)),
            "{}",
            s.command.id
        );
    }
    let _ = agent.kill();
    let _ = agent.wait();
}
