//! The audit log across restarts and crashes, and when its disk fills (issue 14): the real
//! helper is stopped cleanly and with SIGKILL, again and again, and `keyward audit --verify`
//! passes after each start; a last line a crash cut short is moved aside and the repair is
//! recorded in the chain; a head that lags the log is caught up, a log cut short is reported;
//! a state change the helper could not record is refused with nothing changed; and the agent's
//! repeated reads cannot flood the log.
#![allow(clippy::unwrap_used)]

mod common;

use std::os::unix::fs::MetadataExt;
use std::process::Command;

use common::*;

fn verify_chain(inst: &Instance) {
    let out = inst.keyward(&["audit", "--verify"], b"");
    assert_eq!(
        code(&out),
        Some(0),
        "audit --verify: {}{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        stderr(&out),
        inst.audit_lines().join("\n")
    );
    // Every record carries the time the log stamped on it as it appended it (RFC 3339, UTC).
    for line in inst.audit_lines() {
        let time = serde_json::from_str::<keyward_core::audit::Record>(&line)
            .unwrap()
            .time;
        let b = time.as_bytes();
        let stamped = b.len() == 20 && b[4] == b'-' && b[10] == b'T' && b[19] == b'Z';
        assert!(stamped, "a record without its time: {line}");
    }
}

fn status_ok(inst: &Instance) {
    let out = inst.keyward(&["status", "data"], b"");
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
}

/// SIGTERM and wait (a clean stop), as systemd stops a service.
fn terminate(inst: &mut Instance) {
    let mut child = inst.helper.take().unwrap();
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    child.wait().unwrap();
}

fn op_of(line: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    v["op"].as_str().unwrap().to_owned()
}

#[test]
fn restarts_clean_and_killed_keep_one_chain() {
    let mut inst = Instance::prepare().start();
    inst.bootstrap();
    status_ok(&inst);
    let first = inst.audit_lines()[0].clone();
    let mut count = inst.audit_lines().len();
    for round in 0..6 {
        if round % 2 == 0 {
            terminate(&mut inst);
        } else {
            inst.stop_helper();
        }
        assert!(inst.try_start(), "{}", inst.helper_stderr());
        status_ok(&inst);
        let out = inst.keyward(&["service", "rotate", "data"], b"");
        assert_eq!(code(&out), Some(0), "{}", stderr(&out));
        verify_chain(&inst);
        let lines = inst.audit_lines();
        assert_eq!(
            lines[0], first,
            "round {round}: the first record was overwritten"
        );
        assert!(lines.len() > count, "round {round}: nothing was appended");
        count = lines.len();
        assert!(
            !lines.iter().any(|l| op_of(l).starts_with("audit-")),
            "round {round}: a clean restart is no discontinuity: {lines:?}"
        );
    }
}

