//! Bad input gives a clear typed error and changes nothing: wrong passphrase, a file that is
//! not LUKS, a LUKS1 image, a truncated or corrupt header, a full keyslot table, a full token
//! area, a planted lock-file symlink.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;

use common::*;
use keyward_core::store::GrantRequest;
use keyward_core::Authority;
use keyward_core::{Role, StoreError, Uid, UnlockStore, UserName};

fn grant_alice() -> GrantRequest {
    GrantRequest {
        role: Role::User {
            name: UserName::parse("alice").unwrap(),
            uid: Uid::new(1001).unwrap(),
        },
        pending: false,
    }
}

#[test]
fn wrong_passphrase_is_authentication_failed_and_changes_nothing() {
    let img = Image::luks2();
    let before = img.metadata();
    let mut store = img.store();
    let wrong = secret("not the passphrase");
    let r = store.grant(&grant_alice(), Authority::Holder(&wrong), &secret("pw"));
    assert!(matches!(r, Err(StoreError::AuthenticationFailed)), "{r:?}");
    assert_eq!(img.metadata(), before);
}

#[test]
fn non_luks_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    for (name, bytes) in [
        ("zeros", vec![0u8; 1 << 20]),
        ("empty", vec![]),
        ("text", b"hello\n".to_vec()),
    ] {
        let p = dir.path().join(name);
        std::fs::write(&p, &bytes).unwrap();
        let r = keyward_luks::open(&p, &dir.path().join("l"), FAST);
        assert!(matches!(r, Err(StoreError::NotLuks(_))), "{name}: {r:?}");
        assert_eq!(std::fs::read(&p).unwrap(), bytes);
    }
    let r = keyward_luks::open(&dir.path().join("missing"), &dir.path().join("l"), FAST);
    assert!(matches!(r, Err(StoreError::Backend(m)) if m.contains("cannot open")));
}

#[test]
fn luks1_is_refused_with_a_pointer_to_convert() {
    let img = Image::format(&["--type", "luks1"]);
    let bytes = img.file_bytes();
    let r = keyward_luks::open(&img.path, &img.lock, FAST);
    match r {
        Err(e @ StoreError::UnsupportedFormat { found: "LUKS1", .. }) => {
            assert!(e.to_string().contains("cryptsetup convert"));
        }
        other => panic!("{other:?}"),
    }
    assert!(img.file_bytes() == bytes);
}

#[test]
fn truncated_header_is_refused_and_not_written() {
    let img = Image::luks2();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&img.path)
        .unwrap();
    f.set_len(6000).unwrap();
    let bytes = img.file_bytes();
    let r = keyward_luks::open(&img.path, &img.lock, FAST);
    assert!(matches!(r, Err(StoreError::CorruptHeader(_))), "{r:?}");
    assert!(img.file_bytes() == bytes);
}

#[test]
fn corrupt_metadata_in_both_copies_is_refused_and_not_written() {
    let img = Image::luks2();
    let mut bytes = img.file_bytes();
    // Both binary headers are 4 KiB, each followed by its JSON area; scribble on both JSONs.
    for base in [0x1000usize, 0x4000 + 0x1000] {
        bytes[base..base + 64].fill(b'#');
    }
    std::fs::write(&img.path, &bytes).unwrap();
    let r = keyward_luks::open(&img.path, &img.lock, FAST);
    assert!(matches!(r, Err(StoreError::CorruptHeader(_))), "{r:?}");
    assert!(img.file_bytes() == bytes);
}

#[test]
fn full_keyslot_table_is_a_clean_error() {
    let img = Image::luks2();
    for i in 1..32 {
        img.add_key_with_cryptsetup(&format!("filler {i}"));
    }
    let before = img.metadata();
    let mut store = img.store();
    let r = store.grant(
        &grant_alice(),
        Authority::Holder(&secret(INSTALL_PASS)),
        &secret("pw"),
    );
    assert!(matches!(r, Err(StoreError::NoFreeSlot)), "{r:?}");
    assert_eq!(img.metadata(), before);
}

#[test]
fn full_token_area_is_a_clean_error() {
    let img = Image::luks2();
    for i in 0..32 {
        let out = run_with_stdin(
            Command::new("cryptsetup")
                .args(["token", "import"])
                .arg(&img.path)
                .args(["--json-file", "-"]),
            format!(r#"{{"type":"other-tool","keyslots":[],"n":{i}}}"#).as_bytes(),
        );
        assert!(
            out.status.success(),
            "token import {i}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let before = img.metadata();
    let mut store = img.store();
    let r = store.grant(
        &grant_alice(),
        Authority::Holder(&secret(INSTALL_PASS)),
        &secret("pw"),
    );
    assert!(matches!(r, Err(StoreError::TokenAreaFull)), "{r:?}");
    assert_eq!(img.metadata(), before);
}

#[test]
fn planted_lock_symlink_is_refused() {
    let img = Image::luks2();
    let target = img.dir.path().join("victim");
    std::fs::write(&target, b"precious").unwrap();
    std::os::unix::fs::symlink(&target, &img.lock).unwrap();
    let mut store = img.store();
    let r = store.grant(
        &grant_alice(),
        Authority::Holder(&secret(INSTALL_PASS)),
        &secret("pw"),
    );
    assert!(matches!(r, Err(StoreError::Backend(_))), "{r:?}");
    assert_eq!(std::fs::read(&target).unwrap(), b"precious");
}

#[test]
fn one_damaged_header_copy_is_refused_not_silently_repaired() {
    // libcryptsetup would restore the primary copy from the secondary on load; keyward refuses
    // and leaves the repair to an admin.
    let img = Image::luks2();
    let mut bytes = img.file_bytes();
    bytes[0x1000..0x1040].fill(b'#');
    std::fs::write(&img.path, &bytes).unwrap();
    let r = keyward_luks::open(&img.path, &img.lock, FAST);
    match r {
        Err(StoreError::CorruptHeader(m)) => assert!(m.contains("primary"), "{m}"),
        other => panic!("{other:?}"),
    }
    assert!(img.file_bytes() == bytes);
}
