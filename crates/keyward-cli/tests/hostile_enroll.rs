//! Hostile answers to enrollment (issue 16), against the real agent, helper and CLI: `keyward
//! enroll` pointed at `tests/hostile/escrow_server.py` answering not JSON, 50 MiB, a body that
//! never ends, a redirect, nothing at all, a 512 KiB refusal full of terminal escapes, a reply
//! trickled a byte a second (headers or body), device ids that are empty, a path (`../`), hold
//! a NUL or are 10 KiB long, a 200 KiB JSON string of escapes where the answer belongs; a real keyward-server with another identity than the one the
//! config pins; and, once enrolled, the real server's answer replayed for the same single-use
//! token. Every time: the CLI fails with a clear, short, escaped message within the agent's
//! request deadline, the token is in no output, the agent lives, and nothing is enrolled (or
//! the earlier enrollment stays byte for byte); afterwards enrollment with the real server
//! works and the first recovery key is escrowed, and nothing the device sent the server holds
//! a user's passphrase, the service secret, the recovery key or the device key.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Instant;

use common::escrow::*;
use common::hostile::*;
use common::*;

const FAST: &str = "checkin_interval_secs = 1\nretry_initial_secs = 1\nretry_max_secs = 2\n";
/// The agent's deadline for one request (`REQUEST_DEADLINE` in keyward-agent's escrow.rs).
const DEADLINE_SECS: f64 = 15.0;
/// What a CLI call may take beyond it (starting processes, the helper, a loaded machine).
const SLACK_SECS: f64 = 5.0;

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// What enrollment leaves behind: the agent's key and id, the helper's device id.
fn enrolled_state(inst: &Instance) -> [Option<Vec<u8>>; 3] {
    ["agent/device.key", "agent/device.json", "state/device_id"]
        .map(|f| std::fs::read(inst.path(f)).ok())
}

/// `keyward enroll URL` with a fresh real token; its output, how long it took, and the token.
fn enroll(inst: &Instance, srv: &Server, url: &str) -> (std::process::Output, f64, String) {
    let token = srv.token();
    let started = Instant::now();
    let out = inst.keyward(
        &["enroll", url, "--token-stdin"],
        format!("{token}\n").as_bytes(),
    );
    (out, started.elapsed().as_secs_f64(), token)
}

/// One hostile answer: refused with `expect` in the message, in time, nothing changed.
fn refused(inst: &Instance, srv: &Server, agent: &mut Agent, name: &str, url: &str, expect: &str) {
    let before = enrolled_state(inst);
    let cpu_before = cpu_ticks(agent.id());
    let (out, secs, token) = enroll(inst, srv, url);
    // Waiting is not spinning: a little CPU however long the server takes.
    let cpu = (cpu_ticks(agent.id()) - cpu_before) as f64 / 100.0;
    assert!(
        cpu < 1.0 + secs / 10.0,
        "{name}: {cpu}s of CPU in {secs:.1}s"
    );
    let err = stderr(&out);
    let context = format!(
        "{name}: {secs:.1}s, stderr: {err}\nagent:\n{}",
        agent_log(inst)
    );
    assert_ne!(code(&out), Some(0), "{context}");
    assert!(
        err.contains(expect),
        "{name}: expected {expect:?}\n{context}"
    );
    assert!(secs < DEADLINE_SECS + SLACK_SECS, "{context}");
    // Short and safe to print: no terminal escapes, not the server's whole answer.
    assert!(
        err.len() < 1024 && !err.contains('\u{1b}') && !err.contains('\0'),
        "{name}: {} bytes of stderr: {:?}",
        err.len(),
        &err[..err.len().min(300)]
    );
    for (what, text) in [
        ("stderr", err.as_str()),
        ("stdout", &String::from_utf8_lossy(&out.stdout)),
        ("agent log", &agent_log(inst)),
    ] {
        assert!(!text.contains(&token), "{name}: the token is in the {what}");
    }
    assert!(agent.alive(), "{context}");
    assert_eq!(
        enrolled_state(inst),
        before,
        "{name}: the enrollment changed\n{context}"
    );
}

