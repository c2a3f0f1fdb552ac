//! keyward against stock cryptsetup and systemd-cryptenroll on real LUKS2 images: every secret
//! keyward sets opens its slot in `cryptsetup open --test-passphrase`, and every slot another
//! tool made is listed as unmanaged and stays byte-for-byte untouched.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use keyward_core::invariants::check_state;
use keyward_core::store::GrantRequest;
use keyward_core::Authority;
use keyward_core::{
    recovery_key, HolderRole, Refusal, Role, SlotId, StoreError, Uid, UnlockStore, UserName,
};

fn alice() -> Role {
    Role::User {
        name: UserName::parse("alice").unwrap(),
        uid: Uid::new(1001).unwrap(),
    }
}

fn req(role: Role) -> GrantRequest {
    GrantRequest {
        role,
        pending: false,
    }
}

#[test]
fn grant_rekey_revoke_against_stock_tools() {
    let img = Image::luks2();
    let extra = img.add_key_with_cryptsetup("added by cryptsetup");
    let (sd_slot, sd_key) = img.enroll_systemd_recovery();
    let untouched = img.unmanaged_snapshot();
    let mut store = img.store();
    let check = |store: &mut keyward_luks::LuksStore| {
        assert_eq!(
            img.unmanaged_snapshot(),
            untouched,
            "an unmanaged slot or token changed"
        );
        assert_eq!(check_state(&store.state().unwrap()), vec![]);
    };

    // Everything another tool made is unmanaged.
    let state = store.state().unwrap();
    for h in state.holders() {
        assert_eq!(h.role, HolderRole::Unmanaged, "slot {}", h.slot);
    }
    assert_eq!(state.holders().len(), 3);

    // Bootstrap: the service slot, opened by the installer's passphrase.
    let service = keyward_sys::random::service_secret().unwrap();
    let svc = store
        .grant(
            &req(Role::Service),
            Authority::Holder(&secret(INSTALL_PASS)),
            &service,
        )
        .unwrap();
    assert!(img.opens(svc, service.expose()));
    assert!(!img.opens(svc, INSTALL_PASS.as_bytes()));
    check(&mut store);

    // Grant: alice's slot, opened by the service secret.
    let a1 = store
        .grant(
            &req(alice()),
            Authority::Service(&service),
            &secret("alice one"),
        )
        .unwrap();
    assert!(img.opens(a1, b"alice one"));
    check(&mut store);
    let dup = store.grant(
        &req(alice()),
        Authority::Service(&service),
        &secret("again"),
    );
    assert!(matches!(dup, Err(StoreError::Refused(Refusal::AlreadyHolds(s))) if s == a1));

    // Rekey: new passphrase opens, old does not, old slot gone.
    let a2 = store
        .rekey(a1, Authority::Service(&service), &secret("alice two"))
        .unwrap();
    assert_ne!(a1, a2);
    assert!(img.opens(a2, b"alice two"));
    assert!(!img.opens(a2, b"alice one"));
    assert!(!img.slot_ids().contains(&a1));
    check(&mut store);

    // Status names each holder.
    let holders = store.state().unwrap().holders();
    let role_of = |s: SlotId| holders.iter().find(|h| h.slot == s).unwrap().role.label();
    assert_eq!(role_of(a2), "user");
    assert_eq!(role_of(svc), "service");
    assert_eq!(role_of(extra), "unmanaged");
    assert_eq!(role_of(sd_slot), "unmanaged");

    // Keyward refuses to touch slots it does not manage.
    for s in [SlotId::new(0).unwrap(), extra, sd_slot] {
        assert!(matches!(
            store.revoke(s),
            Err(StoreError::Refused(Refusal::Unmanaged(_)))
        ));
        assert!(matches!(
            store.rekey(s, Authority::Service(&service), &secret("x")),
            Err(StoreError::Refused(Refusal::Unmanaged(_)))
        ));
    }

    // Revoke alice; her passphrase no longer opens anything.
    store.revoke(a2).unwrap();
    assert!(!img.slot_ids().contains(&a2));
    check(&mut store);

    // The systemd recovery key still works, and keyward reads it in systemd's format.
    let parsed = recovery_key::parse(sd_key.as_bytes()).unwrap();
    assert!(store.verify(sd_slot, &parsed).unwrap());
    assert!(img.opens(sd_slot, sd_key.as_bytes()));
}

#[test]
fn keyward_recovery_keys_open_like_systemd_ones() {
    let img = Image::luks2();
    let mut store = img.store();
    let key = keyward_sys::random::recovery_key().unwrap();
    let mut r = req(Role::Recovery);
    r.pending = true;
    let slot = store
        .grant(&r, Authority::Holder(&secret(INSTALL_PASS)), &key)
        .unwrap();
    // The printed form is the passphrase, exactly as systemd-cryptenroll enrolls its keys.
    assert!(img.opens(slot, key.expose()));
    // Typed without dashes, in capitals, it normalises back to the same passphrase.
    let mut typed = key.expose().to_vec();
    typed.retain(|b| *b != b'-');
    typed.make_ascii_uppercase();
    assert!(img.opens(slot, recovery_key::parse(&typed).unwrap().expose()));
    // A pending key is not a committed unlock path; the installer's slot still is.
    let state = store.state().unwrap();
    assert_eq!(
        keyward_core::invariants::committed_paths(&state),
        vec![SlotId::new(0).unwrap()]
    );
    // And its KDF is what DESIGN.md section 3 says for random keys.
    let meta = img.metadata();
    let kdf = &meta["keyslots"][slot.to_string()]["kdf"];
    assert_eq!(kdf["type"], "pbkdf2");
    assert_eq!(kdf["hash"], "sha512");
    assert_eq!(kdf["iterations"], 1000);
}

