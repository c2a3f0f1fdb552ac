//! The helper answers `status` from a cache while the LUKS2 header is unchanged (issue 18).
//! Every change to the header — keyward's own, stock cryptsetup's, a restored header backup,
//! damage — shows at the very next `status`. Holders' standings are kept too while the account
//! files are unchanged: counted with `strace -e trace=openat` on the helper, ten `status` calls
//! with three holders open /etc/shadow at most once, and a locked account shows at once.
//! A status request fsyncs nothing, a grant does.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Seek, SeekFrom, Write};
use std::process::Command;

use common::*;

/// The slots `keyward status --json` lists, and its error, if any.
fn slots(inst: &Instance) -> (Vec<u64>, Option<String>) {
    let out = inst.keyward(&["status", "data", "--json"], b"");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            stderr(&out)
        )
    });
    let vol = &v["volumes"][0];
    let mut s: Vec<u64> = vol["holders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["slot"].as_u64().unwrap())
        .collect();
    s.sort_unstable();
    (s, vol["error"].as_str().map(str::to_owned))
}

/// Stock cryptsetup adds a fast PBKDF2 slot at `slot`, opened by the installer's passphrase.
fn add_key(image: &str, slot: &str, key_file: &std::path::Path) {
    cryptsetup(
        &[
            "luksAddKey",
            "--batch-mode",
            "--pbkdf",
            "pbkdf2",
            "--pbkdf-force-iterations",
            "1000",
            "--key-slot",
            slot,
            image,
            key_file.to_str().unwrap(),
        ],
        INSTALL_PASS.as_bytes(),
    );
}

fn cryptsetup(args: &[&str], stdin: &[u8]) {
    let out = run(Command::new("cryptsetup").args(args), stdin);
    assert!(
        out.status.success(),
        "cryptsetup {args:?}: {}",
        stderr(&out)
    );
}

#[test]
fn every_header_change_shows_at_the_next_status() {
    let inst = Instance::prepare().start();
    inst.bootstrap();
    let image = inst.image.to_str().unwrap().to_owned();
    let (before, err) = slots(&inst);
    assert_eq!(err, None);
    assert_eq!(slots(&inst).0, before, "a repeated status is the same");
    let backup = inst.path("header.bak");
    cryptsetup(
        &[
            "luksHeaderBackup",
            &image,
            "--header-backup-file",
            backup.to_str().unwrap(),
        ],
        b"",
    );

    // Stock cryptsetup adds a slot behind keyward's back.
    let new_key = inst.path("new.key");
    std::fs::write(&new_key, "another passphrase").unwrap();
    add_key(&image, "7", &new_key);
    let (after_add, _) = slots(&inst);
    assert!(
        after_add.contains(&7),
        "a slot stock cryptsetup added shows at once: {after_add:?}"
    );

    // ... and removes it again.
    cryptsetup(&["luksKillSlot", "--batch-mode", &image, "7"], b"");
    assert_eq!(slots(&inst).0, before, "a removed slot is gone at once");

    // A header restored from a backup shows as the backup.
    add_key(&image, "6", &new_key);
    assert!(slots(&inst).0.contains(&6));
    cryptsetup(
        &[
            "luksHeaderRestore",
            "--batch-mode",
            &image,
            "--header-backup-file",
            backup.to_str().unwrap(),
        ],
        b"",
    );
    assert_eq!(
        slots(&inst).0,
        before,
        "the restored header is what status shows"
    );

    // Damage is never answered from the cache: a byte of the secondary copy's JSON changed.
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(&inst.image)
        .unwrap();
    f.seek(SeekFrom::Start(16384 + 4096 + 10)).unwrap();
    f.write_all(b"X").unwrap();
    drop(f);
    let (damaged, err) = slots(&inst);
    assert!(
        damaged.is_empty() && err.is_some_and(|e| e.contains("checksum")),
        "a damaged header is reported, not the cached state: {damaged:?}"
    );
}

