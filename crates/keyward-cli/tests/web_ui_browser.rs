//! The admin web UI end to end in a real browser: the real helper, agent and server (set up as
//! `escrow_schedule.rs` does: enrolled, checking in every second, its first key escrowed), an
//! admin account, and `node --test tests/ui/admin.test.mjs` driving Debian's headless Chromium
//! through playwright-core. The browser signs in, searches, opens the device and shows its
//! recovery key; while the agent is held still, stock cryptsetup proves that key opens the
//! disk; then the browser finds the audit entry and watches the device rotate the seen key,
//! after which the key opens nothing (in single-person mode, `[reveal] require_approval =
//! false`). A second test runs `tests/ui/requests.test.mjs`: the two-person reveal with a help
//! desk person and an approver in two browsers, request → approve → reveal once, the key
//! checked against the one escrowed. Screenshots go to `target/ui-artifacts/<backend>/`.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::browser::{artifacts, browser_ready, ui_dir};
use common::escrow::*;
use common::http::device_with_escrow;
use common::*;

const FAST: &str = "checkin_interval_secs = 1\nretry_initial_secs = 1\nretry_max_secs = 2\n";
const ADMIN: &str = "night-shift";
const PASSWORD: &str = "a long and boring passphrase";
/// Made-up neighbours in every other state, so the list shows what an admin would see.
fn add_neighbours(srv: &Server) {
    let ago = |secs: u64| {
        humantime::format_rfc3339_nanos(std::time::SystemTime::now() - Duration::from_secs(secs))
            .to_string()
    };
    let report = |recovery: &str, escrow: &str| {
        format!(
            r#"{{"volumes":[{{"volume":"data","recovery":"{recovery}","escrow_id":{escrow},"rotated_at":null,"service":"ok","holders":2,"violations":0}}]}}"#
        )
    };
    let neighbours = [
        ("dev-3f9a0c51e7b24d6a8c0e1f2a", None),
        (
            "dev-b82e4d17c0a94f3e9d5a6b7c",
            Some((
                ago(5 * 3600),
                report("escrowed", "\"esc-0a1b2c3d4e5f60718293a4b5\""),
            )),
        ),
        (
            "dev-51c7e9a2d4f6480b1c3e5a7d",
            Some((ago(40), report("pending", "null"))),
        ),
        (
            "dev-e04b6d8f1a3c4e5b7d9f0a2c",
            Some((ago(75), report("standalone", "null"))),
        ),
    ];
    for (id, checkin) in neighbours {
        srv.query(&format!(
            "INSERT INTO devices (id, key, created) VALUES ('{id}', 'x', '{}')",
            ago(86_400)
        ));
        if let Some((at, report)) = checkin {
            srv.query(&format!(
                "INSERT INTO checkins (device, at, report) VALUES ('{id}', '{at}', '{report}')"
            ));
        }
    }
}

fn signal(pid: u32, sig: &str) {
    let out = Command::new("kill")
        .args([sig, &pid.to_string()])
        .output()
        .unwrap();
    assert!(out.status.success(), "kill {sig}: {}", stderr(&out));
}

#[test]
fn an_admin_reveals_a_key_in_the_browser_and_the_device_rotates_it() {
    if !browser_ready() {
        return;
    }
    for backend in backends() {
        in_the_browser(&backend);
    }
}