#[test]
fn passphrases_get_argon2id_by_default() {
    let img = Image::luks2();
    // Small argon2 parameters keep the test quick; the KDF type is what matters here.
    let policy = keyward_core::kdf::KdfPolicy {
        danger_fast_kdf: false,
        argon2_time_ms: Some(50),
        argon2_max_memory_kib: Some(32 * 1024),
        boot_budget_ms: None,
    };
    let mut store = keyward_luks::open(&img.path, &img.lock, policy).unwrap();
    let slot = store
        .grant(
            &req(alice()),
            Authority::Holder(&secret(INSTALL_PASS)),
            &secret("pw"),
        )
        .unwrap();
    let meta = img.metadata();
    assert_eq!(
        meta["keyslots"][slot.to_string()]["kdf"]["type"],
        "argon2id"
    );
    assert!(img.opens(slot, b"pw"));
}

#[test]
fn orphan_tokens_left_by_other_tools_are_cleaned() {
    let img = Image::luks2();
    let mut store = img.store();
    let slot = store
        .grant(
            &req(alice()),
            Authority::Holder(&secret(INSTALL_PASS)),
            &secret("pw"),
        )
        .unwrap();
    // Someone kills the slot behind keyward's back; libcryptsetup keeps the token.
    let out = std::process::Command::new("cryptsetup")
        .args(["luksKillSlot", "--batch-mode"])
        .arg(&img.path)
        .arg(slot.to_string())
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(!check_state(&store.state().unwrap()).is_empty());
    let cleaned = store.clean_orphan_tokens().unwrap();
    assert_eq!(cleaned.len(), 1);
    assert_eq!(check_state(&store.state().unwrap()), vec![]);
    assert!(img.metadata()["tokens"].as_object().unwrap().is_empty());
}

/// Which slot stock cryptsetup opens for `pass` when no slot is named (the boot path), judged by
/// `--test-passphrase` with `--debug`-free output: the slot cryptsetup -v reports.
fn opens_without_slot(img: &Image, pass: &[u8]) -> Option<u32> {
    let out = run_with_stdin(
        std::process::Command::new("cryptsetup")
            .args(["open", "--test-passphrase", "-v"])
            .arg(&img.path)
            .args(["--key-file", "-"]),
        pass,
    );
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    out.status.success().then(|| {
        text.split("Key slot ")
            .nth(1)
            .and_then(|t| t.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(u32::MAX)
    })
}

/// Issue 18 on a real header: `prefer` gives one user slot priority 2, which stock cryptsetup
/// tries first; `ignore_at_boot` gives the service slot priority 0: stock cryptsetup opens it
/// only when named (`--key-slot`), and grants by the service secret (which name it) still
/// work; it refuses a user slot; unmanaged slots keep theirs.
#[test]
fn boot_order_on_a_real_header() {
    let img = Image::luks2();
    let untouched = img.unmanaged_snapshot();
    let mut store = img.store();
    let service = keyward_sys::random::service_secret().unwrap();
    let svc = store
        .grant(
            &req(Role::Service),
            Authority::Holder(&secret(INSTALL_PASS)),
            &service,
        )
        .unwrap();
    let priority = |slot: SlotId| img.metadata()["keyslots"][slot.to_string()]["priority"].clone();
    assert!(
        priority(svc).is_null(),
        "the service slot keeps the default order"
    );
    assert_eq!(opens_without_slot(&img, service.expose()), Some(svc.get()));
    store.ignore_at_boot(svc).unwrap();
    assert_eq!(
        priority(svc),
        serde_json::json!(0),
        "service slot is ignore"
    );
    assert!(img.opens(svc, service.expose()), "--key-slot opens it");
    assert_eq!(
        opens_without_slot(&img, service.expose()),
        None,
        "never tried unnamed"
    );

    let mut users = Vec::new();
    for n in 0..3u32 {
        let role = Role::User {
            name: UserName::parse(&format!("u{n}")).unwrap(),
            uid: Uid::new(2000 + n).unwrap(),
        };
        users.push(
            store
                .grant(
                    &req(role),
                    Authority::Service(&service),
                    &secret(&format!("pass {n}")),
                )
                .unwrap(),
        );
    }
    assert!(
        store.ignore_at_boot(users[0]).is_err(),
        "only service slots"
    );
    assert_eq!(priority(users[0]), serde_json::Value::Null);
    store.prefer(users[1]).unwrap();
    assert_eq!(priority(users[1]), serde_json::json!(2));
    store.prefer(users[2]).unwrap();
    assert_eq!(priority(users[2]), serde_json::json!(2));
    assert_ne!(
        priority(users[1]),
        serde_json::json!(2),
        "only one is preferred"
    );
    for (n, &u) in users.iter().enumerate() {
        assert!(img.opens(u, format!("pass {n}").as_bytes()));
        assert_eq!(
            opens_without_slot(&img, format!("pass {n}").as_bytes()),
            Some(u.get()),
            "pass {n}"
        );
    }
    assert_eq!(
        img.unmanaged_snapshot(),
        untouched,
        "unmanaged slots untouched"
    );
    assert_eq!(check_state(&store.state().unwrap()), vec![]);
}