#[test]
fn a_torn_last_line_is_moved_aside_and_the_repair_recorded() {
    let mut inst = Instance::prepare().start();
    inst.bootstrap();
    status_ok(&inst);
    inst.stop_helper();
    let log = inst.path("log/audit.jsonl");
    let whole = std::fs::read(&log).unwrap();
    let torn = br#"{"seq":4,"time":"2026-12-04T03:00:00Z","prev":"ab"#;
    let mut bytes = whole.clone();
    bytes.extend_from_slice(torn);
    std::fs::write(&log, &bytes).unwrap();
    // Before the helper starts, the torn line is what verification sees.
    assert_ne!(code(&inst.keyward(&["audit", "--verify"], b"")), Some(0));

    assert!(inst.try_start(), "{}", inst.helper_stderr());
    status_ok(&inst);
    verify_chain(&inst);
    let after = std::fs::read(&log).unwrap();
    assert!(after.starts_with(&whole), "the whole records are kept");
    let lines = inst.audit_lines();
    let repair = lines
        .iter()
        .find(|l| op_of(l) == "audit-repair")
        .expect("the repair is in the chain");
    assert!(
        repair.contains(&format!("its {} bytes", torn.len())),
        "{repair}"
    );
    let saved: Vec<_> = std::fs::read_dir(inst.path("log"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().contains("audit.jsonl.torn-"))
        .collect();
    assert_eq!(saved.len(), 1, "{saved:?}");
    assert_eq!(std::fs::read(&saved[0]).unwrap(), torn);
    let m = std::fs::metadata(&saved[0]).unwrap();
    assert_eq!((m.uid(), m.mode() & 0o777), (0, 0o640));
}

#[test]
fn a_lagging_head_is_caught_up_and_a_cut_log_is_reported() {
    let mut inst = Instance::prepare().start();
    inst.bootstrap();
    status_ok(&inst);
    inst.stop_helper();
    // A crash after the record reached the disk and before the head did: the head names the
    // line before the last.
    let lines = inst.audit_lines();
    let n = lines.len();
    assert!(n >= 2);
    let head = serde_json::json!({
        "seq": n - 1,
        "hash": keyward_core::audit::line_hash(&lines[n - 2]),
    });
    std::fs::write(inst.path("state/audit.head"), head.to_string()).unwrap();
    assert!(inst.try_start(), "{}", inst.helper_stderr());
    verify_chain(&inst);
    assert!(
        !inst
            .audit_lines()
            .iter()
            .any(|l| op_of(l) == "audit-discontinuity"),
        "a lagging head is no discontinuity"
    );

    // A change cut from the end is: the chain records it. (Reads after the last change are
    // written without fsync and may vanish in a power loss: cutting them is no discontinuity,
    // as the next paragraph shows.)
    let out = inst.keyward(&["service", "rotate", "data"], b"");
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    status_ok(&inst);
    inst.stop_helper();
    let mut lines = inst.audit_lines();
    let is_read = |l: &String| {
        serde_json::from_str::<keyward_core::audit::Record>(l)
            .is_ok_and(|r| keyward_core::audit::may_follow_head(&r))
    };
    assert!(
        lines.last().is_some_and(is_read),
        "the log ends with a read"
    );
    let mut reads_only = lines.clone();
    reads_only.pop();
    std::fs::write(inst.path("log/audit.jsonl"), reads_only.join("\n") + "\n").unwrap();
    assert!(inst.try_start(), "{}", inst.helper_stderr());
    assert!(
        !inst
            .audit_lines()
            .iter()
            .any(|l| op_of(l) == "audit-discontinuity"),
        "an unsynced read lost is no discontinuity"
    );
    verify_chain(&inst);
    inst.stop_helper();
    lines = inst.audit_lines();
    while lines.last().is_some_and(is_read) {
        lines.pop();
    }
    lines.pop();
    std::fs::write(inst.path("log/audit.jsonl"), lines.join("\n") + "\n").unwrap();
    assert!(inst.try_start(), "{}", inst.helper_stderr());
    let lines = inst.audit_lines();
    let found = lines
        .iter()
        .find(|l| op_of(l) == "audit-discontinuity")
        .expect("the cut is recorded");
    assert!(found.contains("recorded head"), "{found}");
}

#[test]
fn a_change_that_cannot_be_recorded_is_refused() {
    let mut inst = Instance::prepare();
    // The log directory is a 2 MiB tmpfs in the helper's own mount namespace.
    let log_dir = log_dir_on_tmpfs(&mut inst, "2m");
    let inst = inst.start();
    inst.bootstrap();
    // Fill the tmpfs, then give back 256 KiB: room for records, less than keyward keeps.
    fill_log_dir_leaving(&inst, &log_dir, "256K");
    let service_slot = |inst: &Instance| {
        let out = inst.keyward(&["status", "data", "--json"], b"");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["volumes"][0]["holders"]
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h["role"] == "service")
            .map(|h| h["slot"].clone())
    };
    let before = (service_slot(&inst), inst.metadata());
    let out = inst.keyward(&["service", "rotate", "data"], b"");
    assert_eq!(code(&out), Some(4), "{}", stderr(&out));
    assert!(stderr(&out).contains("audit"), "{}", stderr(&out));
    assert_eq!(
        (service_slot(&inst), inst.metadata()),
        before,
        "nothing changed"
    );
    // Reads still work, and the refusal is on record (the log is seen from the helper's
    // mount namespace, where the tmpfs is).
    status_ok(&inst);
    let ns_keyward = |args: &[&str]| {
        run(
            Command::new("nsenter")
                .args(["-t", &inst.helper_pid().to_string(), "-m"])
                .arg(bin("keyward"))
                .arg("--config")
                .arg(&inst.config)
                .args(args),
            b"",
        )
    };
    let out = ns_keyward(&["audit", "--json"]);
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        text.contains("service-rotate") && text.contains("nothing was changed"),
        "{text}"
    );
    let verified = ns_keyward(&["audit", "--verify"]);
    assert_eq!(code(&verified), Some(0), "{}", stderr(&verified));

    in_helper_ns(&inst, &format!("rm {}", log_dir.join("fill").display()));
    let out = inst.keyward(&["service", "rotate", "data"], b"");
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    assert_ne!(service_slot(&inst), before.0);
    let verified = ns_keyward(&["audit", "--verify"]);
    assert_eq!(code(&verified), Some(0), "{}", stderr(&verified));
}

