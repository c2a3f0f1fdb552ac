//! The helper answers `status` from a cache while the LUKS2 header is unchanged (issue 18).
//! Every change to the header — keyward's own, stock cryptsetup's, a restored header backup,
//! damage — shows at the very next `status`.
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
