//! A hostile escrow server against the real agent, helper and cryptsetup (issue 16): for each
//! misbehaviour of `tests/hostile/escrow_server.py` — a reply that is not JSON, one of 50 MiB,
//! one that never ends, a 200 KiB JSON string of terminal escapes where a receipt belongs, none at all, 503 forever, a redirect elsewhere, a receipt signed by
//! another key, genuine receipts (signed by the real server's key) for another device, volume,
//! rotation or ciphertext, the real server's receipt for an earlier rotation replayed, and a
//! signed command the server never signed — the agent is asked to rotate the recovery key and
//! then left to retry on its own. Every time: nothing is committed (the rotation stays pending,
//! the old key still opens the disk with stock cryptsetup), the agent is alive, backs off
//! instead of spinning, keeps its memory bounded and writes no secret to its log, and the
//! audit chain verifies. A server that trickles its reply a byte a second, to the escrow upload
//! (its body) or to the check-in (from its status line), is hung up on at the agent's deadline
//! for the whole request. Pointed back at the real server, the same rotation completes.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Instant;

use common::escrow::*;
use common::hostile::*;
use common::http::{enroll_key, escrow_body, http, signed_as};
use common::*;
use ed25519_dalek::{Signer, SigningKey};
use keyward_core::command::{Action, Command, SignedCommand};
use keyward_core::escrow::Receipt;
use keyward_core::VolumeName;

const FAST: &str = "checkin_interval_secs = 1\nretry_initial_secs = 1\nretry_max_secs = 2\n";
/// The agent's peak resident memory may grow this much while hostile replies arrive (its
/// largest honest reply is a few KiB; it must stop reading long before 50 MiB).
const MAX_HWM_GROWTH_KIB: u64 = 8 * 1024;

/// What a run holds on to: the agent, the key the disk must keep opening, the pending rotation.
struct Run {
    inst: Instance,
    agent: Agent,
    device: String,
    old: (u64, String),
    old_key: String,
}

fn random_key() -> SigningKey {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).unwrap();
    SigningKey::from_bytes(&seed)
}