#[test]
fn the_agents_repeated_reads_are_folded() {
    let inst = Instance::prepare().start();
    inst.bootstrap();
    let before = inst.audit_lines().len();
    for _ in 0..30 {
        let out = inst.keyward_as(Some(NOBODY), &["status", "--json"], b"");
        assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    }
    let lines = inst.audit_lines();
    let reads = lines[before..]
        .iter()
        .filter(|l| op_of(l) == "status")
        .count();
    assert_eq!(reads, 1, "{:?}", &lines[before..]);
    // Root's reads are all recorded.
    for _ in 0..3 {
        status_ok(&inst);
    }
    assert_eq!(inst.audit_lines().len(), lines.len() + 3);
    verify_chain(&inst);
}

/// `keyward audit --verify` run while the helper writes changes and reads never sees a change
/// record without its head, nor half a line: it reads the log and the head under the log's
/// lock, which the helper holds while it writes a record and its head. (Before the lock an
/// admin verifying during a login could be told the chain was broken.)
#[test]
fn verifying_while_the_helper_writes_never_reports_a_false_break() {
    let inst = Instance::prepare().start();
    inst.bootstrap();
    let done = std::sync::atomic::AtomicBool::new(false);
    let (verified, failures) = std::thread::scope(|s| {
        s.spawn(|| {
            for _ in 0..12 {
                let out = inst.keyward(&["service", "rotate", "data"], b"");
                assert_eq!(code(&out), Some(0), "{}", stderr(&out));
                status_ok(&inst);
            }
            done.store(true, std::sync::atomic::Ordering::SeqCst);
        });
        let mut verified = 0;
        let mut failures = Vec::new();
        while !done.load(std::sync::atomic::Ordering::SeqCst) {
            let out = inst.keyward(&["audit", "--verify"], b"");
            verified += 1;
            if code(&out) != Some(0) {
                failures.push(stderr(&out));
            }
        }
        (verified, failures)
    });
    assert!(
        failures.is_empty(),
        "{} of {verified}: {failures:#?}",
        failures.len()
    );
    assert!(verified > 10, "only {verified} verifications ran alongside");
    verify_chain(&inst);
}

/// Anyone who may read the log (group `adm`) can take its lock: one who holds it does not
/// stall the helper, whose change goes ahead (unlocked) within a second, recorded and chained,
/// and whose next records do not wait for that reader again.
#[test]
fn a_reader_holding_the_logs_lock_does_not_stall_the_helper() {
    let inst = Instance::prepare().start();
    inst.bootstrap();
    let log = inst.path("log/audit.jsonl");
    let mut holder = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=4",
            "--clear-groups",
            "flock",
            "-s",
        ])
        .arg(&log)
        .args(["sleep", "60"])
        .spawn()
        .unwrap();
    // The holder has the lock once a non-blocking exclusive try fails.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while Command::new("flock")
        .args(["-n", "-x"])
        .arg(&log)
        .arg("true")
        .status()
        .unwrap()
        .success()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the holder never took the lock"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let out = inst.keyward(&["service", "rotate", "data"], b"");
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    // Having waited once, the helper does not wait for that reader again: ten more records
    // (reads) do not cost ten more seconds.
    let started = std::time::Instant::now();
    for _ in 0..10 {
        status_ok(&inst);
    }
    let took = started.elapsed();
    assert!(
        took < std::time::Duration::from_secs(6),
        "ten reads took {took:?}"
    );
    assert!(
        holder.try_wait().unwrap().is_none(),
        "the holder still holds it"
    );
    let _ = holder.kill();
    let _ = holder.wait();
    assert!(inst
        .audit_lines()
        .iter()
        .any(|l| op_of(l) == "service-rotate"));
    verify_chain(&inst);
}
