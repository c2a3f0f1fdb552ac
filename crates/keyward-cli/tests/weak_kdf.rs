//! The KDF floor (issue 16), end to end with the real helper and stock cryptsetup: a passphrase
//! slot whose key derivation is below the floor — another tool's or keyward's own — is a
//! `weak-kdf` finding that fails `keyward verify` and shows in `keyward status` (text and
//! `--json`), until it is gone; keyward's random-key slots (service, PBKDF2 × 1000) are not.
//! And `danger_fast_kdf`: this test build (`keyward-helper/failpoints` turns on `test-kdf`)
//! honours it and lowers the floor to match; the helper's start-up check that refuses it in a
//! shipped build refuses a config below the floor here. (That a shipped build refuses
//! `danger_fast_kdf` itself is `keyward_core::kdf`'s unit test and scripts/package-test's check
//! on the installed package: a test build cannot be a shipped one.)
#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;

use common::*;
use serde_json::Value;

const WEAK_PASS: &[u8] = b"another tool's passphrase";

/// An instance whose installer slot is argon2id above the floor, with the real floor
/// (`danger_fast_kdf = false`), bootstrapped: the service slot is keyward's PBKDF2 × 1000.
fn real_floor_instance() -> Instance {
    let inst = Instance::prepare();
    format_image_with(&inst.image, &ARGON2_ABOVE_FLOOR);
    set_table_line(&inst, "kdf", "danger_fast_kdf = false");
    let inst = inst.start();
    inst.bootstrap();
    inst
}

fn keyslots(inst: &Instance) -> Vec<u32> {
    let meta = inst.metadata();
    let mut v: Vec<u32> = meta["keyslots"]
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.parse().unwrap())
        .collect();
    v.sort_unstable();
    v
}

/// What another tool does: `cryptsetup luksAddKey --pbkdf pbkdf2 --pbkdf-force-iterations
/// 1000`, opened by the installer's passphrase. Returns the new slot.
fn add_weak_slot(inst: &Instance) -> u32 {
    let before = keyslots(inst);
    let key = inst.path("installer.key");
    std::fs::write(&key, INSTALL_PASS).unwrap();
    let out = run(
        Command::new("cryptsetup")
            .args(["luksAddKey", "--batch-mode", "--pbkdf", "pbkdf2"])
            .args(["--pbkdf-force-iterations", "1000", "--key-file"])
            .arg(&key)
            .arg(&inst.image)
            .arg("/dev/stdin"),
        WEAK_PASS,
    );
    assert!(out.status.success(), "luksAddKey: {}", stderr(&out));
    let added: Vec<u32> = keyslots(inst)
        .into_iter()
        .filter(|s| !before.contains(s))
        .collect();
    assert_eq!(added.len(), 1, "{added:?}");
    added[0]
}

fn kill_slot(inst: &Instance, slot: u32) {
    let out = run(
        Command::new("cryptsetup")
            .args(["luksKillSlot", "--batch-mode"])
            .arg(&inst.image)
            .arg(slot.to_string()),
        b"",
    );
    assert!(out.status.success(), "luksKillSlot: {}", stderr(&out));
}

/// `keyward CMD data --json`: exit code and the findings of volume data.
fn findings(inst: &Instance, cmd: &str) -> (Option<i32>, Vec<Value>) {
    let out = inst.keyward(&[cmd, "data", "--json"], b"");
    let json: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{cmd} --json: {e}: {}", stderr(&out)));
    let f = json["volumes"][0]["findings"].as_array().unwrap().clone();
    (code(&out), f)
}

