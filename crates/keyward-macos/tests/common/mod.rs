//! Shared test setup: a store over the simulated Mac, an in-memory registry and keychain.
#![allow(dead_code, clippy::unwrap_used)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use keyward_core::Secret;
use keyward_macos::fake::FakeMac;
use keyward_macos::keychain::{Keychain, KeychainItem, MemoryKeychain};
use keyward_macos::names::ShortName;
use keyward_macos::registry::MemoryJournal;
use keyward_macos::{FileVaultStore, MacConfig};

pub type Store = FileVaultStore<FakeMac, MemoryJournal, MemoryKeychain>;

pub const SERVICE_PW: &str = "5e7f00aa11bb22cc33dd44ee55ff6677889900aabbccddeeff00112233445566";

pub fn secret(s: &str) -> Secret {
    Secret::copy_from(s.as_bytes())
}

pub fn name(s: &str) -> ShortName {
    ShortName::parse(s).unwrap()
}

fn fixed_clock() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_795_000_000)
}

pub fn store(mac: FakeMac) -> Store {
    FileVaultStore::new(
        mac,
        MemoryJournal::default(),
        MemoryKeychain::default(),
        MacConfig::new(name("_keyward")),
    )
    .with_clock(fixed_clock)
}

/// The typical Mac with `_keyward` created and holding a token granted by `admin`.
pub fn bootstrapped() -> Store {
    let mut s = store(FakeMac::typical());
    s.create_service_account(&secret(SERVICE_PW)).unwrap();
    s.grant_service_token(&name("admin"), &secret("admin-pw"))
        .unwrap();
    s
}

pub fn keychain(s: &mut Store, item: KeychainItem) -> Option<String> {
    s.keychain_mut()
        .read(item)
        .unwrap()
        .map(|k| String::from_utf8(k.expose().to_vec()).unwrap())
}

/// No recorded argv element contains any of `secrets`.
pub fn assert_no_secret_in_argv(s: &Store, secrets: &[&str]) {
    for call in &s.runner().calls {
        for arg in &call.argv {
            for secret in secrets {
                assert!(!arg.contains(secret), "{secret:?} in argv {:?}", call.argv);
            }
        }
    }
}