fn in_the_browser(backend: &Backend) {
    let inst = Instance::prepare();
    let mut srv = Server::start_on(&inst, backend);
    srv.reconfigure("[reveal]\nrequire_approval = false\n");
    configure(&inst, &srv, FAST);
    let inst = inst.start();
    inst.bootstrap();
    let (mut agent, device) = enroll_agent(&inst, &srv);
    let (slot1, esc1) = wait_for(&inst, "the first escrowed key", || settled_key(&inst));
    wait_for(&inst, "its check-in", || {
        (srv.devices()[0]["volumes"][0]["escrow_id"] == esc1.as_str()).then_some(())
    });
    srv.add_admin(ADMIN, PASSWORD);
    add_neighbours(&srv);

    // The device holds still until the shown key has been tried on the disk.
    signal(agent.id(), "-STOP");
    let handoff = inst.path("handoff");
    std::fs::create_dir(&handoff).unwrap();
    let shots = artifacts(backend);
    let mut node = Command::new("node")
        .args(["--test", "--test-reporter=spec", "admin.test.mjs"])
        .current_dir(ui_dir())
        .env("KEYWARD_UI_URL", srv.url())
        .env("KEYWARD_UI_ADMIN", ADMIN)
        .env("KEYWARD_UI_PASSWORD", PASSWORD)
        .env("KEYWARD_UI_DEVICE", &device)
        .env("KEYWARD_UI_HANDOFF", &handoff)
        .env("KEYWARD_UI_ARTIFACTS", &shots)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();

    let key_file = handoff.join("key.txt");
    let deadline = Instant::now() + Duration::from_secs(120);
    while !key_file.exists() {
        if node.try_wait().unwrap().is_some() || Instant::now() > deadline {
            signal(agent.id(), "-CONT");
            let _ = node.kill();
            let out = node.wait_with_output().unwrap();
            panic!(
                "the browser test showed no key:\n{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                stderr(&out)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let key = std::fs::read_to_string(&key_file).unwrap();
    let shown = std::fs::read_to_string(handoff.join("escrow.txt")).unwrap();
    assert_eq!(shown, esc1);
    // The key the browser showed opens the disk (stock cryptsetup), before the rotation.
    assert_eq!(settled_key(&inst), Some((slot1, esc1.clone())));
    assert!(
        inst.opens(slot1, key.as_bytes()),
        "the shown key opens the disk"
    );
    signal(agent.id(), "-CONT");
    std::fs::write(handoff.join("continue"), b"").unwrap();

    let out = node.wait_with_output().unwrap();
    let report = format!("{}\n{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
    assert!(out.status.success(), "browser test failed:\n{report}");
    assert!(report.contains("pass 1"), "{report}");

    // After the rotation the key opens nothing; the server audited the reveal.
    let (slot2, esc2) = wait_for(&inst, "the rotation after use", || {
        settled_key(&inst).filter(|(_, e)| *e != esc1)
    });
    assert!(!inst.opens(slot1, key.as_bytes()) && !inst.opens(slot2, key.as_bytes()));
    let audit = String::from_utf8(srv.cmd(&["audit"]).stdout).unwrap();
    assert!(
        audit.contains(&format!("key-show by \"web:{ADMIN}\"")),
        "{audit}"
    );
    let reasons = srv.query("SELECT reason FROM audit WHERE action = 'key-show'");
    assert!(reasons.contains("ticket 4711") && reasons.contains(&format!("[{esc1}]")));
    assert!(!reasons.contains(&esc2), "{reasons}");
    for page in [
        "01-login",
        "02-devices",
        "03-search",
        "04-device",
        "05-revealed-key",
        "06-audit",
        "07-device-rotated",
    ] {
        assert!(shots.join(format!("{page}.png")).exists(), "{page}");
    }
    let _ = agent.kill();
    let _ = agent.wait();
}

#[test]
fn a_helpdesk_request_is_approved_and_revealed_in_the_browser() {
    if !browser_ready() {
        return;
    }
    for backend in backends() {
        two_people_in_the_browser(&backend);
    }
}

fn two_people_in_the_browser(backend: &Backend) {
    const SECRET: &str = "gkbvdfne-lrtcuhfj-bnkrhdtl-vuiknbbe-ecjhrlhg-fikhgcrl-cvvhtrhb-tnnbljgb";
    const DESK: (&str, &str) = ("hannah", "the help desk's long passphrase");
    const BOSS: (&str, &str) = ("arthur", "the approver's long passphrase");
    let inst = Instance::prepare();
    let srv = Server::start_on(&inst, backend);
    let (device, escrow) = device_with_escrow(&srv, SECRET);
    srv.add_account(DESK.0, DESK.1, "helpdesk");
    srv.add_account(BOSS.0, BOSS.1, "approver");
    let handoff = inst.path("handoff");
    std::fs::create_dir(&handoff).unwrap();
    let out = Command::new("node")
        .args(["--test", "--test-reporter=spec", "requests.test.mjs"])
        .current_dir(ui_dir())
        .env("KEYWARD_UI_URL", srv.url())
        .env("KEYWARD_UI_DEVICE", &device)
        .env("KEYWARD_UI_HELPDESK", DESK.0)
        .env("KEYWARD_UI_HELPDESK_PASSWORD", DESK.1)
        .env("KEYWARD_UI_APPROVER", BOSS.0)
        .env("KEYWARD_UI_APPROVER_PASSWORD", BOSS.1)
        .env("KEYWARD_UI_HANDOFF", &handoff)
        .env("KEYWARD_UI_ARTIFACTS", artifacts(backend))
        .output()
        .unwrap();
    let report = format!("{}\n{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
    assert!(out.status.success(), "browser test failed:\n{report}");
    assert!(report.contains("pass 1"), "{report}");

    // The browser showed the escrowed key, under the request the server stored as revealed.
    let key = std::fs::read_to_string(handoff.join("key.txt")).unwrap();
    assert_eq!(key, SECRET);
    let id = std::fs::read_to_string(handoff.join("request.txt")).unwrap();
    let row = srv.query(&format!(
        "SELECT state, requester, decided_by FROM reveal_requests WHERE id = '{id}'"
    ));
    assert_eq!(row.trim(), "revealed|web:hannah|web:arthur", "{backend:?}");
    let shown = srv.query("SELECT reason FROM audit WHERE action = 'key-show'");
    assert!(
        shown.contains(&format!("[{escrow}] [request {id}]")),
        "{shown}"
    );
    assert_eq!(
        srv.query("SELECT rotate_after_use FROM escrows").trim(),
        "1"
    );
}
