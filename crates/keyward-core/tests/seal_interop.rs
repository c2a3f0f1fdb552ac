//! `keyward_core::seal` against independent age implementations: what it writes must decrypt
//! with the `age` crate (what the escrow server runs) and with the `age` command (Debian's
//! package, the Go reference implementation), and fixed randomness must give the exact bytes of
//! the age test suite's X25519 vector (c2sp.org/CCTV/age, testdata/x25519).

use std::io::Write as _;
use std::process::{Command, Stdio};

use keyward_core::seal::{seal, Recipient, SealError, SealRandomness, MAX_PLAINTEXT};

/// The age test suite's X25519 identity (CCTV age/internal/testkit).
const IDENTITY: &str = "AGE-SECRET-KEY-1EGTZVFFV20835NWYV6270LXYVK2VKNX2MMDKWYKLMGR48UAWX40Q2P2LM0";
/// Another identity, the `age` crate's own test key: it must not open what `IDENTITY` can.
const OTHER_IDENTITY: &str =
    "AGE-SECRET-KEY-1GQ9778VQXMMJVE8SK7J6VT8UJ4HDQAJUVSFCWCM02D8GEWQ72PVQ2Y5J33";

/// Sizes around the base64 and chunk edges: empty, a recovery key, and the one-chunk limit.
const SIZES: &[usize] = &[
    0,
    1,
    16,
    32,
    48,
    55,
    64,
    1000,
    MAX_PLAINTEXT - 1,
    MAX_PLAINTEXT,
];

fn identity(s: &str) -> age::x25519::Identity {
    s.parse().expect("a valid age identity")
}

fn recipient_of(id: &age::x25519::Identity) -> Recipient {
    id.to_public()
        .to_string()
        .parse()
        .expect("age's own recipient string parses")
}

/// Deterministic, distinct randomness per test case (the shape is what is under test here).
fn random(seed: u8) -> SealRandomness {
    SealRandomness::fill_with(|b| {
        for (i, x) in b.iter_mut().enumerate() {
            *x = seed
                .wrapping_mul(101)
                .wrapping_add((i as u8).wrapping_mul(37))
                ^ 0x5a;
        }
        Ok::<_, std::convert::Infallible>(())
    })
    .expect("infallible")
}