#[test]
fn hostile_enrollment_answers_enroll_nothing() {
    let inst = Instance::prepare();
    let srv = Server::start(&inst);
    configure(&inst, &srv, FAST);
    let inst = inst.start();
    inst.bootstrap();
    let mut agent = Agent(inst.spawn_agent(&inst.path("agent.stderr")));
    wait_for(&inst, "the agent's socket", || {
        inst.path("agent/agent.sock").exists().then_some(())
    });
    assert_eq!(enrolled_state(&inst), [None, None, None]);

    // Transport: every answer broken the same way.
    for (mode, args, expect) in [
        ("malformed", &[][..], "malformed"),
        ("oversized", &[], "limit"),
        ("endless", &[], "limit"),
        ("redirect", &[], "(302)"),
        ("hang", &[], "timeout"),
        ("refuse-big", &[], "refused enrollment (403)"),
        ("trickle", &["--phase", "head"][..], "timeout"),
        ("trickle", &["--phase", "body"], "timeout"),
    ] {
        let hostile = Hostile::start(&inst, mode, args);
        let name = format!("{mode} {args:?}");
        refused(&inst, &srv, &mut agent, &name, &hostile.url, expect);
        let requests = hostile.requests();
        assert_eq!(requests, ["POST /v1/enroll"], "{name}");
        // A trickled reply is given up on at the deadline for the whole request, not later.
        // (The server notices at its next byte or two.)
        if mode == "trickle" {
            let gave_up = wait_for(&inst, "the hang-up", || {
                let g = hostile.gave_up_after();
                (!g.is_empty()).then_some(g)
            });
            assert!(
                gave_up.len() == 1 && gave_up[0] < DEADLINE_SECS + 3.0,
                "{name}: gave up after {gave_up:?}s"
            );
        }
    }

    // Answers in the right shape naming a device id no file or URL may hold.
    let hostile_ids = [
        ("empty id", String::new()),
        ("path id", "../../../etc/keyward".to_owned()),
        ("NUL id", "dev\0x".to_owned()),
        ("10 KiB id", "d".repeat(10 << 10)),
    ];
    for (name, id) in &hostile_ids {
        let file = inst.path("answer.json");
        let answer = serde_json::json!({ "device_id": id, "signature": "AAAA" });
        std::fs::write(&file, answer.to_string()).unwrap();
        let hostile = Hostile::start(&inst, "enroll", &["--reply", file.to_str().unwrap()]);
        refused(
            &inst,
            &srv,
            &mut agent,
            name,
            &hostile.url,
            "device id is not",
        );
    }

    // A 200 whose JSON is a 200 KiB string of terminal escapes where an object belongs (a
    // parser's error would quote it whole).
    let file = inst.path("answer.json");
    let big = "\u{1b}[2J\u{1b}]0;owned\u{7} ".repeat(10_000);
    std::fs::write(&file, serde_json::to_string(&big).unwrap()).unwrap();
    let hostile = Hostile::start(&inst, "enroll", &["--reply", file.to_str().unwrap()]);
    refused(
        &inst,
        &srv,
        &mut agent,
        "a string of escapes",
        &hostile.url,
        "malformed",
    );
    drop(hostile);

    // A real keyward-server, honest in every way, but not the one the config pins.
    let mut impostor = Server::offline(inst.path("impostor"), None);
    let out = impostor.cmd(&["init"]);
    assert!(out.status.success(), "{}", stderr(&out));
    impostor.resume();
    refused(
        &inst,
        &impostor,
        &mut agent,
        "another server's identity",
        &impostor.url(),
        "not signed by the pinned server key",
    );
    drop(impostor);

    // The real server, through a proxy that keeps its answer and every request the agent
    // sends from now on: enrolled.
    let recorded = inst.path("recorded.json");
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
    let (out, _, _) = enroll(&inst, &srv, &recorder.url);
    assert_eq!(
        code(&out),
        Some(0),
        "{}\n{}",
        stderr(&out),
        agent_log(&inst)
    );
    let answer = std::fs::read_to_string(inst.path("recorded.json.enroll")).unwrap();
    let device: serde_json::Value = serde_json::from_str(&answer).unwrap();
    let device = device["device_id"].as_str().unwrap().to_owned();
    let [_, json, helper_id] = enrolled_state(&inst);
    let json: serde_json::Value = serde_json::from_slice(&json.unwrap()).unwrap();
    assert_eq!(json["device_id"], device.as_str());
    assert_eq!(helper_id.unwrap(), device.as_bytes());

    // The same single-use token "accepted" twice: the server's genuine answer, replayed to a
    // second enrollment, and hostile ids, change nothing of the enrollment that works.
    let file = inst.path("answer.json");
    std::fs::write(&file, &answer).unwrap();
    let hostile = Hostile::start(&inst, "enroll", &["--reply", file.to_str().unwrap()]);
    refused(
        &inst,
        &srv,
        &mut agent,
        "genuine answer replayed",
        &hostile.url,
        "not signed by the pinned server key",
    );
    drop(hostile);
    let answer = serde_json::json!({ "device_id": "../../x", "signature": "AAAA" });
    std::fs::write(&file, answer.to_string()).unwrap();
    let hostile = Hostile::start(&inst, "enroll", &["--reply", file.to_str().unwrap()]);
    refused(
        &inst,
        &srv,
        &mut agent,
        "path id when enrolled",
        &hostile.url,
        "device id is not",
    );
    drop(hostile);

    // The enrollment works: the first recovery key is escrowed with the real server, and its
    // key opens the disk. Meanwhile a user gets a slot and the service secret rotates.
    let user_pass = "daemon's passphrase, never on the wire";
    let out = inst.keyward(
        &["grant", "data", "daemon", "--passphrase-stdin"],
        format!("{user_pass}\n").as_bytes(),
    );
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    let first_service = std::fs::read(inst.path("state/service/data")).unwrap();
    let out = inst.keyward(&["service", "rotate", "data"], b"");
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    let service = std::fs::read(inst.path("state/service/data")).unwrap();
    let (slot, _) = wait_for(&inst, "the first escrowed key", || settled_key(&inst));
    let key = srv.key_show(&device, "hostile enrollment drill");
    assert!(inst.opens(slot, key.as_bytes()));

    // What the server saw of the device (THREAT-MODEL: a compromised server cannot read users'
    // passwords or the service secret, they never leave the device): its public key, signed
    // requests, the key's age ciphertext — and no secret, in any encoding the agent uses.
    let wire_file = inst.path("recorded.json.wire");
    let wire = wait_for(&inst, "a check-in after the escrow", || {
        let w = std::fs::read(&wire_file).ok()?;
        let after = w.windows(7).position(|x| x == b"/escrow")?;
        contains(&w[after..], b"/checkin").then_some(w)
    });
    assert!(
        contains(&wire, b"\"ciphertext\""),
        "no escrow upload recorded"
    );
    let seed = std::fs::read_to_string(inst.path("agent/device.key")).unwrap();
    let b64 = |b: &[u8]| base64::Engine::encode(&base64::engine::general_purpose::STANDARD, b);
    let bare: String = key.chars().filter(char::is_ascii_alphanumeric).collect();
    for (what, secret) in [
        ("the user's passphrase", user_pass.as_bytes().to_vec()),
        ("the first service secret", first_service.clone()),
        ("the service secret", service.clone()),
        ("the recovery key", key.as_bytes().to_vec()),
        ("the recovery key without dashes", bare.into_bytes()),
        ("the device key", seed.trim().as_bytes().to_vec()),
    ] {
        for (form, bytes) in [
            ("as is", secret.clone()),
            ("base64", b64(&secret).into_bytes()),
        ] {
            assert!(
                !contains(&wire, &bytes),
                "{what} ({form}) went to the server"
            );
        }
    }
    drop(recorder);
    let log = agent_log(&inst);
    assert!(!log.contains(&key), "the agent logged the recovery key");
    let out = inst.keyward(&["audit", "--verify"], b"");
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    assert!(agent.alive(), "{log}");
}
