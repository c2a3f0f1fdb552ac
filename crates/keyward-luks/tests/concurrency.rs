//! Eight processes grant at once on one image: each ends in success or a clean typed error
//! (exit 6, busy), the header stays valid for stock cryptsetup, I1–I3 hold, and every granted
//! passphrase opens its slot.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::{Command, Stdio};

use common::*;
use keyward_core::invariants::check_state;
use keyward_core::{SlotId, UnlockStore};

#[test]
fn eight_processes_grant_at_once() {
    let img = Image::luks2();
    let untouched = img.unmanaged_snapshot();
    let tool = env!("CARGO_BIN_EXE_keyward-luks-tool");
    let children: Vec<_> = (0..8)
        .map(|i| {
            let mut child = Command::new(tool)
                .args(["--danger-fast-kdf", "--holder"])
                .arg(&img.path)
                .arg(&img.lock)
                .args(["grant-user", &format!("user{i}"), &(2000 + i).to_string()])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            use std::io::Write;
            let input = format!("{INSTALL_PASS}\npass {i}\n");
            child
                .stdin
                .take()
                .unwrap()
                .write_all(input.as_bytes())
                .unwrap();
            (i, child)
        })
        .collect();
    let mut granted = Vec::new();
    for (i, child) in children {
        let out = child.wait_with_output().unwrap();
        match out.status.code() {
            Some(0) => {
                let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
                let slot =
                    SlotId::new(u32::try_from(v["slot"].as_u64().unwrap()).unwrap()).unwrap();
                granted.push((i, slot));
            }
            Some(6) => {} // busy: a clean, typed refusal
            other => panic!(
                "child {i} exited {other:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            ),
        }
    }
    // With the per-volume lock, none should even need to give up.
    assert_eq!(granted.len(), 8, "all eight grants succeed");
    let mut store = img.store();
    assert_eq!(check_state(&store.state().unwrap()), vec![]);
    assert_eq!(img.unmanaged_snapshot(), untouched);
    for (i, slot) in &granted {
        assert!(img.opens(*slot, format!("pass {i}").as_bytes()), "user{i}");
    }
    let mut slots: Vec<_> = granted.iter().map(|(_, s)| *s).collect();
    slots.sort();
    slots.dedup();
    assert_eq!(slots.len(), 8, "every grant got its own slot");
}

#[test]
fn external_writer_during_keyward_writes_is_survived() {
    // cryptsetup does not take keyward's lock; libcryptsetup's own locking plus keyward's
    // retry on a moved header keep both writers' results intact.
    let img = Image::luks2();
    let tool = env!("CARGO_BIN_EXE_keyward-luks-tool");
    let mut keyward = Vec::new();
    for i in 0..4 {
        let mut child = Command::new(tool)
            .args(["--danger-fast-kdf", "--holder"])
            .arg(&img.path)
            .arg(&img.lock)
            .args(["grant-user", &format!("kw{i}"), &(3000 + i).to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(format!("{INSTALL_PASS}\nkw {i}\n").as_bytes())
            .unwrap();
        keyward.push((i, child));
    }
    // Stock cryptsetup itself gives up with "concurrent LUKS2 metadata update" when keyward
    // writes in between; an admin would run it again, and so does this test.
    let external: Vec<SlotId> = (0..3)
        .map(|i| {
            let key = format!("ext {i}");
            (0..50)
                .find_map(|_| img.try_add_key_with_cryptsetup(&key).ok())
                .expect("cryptsetup eventually succeeds")
        })
        .collect();
    for (i, child) in keyward {
        let out = child.wait_with_output().unwrap();
        let code = out.status.code();
        assert!(
            matches!(code, Some(0 | 6)),
            "kw{i}: {code:?} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        if code == Some(0) {
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            let slot = SlotId::new(u32::try_from(v["slot"].as_u64().unwrap()).unwrap()).unwrap();
            assert!(img.opens(slot, format!("kw {i}").as_bytes()));
        }
    }
    for (i, s) in external.iter().enumerate() {
        assert!(img.opens(*s, format!("ext {i}").as_bytes()));
    }
    assert_eq!(check_state(&img.store().state().unwrap()), vec![]);
}