fn plaintext(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

#[test]
fn the_age_crate_decrypts_every_size_and_a_wrong_identity_does_not() {
    let id = identity(IDENTITY);
    let other = identity(OTHER_IDENTITY);
    let to = recipient_of(&id);
    assert_eq!(to.to_string(), id.to_public().to_string());
    for (n, &len) in SIZES.iter().enumerate() {
        let pt = plaintext(len);
        let sealed = seal(&to, &pt, random(n as u8)).expect("sealed");
        let opened = age::decrypt(&id, &sealed).unwrap_or_else(|e| panic!("{len} bytes: {e}"));
        assert_eq!(opened, pt, "{len} bytes");
        assert!(
            matches!(
                age::decrypt(&other, &sealed),
                Err(age::DecryptError::NoMatchingKeys)
            ),
            "{len} bytes opened with the wrong identity"
        );
    }
}

#[test]
fn one_byte_over_one_chunk_is_refused() {
    let to = recipient_of(&identity(IDENTITY));
    let pt = plaintext(MAX_PLAINTEXT + 1);
    assert_eq!(
        seal(&to, &pt, random(1)),
        Err(SealError::TooLarge(MAX_PLAINTEXT + 1))
    );
}

#[test]
fn a_flipped_byte_anywhere_is_rejected_by_the_age_crate() {
    // The header MAC and the payload tag cover every byte: a seal that left one unauthenticated
    // would still decrypt here.
    let id = identity(IDENTITY);
    let sealed = seal(&recipient_of(&id), b"recovery", random(3)).expect("sealed");
    for i in 0..sealed.len() {
        let mut bad = sealed.clone();
        bad[i] ^= 0x01;
        assert!(
            age::decrypt(&id, &bad).is_err(),
            "byte {i} of {} changed and still decrypted",
            sealed.len()
        );
    }
}

/// c2sp.org/CCTV/age testdata/x25519 (expect: success), byte for byte. Its randomness is the
/// ChaCha20 keystream of key "TEST RANDOMNESS TEST RANDOMNESS!", zero nonce: the first 32
/// bytes are the ephemeral secret, the next 16 the payload nonce; the file key is
/// "YELLOW SUBMARINE" and the payload "age".
#[test]
fn fixed_randomness_gives_the_age_test_suites_x25519_file() {
    const EPHEMERAL: &str = "ac5d3f3706e55071d3a604204697b9091b35c6e687dd00da3ac379ac9f742c21";
    const NONCE: &str = "eecf62c7ce91b433274e68d4f2f9134c";
    const HEADER: &str = "age-encryption.org/v1\n\
        -> X25519 TEiF0ypqr+bpvcqXNyCVJpL7OuwPdVwPL7KQEbFDOCc\n\
        hjabGXwSLQ9c3S6Lw2i+S2Tu2fiwQHHslbBN6B41FLE\n\
        --- WyJp9F/9FOZh7gJdheq2WIJcwHgYc8NIVh3ddwhrcNg\n";
    const PAYLOAD: &str = "eecf62c7ce91b433274e68d4f2f9134cb74c5bfef7beaa52c8f0bc0e992c1e8331fb66";

    let mut bytes = b"YELLOW SUBMARINE".to_vec();
    bytes.extend(unhex(EPHEMERAL));
    bytes.extend(unhex(NONCE));
    let random = SealRandomness::fill_with(|b| {
        b.copy_from_slice(&bytes);
        Ok::<_, std::convert::Infallible>(())
    })
    .expect("infallible");
    let to = recipient_of(&identity(IDENTITY));
    let sealed = seal(&to, b"age", random).expect("sealed");

    let mut expected = HEADER.as_bytes().to_vec();
    expected.extend(unhex(PAYLOAD));
    assert_eq!(
        String::from_utf8_lossy(&sealed[..HEADER.len().min(sealed.len())]),
        HEADER
    );
    assert_eq!(sealed, expected);
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

/// The `age` command (Debian package `age`, installed by scripts/deps). Where every suite must
/// run (CI, `scripts/test`) a missing command fails the test; elsewhere it says SKIPPED.
fn age_command() -> Option<Command> {
    let found = Command::new("age")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if found {
        return Some(Command::new("age"));
    }
    let required = ["KEYWARD_REQUIRE_ALL", "CI"]
        .iter()
        .any(|v| std::env::var_os(v).is_some_and(|x| !x.is_empty()));
    assert!(
        !required,
        "the `age` command is missing (apt-get install age; scripts/deps installs it)"
    );
    let _ =
        std::io::stderr().write_all(b"SKIPPED: seal vs the age command: `age` is not installed\n");
    None
}

/// `age -d -i <identity file>` on a sealed file: its exit status and stdout.
fn age_decrypt(identity_line: &str, sealed: &[u8]) -> (bool, Vec<u8>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let id_file = dir.path().join("identity.txt");
    std::fs::write(&id_file, format!("{identity_line}\n")).expect("identity file");
    let sealed_file = dir.path().join("key.age");
    std::fs::write(&sealed_file, sealed).expect("sealed file");
    let Some(mut age) = age_command() else {
        return (false, Vec::new());
    };
    let out = age
        .arg("-d")
        .arg("-i")
        .arg(&id_file)
        .arg(&sealed_file)
        .output()
        .expect("run age");
    (out.status.success(), out.stdout)
}

#[test]
fn the_age_command_decrypts_what_seal_writes() {
    if age_command().is_none() {
        return;
    }
    let id = identity(IDENTITY);
    let to = recipient_of(&id);
    for (n, &len) in [0, 1, 55, 64, MAX_PLAINTEXT].iter().enumerate() {
        let pt = plaintext(len);
        let sealed = seal(&to, &pt, random(100 + n as u8)).expect("sealed");
        let (ok, out) = age_decrypt(IDENTITY, &sealed);
        assert!(ok, "age -d failed on {len} bytes");
        assert_eq!(out, pt, "{len} bytes");
        let (ok, out) = age_decrypt(OTHER_IDENTITY, &sealed);
        assert!(
            !ok && out.is_empty(),
            "{len} bytes opened with the wrong identity"
        );
    }
}
