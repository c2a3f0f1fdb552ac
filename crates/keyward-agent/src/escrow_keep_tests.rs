//! Keeping an enrollment survives a crash between any two of its writes: `load` then reads the
//! old enrollment whole or the new one whole, never a key of one with the id of the other.
#![allow(clippy::unwrap_used)]

use super::*;

fn seed(b: u8) -> [u8; 32] {
    [b; 32]
}

fn enrollment(id: &str, key: &[u8; 32]) -> Enrollment {
    Enrollment {
        url: "https://escrow.example".into(),
        device_id: id.into(),
        device_key: Some(b64().encode(SigningKey::from_bytes(key).verifying_key().to_bytes())),
    }
}

fn dir() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        d.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    d
}

fn loaded(dir: &Path) -> (String, [u8; 32]) {
    let (key, e) = load(dir).unwrap();
    (e.device_id, key.to_bytes())
}

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    safe_fs::write_atomic(dir, name, bytes, 0o600).unwrap();
}

#[test]
fn a_kept_enrollment_loads_and_leaves_no_next_key() {
    let d = dir();
    keep(d.path(), &seed(1), &enrollment("dev-1", &seed(1))).unwrap();
    assert_eq!(loaded(d.path()), ("dev-1".into(), seed(1)));
    assert!(!d.path().join(NEXT_KEY_FILE).exists());
}

#[test]
fn a_crash_after_any_step_leaves_one_whole_enrollment_old_or_new() {
    for steps in 0..=KEEP_STEPS {
        let d = dir();
        keep(d.path(), &seed(1), &enrollment("dev-1", &seed(1))).unwrap();
        keep_steps(d.path(), &seed(2), &enrollment("dev-2", &seed(2)), steps).unwrap();
        let want = if steps < 2 {
            ("dev-1".to_owned(), seed(1))
        } else {
            ("dev-2".to_owned(), seed(2))
        };
        assert_eq!(loaded(d.path()), want, "a crash after {steps} steps");
        // Whatever `load` finished is finished for good.
        assert_eq!(loaded(d.path()), want, "{steps} steps, loaded again");
        if steps >= 2 {
            assert!(!d.path().join(NEXT_KEY_FILE).exists(), "{steps} steps");
        }
    }
}

#[test]
fn a_key_device_json_does_not_name_is_refused_not_used() {
    let d = dir();
    keep(d.path(), &seed(1), &enrollment("dev-1", &seed(1))).unwrap();
    write(d.path(), KEY_FILE, b64().encode(seed(3)).as_bytes());
    let (_, why) = load(d.path()).err().unwrap();
    assert!(why.contains("enroll"), "{why}");
}

#[test]
fn an_enrollment_written_before_device_json_named_its_key_still_loads() {
    let d = dir();
    write(d.path(), KEY_FILE, b64().encode(seed(4)).as_bytes());
    write(
        d.path(),
        ID_FILE,
        br#"{"url":"https://escrow.example","device_id":"dev-old"}"#,
    );
    assert_eq!(loaded(d.path()), ("dev-old".into(), seed(4)));
}