const STANDINGS: &str = r#"
groupadd keyward-users
for u in alice bob carol; do useradd --no-create-home --groups keyward-users "$u"; done
printf 'alice:alice pass\nbob:bob pass\ncarol:carol pass\n' | chpasswd
start_helper
printf '%s\n' "$INSTALL_PASS" | kw bootstrap data --passphrase-stdin > /dev/null
for u in alice bob carol; do printf '%s pass\n' "$u" | kw grant data "$u" --passphrase-stdin > /dev/null; done
# opens FILE: how often the traced helper opened FILE so far
opens() { grep -c "openat(.*\"$1\"" strace.out || true; }
strace -f -qq -e trace=openat -o strace.out -p "$(cat helper.pid)" & echo $! > strace.pid
for _ in $(seq 100); do [ -s strace.out ] || kw status data > /dev/null; [ -s strace.out ] && break; sleep 0.05; done
sleep 0.5
opens /etc/shadow > shadow-before.out; opens /etc/passwd > passwd-before.out
for _ in $(seq 10); do kw status data > /dev/null; done
opens /etc/shadow > shadow-after.out; opens /etc/passwd > passwd-after.out
kill "$(cat strace.pid)"; wait "$(cat strace.pid)" || true
# syncs: fsync and fdatasync calls of the helper while tracing
strace -f -qq -e trace=fsync,fdatasync,syncfs,sync_file_range -o sync.out -p "$(cat helper.pid)" & echo $! > sync.pid
for _ in $(seq 100); do [ -e sync.out ] && break; sleep 0.05; done
sleep 0.5
# A grant first (its records are durable: the trace is attached), then reads.
useradd --no-create-home --groups keyward-users dave; printf 'dave:dave pass\n' | chpasswd
printf 'dave pass\n' | kw grant data dave --passphrase-stdin > /dev/null
sleep 0.2
grep -c 'sync' sync.out > syncs-grant.out || true
for _ in $(seq 10); do kw status data > /dev/null; done
sleep 0.2
grep -c 'sync' sync.out > syncs-all.out || true
kill "$(cat sync.pid)"; wait "$(cat sync.pid)" || true
strace -f -qq -e trace=openat -o strace.out -p "$(cat helper.pid)" & echo $! > strace.pid
for _ in $(seq 100); do [ -s strace.out ] || kw status data > /dev/null; [ -s strace.out ] && break; sleep 0.05; done
sleep 0.5
opens /etc/shadow > shadow-prelock.out
usermod -L bob
kw status data --json > status-locked.json
opens /etc/shadow > shadow-locked.out
kill "$(cat strace.pid)"; wait "$(cat strace.pid)" || true
stop_helper
"#;

/// Issue 18: `status` no longer reads NSS and /etc/shadow once per holder per request.
#[test]
fn standings_are_kept_while_the_account_files_are_unchanged() {
    let inst = Instance::prepare();
    run_namespace_script(&inst, &format!("{SHELL_PRELUDE}{STANDINGS}"));
    let read = |f: &str| script_output(&inst, f);
    let n = |f: &str| -> u64 {
        read(f)
            .parse()
            .unwrap_or_else(|e| panic!("{f}: {e}: {}", script_context(&inst)))
    };
    let shadow = n("shadow-after.out") - n("shadow-before.out");
    let passwd = n("passwd-after.out") - n("passwd-before.out");
    // Without the cache: 3 holders × 10 requests = 30 of each (at least).
    assert!(
        shadow <= 1,
        "/etc/shadow opened {shadow} times for 10 status calls"
    );
    assert!(
        passwd <= 1,
        "/etc/passwd opened {passwd} times for 10 status calls"
    );
    // 10 status calls: no fsync; a grant: its records are. (A verify stays a durable record:
    // `audit --verify` allows only reads and refusals past the durable head.)
    assert!(n("syncs-grant.out") > 0, "the grant's records are durable");
    assert_eq!(
        n("syncs-all.out") - n("syncs-grant.out"),
        0,
        "fsyncs for 10 status calls"
    );
    // usermod rewrites /etc/shadow: the next status looks again and sees bob locked.
    assert!(n("shadow-locked.out") > n("shadow-prelock.out"));
    let v: serde_json::Value = serde_json::from_str(&read("status-locked.json")).unwrap();
    let bob = v["volumes"][0]["holders"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["user"] == "bob")
        .cloned()
        .unwrap();
    assert_eq!(bob["standing"], "disabled", "{bob}");
}