fn nonce() -> String {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).unwrap();
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn status(inst: &Instance) -> serde_json::Value {
    let out = inst.keyward(&["status", "data", "--json"], b"");
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The holders of `role` in `state`, as (slot, escrow id).
fn holders(inst: &Instance, role: &str, state: &str) -> Vec<(u64, Option<String>)> {
    status(inst)["volumes"][0]["holders"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["role"] == role && h["state"] == state)
        .map(|h| {
            (
                h["slot"].as_u64().unwrap(),
                h["escrow_id"].as_str().map(str::to_owned),
            )
        })
        .collect()
}

/// Round failures in `log`, each followed by its backoff.
fn retries(log: &str) -> usize {
    log.matches("escrow round failed").count()
}

/// One hostile episode: the agent pointed at `hostile`, a rotation asked for through the CLI,
/// then at least two retries of the agent's own; `expect` is in what it logged meanwhile.
fn episode(run: &mut Run, name: &str, hostile: &Hostile, expect: &str) {
    let inst = &run.inst;
    let pid = run.agent.id();
    point_agent_at(inst, &hostile.url);
    let mark = agent_log(inst).len();
    let (started, cpu_before) = (Instant::now(), cpu_ticks(pid));
    let out = inst.keyward(&["recovery", "rotate", "data"], b"");
    assert_ne!(code(&out), Some(0), "{name}: the CLI says it rotated");
    let agent = &mut run.agent;
    wait_for(inst, "two retries", || {
        let alive = agent.alive();
        assert!(
            alive,
            "{name}: the agent died:\n{}",
            &agent_log(inst)[mark..]
        );
        (retries(&agent_log(inst)[mark..]) >= 2).then_some(())
    });
    let secs = started.elapsed().as_secs_f64();
    let log = agent_log(inst)[mark..].to_owned();
    let context = format!("{name}: agent log of the episode:\n{log}");

    assert!(run.agent.alive(), "{context}");
    assert!(
        log.contains(expect),
        "{name}: expected {expect:?}\n{context}"
    );
    // Whatever the server sent, none of it reaches the log raw.
    assert!(
        !log.contains('\u{1b}') && log.len() < 64 << 10,
        "{name}: {} bytes of log, escapes: {}",
        log.len(),
        log.contains('\u{1b}')
    );
    // No spinning: a little CPU, and a request or two a round, never a flood.
    let cpu = (cpu_ticks(pid) - cpu_before) as f64 / 100.0;
    assert!(
        cpu < 1.0 + secs / 10.0,
        "{name}: {cpu}s of CPU in {secs:.1}s"
    );
    let requests = hostile.requests().len();
    assert!(
        requests >= 2 && requests as f64 <= 4.0 + 3.0 * secs,
        "{name}: {requests} requests in {secs:.1}s: {:?}",
        hostile.requests()
    );
    // Nothing committed: the old key is the active one and opens the disk; the new is pending.
    let (slot, escrow_id) = &run.old;
    assert_eq!(
        holders(inst, "recovery", "active"),
        vec![(*slot, Some(escrow_id.clone()))],
        "{context}"
    );
    assert_eq!(holders(inst, "recovery", "pending").len(), 1, "{context}");
    assert!(inst.opens(*slot, run.old_key.as_bytes()), "{context}");
    let out = inst.keyward(&["audit", "--verify"], b"");
    assert_eq!(code(&out), Some(0), "{name}: {}", stderr(&out));
    eprintln!("{name}: {requests} requests, {cpu:.2}s CPU in {secs:.1}s");
}

/// Run `mode` (misbehaving on every request) for one episode.
fn transport(run: &mut Run, mode: &str, expect: &str) {
    let hostile = Hostile::start(&run.inst, mode, &[]);
    episode(run, mode, &hostile, expect);
    if mode == "redirect" {
        assert!(
            hostile
                .requests()
                .iter()
                .all(|r| !r.contains("/elsewhere/")),
            "the agent followed a redirect: {:?}",
            hostile.requests()
        );
    }
}

/// A server trickling its answer to requests whose path holds `only`, a byte a second from
/// `phase` (`head`: the status line; `body`: after whole headers): every such request is
/// hung up on within the agent's deadline for a whole request (15 s), never later.
fn trickle(run: &mut Run, only: &str, phase: &str) {
    let hostile = Hostile::start(&run.inst, "trickle", &["--only", only, "--phase", phase]);
    let name = format!("trickle {only} {phase}");
    episode(run, &name, &hostile, "timeout");
    let gave_up = wait_for(&run.inst, "two hang-ups", || {
        let g = hostile.gave_up_after();
        (g.len() >= 2).then_some(g)
    });
    assert!(
        gave_up.iter().all(|secs| *secs < 18.0),
        "{name}: read for {gave_up:?}s before giving up"
    );
}

/// Serve `receipt` (JSON) to every escrow upload for one episode.
fn lie_with(run: &mut Run, name: &str, receipt: &str, expect: &str) {
    let file = run.inst.path(&format!("{name}.json"));
    std::fs::write(&file, receipt).unwrap();
    let hostile = Hostile::start(&run.inst, "receipt", &["--reply", file.to_str().unwrap()]);
    episode(run, name, &hostile, expect);
}

/// A receipt the server behind `addr` signs for an upload by `key` as `device`.
fn genuine(
    addr: &str,
    key: &SigningKey,
    device: &str,
    volume: &str,
    rotation: &str,
    ciphertext: &[u8],
) -> String {
    let path = format!("/v1/devices/{device}/escrow/{volume}");
    let body = escrow_body(rotation, ciphertext);
    let headers = signed_as(key, "PUT", &path, body.as_bytes(), &nonce());
    let (status, answer) = http(addr, "PUT", &path, &headers, body.as_bytes());
    assert_eq!(status, 200, "{answer}");
    answer
}

#[test]
fn a_hostile_escrow_server_never_gets_a_rotation_committed() {
    let inst = Instance::prepare();
    let mut srv = Server::start(&inst);
    configure(&inst, &srv, FAST);
    let inst = inst.start();
    inst.bootstrap();

    // Enrolled through a recording proxy in front of the real server, which keeps the genuine
    // receipt of the first escrow, to be replayed later.
    let recorded = inst.path("recorded-receipt.json");
    let recorder = Hostile::start(
        &inst,
        "record",
        &[
            "--upstream",
            &srv.url(),
            "--record",
            recorded.to_str().unwrap(),
        ],
    );
    let (agent, device) = enroll_agent_at(&inst, &srv, &recorder.url);
    let agent = Agent(agent);
    let (slot1, esc1) = wait_for(&inst, "the first escrowed key", || settled_key(&inst));
    let old_receipt = std::fs::read_to_string(&recorded).unwrap();
    let parsed: Receipt = serde_json::from_str(&old_receipt).unwrap();
    assert_eq!(parsed.escrow_id, esc1);
    drop(recorder);
    let old_key = srv.key_show(&device, "hostile server drill");
    assert!(inst.opens(slot1, old_key.as_bytes()));
    let service = holders(&inst, "service", "active");
    let pid = agent.id();
    let hwm_before = proc_kib(pid, "VmHWM");
    let mut run = Run {
        inst,
        agent,
        device,
        old: (slot1, esc1),
        old_key,
    };

    // Misbehaving on every request. The first begins the rotation the rest try to finish.
    transport(&mut run, "unavailable", "answered 503");
    transport(&mut run, "malformed", "line 1 column");
    transport(&mut run, "oversized", "limit");
    transport(&mut run, "endless", "limit");
    let hwm = proc_kib(pid, "VmHWM");
    assert!(
        hwm < hwm_before + MAX_HWM_GROWTH_KIB,
        "peak RSS {hwm_before} KiB before the oversized replies, {hwm} KiB after"
    );
    eprintln!("peak RSS: {hwm_before} KiB before the oversized replies, {hwm} KiB after");
    transport(&mut run, "redirect", "answered 302");
    transport(&mut run, "hang", "timeout");
    trickle(&mut run, "/escrow/", "body");
    trickle(&mut run, "/checkin", "head");

    // The pending rotation, as the helper gives it to the agent (the same on every call).
    let (pending_slot, rotation, ciphertext, sha256) = escrow_begin(&run.inst.socket());
    assert_eq!(
        holders(&run.inst, "recovery", "pending"),
        vec![(u64::from(pending_slot), None)]
    );
    let data = VolumeName::parse("data").unwrap();

    // Signed by another key, over exactly the tuple the helper expects.
    let forger = random_key();
    let message = Receipt::message(&run.device, &data, &rotation, &sha256, "forged-escrow");
    let forged = Receipt {
        device: run.device.clone(),
        volume: data.clone(),
        rotation_id: rotation.clone(),
        sha256: sha256.clone(),
        escrow_id: "forged-escrow".into(),
        signature: forger.sign(&message).to_bytes().to_vec(),
    };
    let forged = serde_json::to_string(&forged).unwrap();
    lie_with(&mut run, "wrong-key", &forged, "does not verify");

    // Where a receipt belongs, a 200 KiB JSON string of terminal escapes (a parser's error
    // would quote it whole into the log).
    let big = "\u{1b}[2J\u{1b}]0;owned\u{7} ".repeat(10_000);
    lie_with(
        &mut run,
        "string-receipt",
        &serde_json::to_string(&big).unwrap(),
        "receipt is malformed",
    );

    // The real server's genuine receipt for the first rotation, replayed.
    lie_with(&mut run, "replayed", &old_receipt, "for another rotation");

    // Genuine receipts, signed with the real server's key by a twin of it (a copy of its state
    // taken now, so the real server never sees these uploads), each for a tuple that differs
    // from the pending rotation's in one field.
    srv.stop();
    let twin_state = run.inst.path("twin");
    let cp = std::process::Command::new("cp")
        .arg("-a")
        .arg(&srv.state)
        .arg(&twin_state)
        .status()
        .unwrap();
    assert!(cp.success());
    srv.resume();
    let mut twin = Server::offline(twin_state, None);
    twin.resume();
    let key = device_key(&run.inst);
    let other_device = random_key();
    let other_id = enroll_key(&twin.addr, &twin.token(), &other_device);
    let (recipient, _) = srv.public_keys();
    let recipient: age::x25519::Recipient = recipient.parse().unwrap();
    let other_ciphertext = age::encrypt(&recipient, b"not the pending key").unwrap();
    let d = run.device.clone();
    let variants = [
        (
            "another-device",
            genuine(
                &twin.addr,
                &other_device,
                &other_id,
                "data",
                &rotation,
                &ciphertext,
            ),
            "for another device",
        ),
        (
            "another-volume",
            genuine(&twin.addr, &key, &d, "other", &rotation, &ciphertext),
            "for another volume",
        ),
        (
            "another-rotation",
            genuine(
                &twin.addr,
                &key,
                &d,
                "data",
                "not-this-rotation",
                &ciphertext,
            ),
            "for another rotation",
        ),
        (
            "another-ciphertext",
            genuine(&twin.addr, &key, &d, "data", &rotation, &other_ciphertext),
            "for another ciphertext",
        ),
    ];
    drop(twin);
    for (name, receipt, expect) in &variants {
        lie_with(&mut run, name, receipt, expect);
    }

    // A command the server did not sign: rotate the service secret.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let command = SignedCommand::sign(
        Command {
            id: "hostile-command-0001".into(),
            device: run.device.clone(),
            issued: now,
            expires: now + 3600,
            action: Action::RotateService {
                volume: data.clone(),
            },
        },
        &forger,
    );
    let file = run.inst.path("command.json");
    std::fs::write(&file, serde_json::to_string(&command).unwrap()).unwrap();
    let hostile = Hostile::start(&run.inst, "command", &["--reply", file.to_str().unwrap()]);
    episode(
        &mut run,
        "forged-command",
        &hostile,
        "signature does not verify",
    );
    assert_eq!(holders(&run.inst, "service", "active"), service);
    drop(hostile);

    // Back to the real server: the same rotation completes, and the old key is retired.
    point_agent_at(&run.inst, &srv.url());
    let (slot2, esc2) = wait_for(&run.inst, "the rotation through the real server", || {
        settled_key(&run.inst).filter(|(_, e)| *e != run.old.1)
    });
    assert_eq!(slot2, u64::from(pending_slot));
    let new_key = srv.key_by_id(&run.device, &esc2).unwrap();
    assert!(run.inst.opens(slot2, new_key.as_bytes()));
    assert!(!run.inst.opens(slot1, run.old_key.as_bytes()));

    // Backoff: from the first retry's wait to the longest, never none.
    let log = agent_log(&run.inst);
    let waits: Vec<u64> = log
        .split("retrying in ")
        .skip(1)
        .filter_map(|s| s.split('s').next()?.parse().ok())
        .collect();
    assert!(waits.contains(&1) && waits.contains(&2), "{waits:?}");
    assert!(waits.iter().all(|w| (1..=2).contains(w)), "{waits:?}");

    // Nothing secret in the agent's log: neither key, nor its own device key.
    let seed = std::fs::read_to_string(run.inst.path("agent/device.key")).unwrap();
    for (what, secret) in [
        ("old recovery key", run.old_key.as_str()),
        ("new recovery key", new_key.as_str()),
        ("device key", seed.trim()),
    ] {
        assert!(!log.contains(secret), "the agent logged its {what}");
        let bare: String = secret.chars().filter(char::is_ascii_alphanumeric).collect();
        assert!(!log.contains(&bare), "the agent logged its {what}");
    }
    let out = run.inst.keyward(&["audit", "--verify"], b"");
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    assert!(run.agent.alive(), "{log}");
}
