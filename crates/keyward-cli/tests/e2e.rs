//! The CLI contract end to end against the real helper and a real LUKS2 image: bootstrap,
//! grant, status --json, verify, revoke, audit --verify, with the exit codes of DESIGN.md
//! section 8, every secret checked with stock cryptsetup.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;

#[test]
fn bootstrap_grant_status_revoke_audit() {
    let inst = Instance::prepare().start();

    // Wrong passphrase: exit 3, header unchanged.
    let before = inst.metadata();
    let out = inst.keyward(&["bootstrap", "data", "--passphrase-stdin"], b"not it\n");
    assert_eq!(code(&out), Some(3), "{}", stderr(&out));
    assert_eq!(inst.metadata(), before);

    // Bootstrap, then again: the second changes nothing and says so.
    inst.bootstrap();
    let again = inst.keyward(
        &["bootstrap", "data", "--passphrase-stdin"],
        format!("{INSTALL_PASS}\n").as_bytes(),
    );
    assert_eq!(code(&again), Some(0));
    assert!(String::from_utf8_lossy(&again.stdout).contains("nothing changed"));

    // The service secret is stored root-only and opens the service slot.
    let secret_file = inst.path("state/service/data");
    let meta = std::fs::metadata(&secret_file).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777,
        0o600
    );
    let service = std::fs::read(&secret_file).unwrap();

    // Grant `daemon` (uid 1, managed by the test's policy: `uid_min = 1`, `managed_users`) a
    // slot for its passphrase.
    let out = inst.keyward(
        &["grant", "data", "daemon", "--passphrase-stdin"],
        b"daemon's passphrase\n",
    );
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));

    // status --json names every holder.
    let out = inst.keyward(&["status", "data", "--json"], b"");
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let holders = v["volumes"][0]["holders"].as_array().unwrap();
    let find = |role: &str| holders.iter().find(|h| h["role"] == role).unwrap().clone();
    let user = find("user");
    assert_eq!(user["user"], "daemon");
    assert_eq!(user["uid"], 1);
    assert_eq!(user["state"], "active");
    assert_eq!(find("unmanaged")["slot"], 0);
    let svc = find("service");
    assert!(inst.opens(user["slot"].as_u64().unwrap(), b"daemon's passphrase"));
    assert!(inst.opens(svc["slot"].as_u64().unwrap(), &service));
    assert!(v["volumes"][0]["violations"].as_array().unwrap().is_empty());

    // Verify: the stored secret still opens its slot, and daemon is managed.
    let out = inst.keyward(&["verify", "--json"], b"");
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["volumes"][0]["service"], "ok");
    assert_eq!(v["volumes"][0]["users"][0]["user"], "daemon");
    assert_eq!(v["volumes"][0]["users"][0]["status"], "managed");
    assert_eq!(v["volumes"][0]["users"][0]["revoked"], false);

    // One rule for grant and verify (issue 14): a user the policy does not manage gets no slot
    // from an admin either — `sys` (uid 3, not listed), `nobody` (systemd's reserved range),
    // root — so verify never finds a holder keyward let in and would revoke.
    let slots_before = inst.metadata()["keyslots"].as_object().unwrap().len();
    for unmanaged in ["sys", "nobody", "root"] {
        let out = inst.keyward(
            &["grant", "data", unmanaged, "--passphrase-stdin"],
            b"some passphrase\n",
        );
        assert_eq!(code(&out), Some(4), "{unmanaged}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("not managed"),
            "{unmanaged}: {}",
            stderr(&out)
        );
    }
    assert_eq!(
        inst.metadata()["keyslots"].as_object().unwrap().len(),
        slots_before,
        "a refused grant adds no slot"
    );

    // Unknown user, unknown volume, a user with no slot.
    assert_eq!(
        code(&inst.keyward(
            &["grant", "data", "nosuchuser", "--passphrase-stdin"],
            b"x\n"
        )),
        Some(2)
    );
    assert_eq!(code(&inst.keyward(&["status", "other"], b"")), Some(2));
    assert_eq!(
        code(&inst.keyward(&["revoke", "data", "bin"], b"")),
        Some(1)
    );

    // Revoke.
    let out = inst.keyward(&["revoke", "data", "daemon"], b"");
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    assert!(!inst.opens(user["slot"].as_u64().unwrap(), b"daemon's passphrase"));

    // The audit chain verifies and names every request, including the refused bootstrap.
    let out = inst.keyward(&["audit", "--verify"], b"");
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    let lines = inst.audit_lines();
    assert!(lines
        .iter()
        .any(|l| l.contains("\"op\":\"bootstrap\"") && l.contains("AuthenticationFailed")));
    assert!(lines
        .iter()
        .any(|l| l.contains("\"op\":\"grant\"") && l.contains("\"user\":\"daemon\"")));
}

#[test]
fn audit_verify_names_the_first_bad_line() {
    let inst = Instance::prepare().start();
    for _ in 0..3 {
        assert_eq!(code(&inst.keyward(&["status"], b"")), Some(0));
    }
    // The last record a change: reads are written without fsync and may follow the durable
    // head (cutting them is not caught, by design); a change is what the head names.
    inst.bootstrap();
    let log = inst.path("log/audit.jsonl");
    let original = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = original.lines().collect();
    let write = |ls: &[String]| std::fs::write(&log, ls.join("\n") + "\n").unwrap();
    let owned: Vec<String> = lines.iter().map(|s| s.to_string()).collect();

    // Changed record 2 → the chain breaks at line 3.
    let mut changed = owned.clone();
    changed[1] = changed[1].replace("\"ok\"", "\"error:Failed: x\"");
    write(&changed);
    let out = inst.keyward(&["audit", "--verify"], b"");
    assert_eq!(code(&out), Some(1));
    assert!(stderr(&out).contains("line 3"), "{}", stderr(&out));

    // Removed record 2.
    let mut removed = owned.clone();
    removed.remove(1);
    write(&removed);
    assert!(stderr(&inst.keyward(&["audit", "--verify"], b"")).contains("line 2"));

    // Reordered records 2 and 3.
    let mut swapped = owned.clone();
    swapped.swap(1, 2);
    write(&swapped);
    assert!(stderr(&inst.keyward(&["audit", "--verify"], b"")).contains("line 2"));

    // The bootstrap (the last change) and what follows it removed: caught by the head kept in
    // the helper's state.
    let last_change = owned
        .iter()
        .rposition(|l| l.contains("\"op\":\"bootstrap\""))
        .unwrap();
    write(&owned[..last_change]);
    let out = inst.keyward(&["audit", "--verify"], b"");
    assert_eq!(code(&out), Some(1));
    assert!(stderr(&out).contains("removed"), "{}", stderr(&out));

    write(&owned);
    assert_eq!(code(&inst.keyward(&["audit", "--verify"], b"")), Some(0));
}

#[test]
fn helper_down_is_exit_5() {
    let inst = Instance::prepare();
    let out = inst.keyward(&["status"], b"");
    assert_eq!(code(&out), Some(5), "{}", stderr(&out));
}