fn text(inst: &Instance, cmd: &str) -> (Option<i32>, String) {
    let out = inst.keyward(&[cmd, "data"], b"");
    (
        code(&out),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn another_tools_weak_passphrase_slot_fails_verify_until_it_is_killed() {
    let inst = real_floor_instance();
    // Clean: the installer's argon2id slot meets the floor, the service slot is exempt.
    assert_eq!(findings(&inst, "verify"), (Some(0), vec![]));
    let service = inst.keyward(&["status", "data", "--json"], b"");
    let service = String::from_utf8_lossy(&service.stdout).replace([' ', '\n'], "");
    assert!(
        service.contains("\"role\":\"service\"") && service.contains("\"kdf\":\"pbkdf2-sha512\""),
        "{service}"
    );

    let weak = add_weak_slot(&inst);
    let (code, found) = findings(&inst, "verify");
    assert_eq!(code, Some(1), "verify must fail on a weak slot: {found:?}");
    assert_eq!(found.len(), 1, "{found:?}");
    let f = &found[0];
    assert_eq!(f["finding"], "weak-kdf");
    assert_eq!(f["slot"], weak);
    assert_eq!(f["role"], "unmanaged");
    assert_eq!(f["user"], Value::Null);
    assert_eq!(
        (&f["kdf"], &f["hash"], &f["iterations"]),
        (&"pbkdf2".into(), &"sha256".into(), &1000.into())
    );
    let line = format!(
        "data: weak-kdf: keyslot {weak} (unmanaged): pbkdf2-sha256, 1000 iterations: below the floor: pbkdf2-sha256 needs at least 600000 iterations (OWASP minimum)"
    );
    let (code, out) = text(&inst, "verify");
    assert_eq!(code, Some(1));
    assert!(out.contains(&line), "{out}");

    // status shows it, and still exits 0: it reports, verify judges.
    let (code, shown) = findings(&inst, "status");
    assert_eq!((code, shown), (Some(0), found));
    let (_, out) = text(&inst, "status");
    assert!(
        out.contains(&format!(
            "  weak-kdf: keyslot {weak} (unmanaged): pbkdf2-sha256"
        )),
        "{out}"
    );

    kill_slot(&inst, weak);
    assert_eq!(findings(&inst, "verify"), (Some(0), vec![]));
    assert_eq!(findings(&inst, "status"), (Some(0), vec![]));
}

#[test]
fn danger_fast_kdf_lowers_the_floor_in_a_test_build_and_only_there() {
    // The test suite's instance: danger_fast_kdf, PBKDF2 × 1000 for the installer's slot.
    let mut inst = Instance::prepare().start();
    assert!(
        inst.helper_stderr().contains("built with test-kdf"),
        "{}",
        inst.helper_stderr()
    );
    inst.bootstrap();
    let out = inst.keyward(
        &["grant", "data", "daemon", "--passphrase-stdin"],
        b"daemon's passphrase\n",
    );
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    let weak = add_weak_slot(&inst);
    // Lowered: what danger_fast_kdf makes (and cryptsetup's least) passes.
    assert_eq!(findings(&inst, "verify"), (Some(0), vec![]));

    // The same header under the real floor: keyward's own user slot (PBKDF2-SHA512 × 1000,
    // made by danger_fast_kdf), the installer's and the other tool's are all findings.
    inst.stop_helper();
    set_table_line(&inst, "kdf", "danger_fast_kdf = false");
    assert!(inst.try_start(), "{}", inst.helper_stderr());
    let (code, found) = findings(&inst, "verify");
    assert_eq!(code, Some(1));
    let by_slot: Vec<(u64, &str, Option<&str>, &str)> = found
        .iter()
        .map(|f| {
            (
                f["slot"].as_u64().unwrap(),
                f["role"].as_str().unwrap(),
                f["user"].as_str(),
                f["hash"].as_str().unwrap(),
            )
        })
        .collect();
    let daemon = inst.metadata()["tokens"]
        .as_object()
        .unwrap()
        .values()
        .find(|t| t["user"] == "daemon")
        .map(|t| t["keyslots"][0].as_str().unwrap().parse::<u64>().unwrap())
        .unwrap();
    let mut want = vec![
        (0, "unmanaged", None, "sha256"),
        (daemon, "user", Some("daemon"), "sha512"),
        (u64::from(weak), "unmanaged", None, "sha256"),
    ];
    want.sort_unstable();
    assert_eq!(by_slot, want);
    let (_, out) = text(&inst, "status");
    assert!(
        out.contains(&format!(
            "weak-kdf: keyslot {daemon} (user daemon): pbkdf2-sha512, 1000 iterations"
        )),
        "{out}"
    );
}

#[test]
fn the_helper_refuses_a_kdf_policy_below_its_own_floor() {
    // The start-up check that refuses danger_fast_kdf in a shipped build: here (a test build,
    // which may use danger_fast_kdf) it refuses an argon2 memory ceiling that would make every
    // passphrase slot keyward adds a finding.
    let mut inst = Instance::prepare();
    set_table_line(&inst, "kdf", "danger_fast_kdf = false");
    set_table_line(&inst, "kdf", "argon2_memory_kib = 4096");
    assert!(!inst.try_start(), "the helper started");
    let why = inst.helper_stderr();
    assert!(
        why.contains("argon2_memory_kib = 4096 is below the KDF floor"),
        "{why}"
    );
    set_table_line(&inst, "kdf", "argon2_memory_kib = 19456");
    assert!(inst.try_start(), "{}", inst.helper_stderr());
}
