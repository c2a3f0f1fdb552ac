//! Unit tests of the header cache: its bookkeeping under made-up keys, and the keys of a real
//! LUKS2 image (formatted and changed by stock cryptsetup).

use std::cell::Cell;
use std::io::{Seek, SeekFrom, Write};
use std::process::{Command, Stdio};

use super::*;

fn key(n: u8) -> Option<HeaderKey> {
    Some(HeaderKey {
        dev: 1,
        ino: 2,
        checksums: [n; 64],
    })
}

/// `cache.get_under(key, "data", /dev/x)`, counting calls of `compute` in `computed`.
fn get(
    cache: &HeaderCache<String>,
    key: Option<HeaderKey>,
    value: &str,
    computed: &Cell<u32>,
) -> String {
    cache.get_under(
        key,
        "data",
        Path::new("/dev/x"),
        || {
            computed.set(computed.get() + 1);
            value.to_owned()
        },
        |v| !v.starts_with("error"),
    )
}

#[test]
fn a_value_is_kept_while_its_key_is_the_same() {
    let cache = HeaderCache::new();
    let computed = Cell::new(0);
    assert_eq!(get(&cache, key(1), "first", &computed), "first");
    assert_eq!(get(&cache, key(1), "second", &computed), "first", "kept");
    assert_eq!(computed.get(), 1);
    assert_eq!(
        get(&cache, key(2), "third", &computed),
        "third",
        "a new header"
    );
    assert_eq!(get(&cache, key(2), "fourth", &computed), "third");
    assert_eq!(computed.get(), 2);
    let other = cache.get_under(
        key(2),
        "other",
        Path::new("/dev/x"),
        || "own".to_owned(),
        |_| true,
    );
    assert_eq!(other, "own", "each volume name has its own value");
}

#[test]
fn errors_and_unreadable_headers_are_computed_every_time() {
    let cache = HeaderCache::new();
    let computed = Cell::new(0);
    get(&cache, key(1), "error: busy", &computed);
    get(&cache, key(1), "error: busy", &computed);
    get(&cache, None, "fine", &computed);
    get(&cache, None, "fine", &computed);
    assert_eq!(computed.get(), 4);
}

fn cryptsetup(args: &[&str]) {
    let mut child = Command::new("cryptsetup")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cryptsetup (stock cryptsetup is needed): {e}"));
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"a passphrase")
        .expect("writing the passphrase");
    let out = child.wait_with_output().expect("cryptsetup");
    assert!(
        out.status.success(),
        "cryptsetup {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Any metadata write changes the key, so does another file with the same header; a damaged
/// header has none.
#[test]
fn a_real_headers_key_follows_its_content_and_its_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let image = dir.path().join("disk.img");
    let img = image.to_str().expect("a UTF-8 path");
    std::fs::File::create(&image)
        .and_then(|f| f.set_len(24 << 20))
        .expect("image");
    cryptsetup(&[
        "luksFormat",
        "--batch-mode",
        "--type",
        "luks2",
        "--pbkdf",
        "pbkdf2",
        "--pbkdf-force-iterations",
        "1000",
        img,
        "-",
    ]);
    let first = HeaderKey::of(&image).expect("a LUKS2 header's key");
    assert_eq!(
        HeaderKey::of(&image),
        Some(first),
        "the same header, the same key"
    );

    cryptsetup(&["config", "--label", "changed", img]);
    let relabelled = HeaderKey::of(&image).expect("key");
    assert_ne!(
        relabelled.checksums, first.checksums,
        "a metadata write changes the key"
    );
    assert_eq!((relabelled.dev, relabelled.ino), (first.dev, first.ino));

    let copy = dir.path().join("copy.img");
    std::fs::copy(&image, &copy).expect("copy");
    let copied = HeaderKey::of(&copy).expect("key");
    assert_eq!(copied.checksums, relabelled.checksums);
    assert_ne!(copied, relabelled, "another file, another key");

    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(&image)
        .expect("open");
    f.seek(SeekFrom::Start(4096 + 10))
        .and_then(|_| f.write_all(b"damage"))
        .expect("damaging");
    drop(f);
    assert_eq!(HeaderKey::of(&image), None, "a damaged header has no key");
}
