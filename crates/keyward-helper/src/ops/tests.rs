//! The operations run against the LUKS2 vault over keyward-core's in-memory keyslot store and
//! a temporary state directory: no root, no image, no cryptsetup. Crash points (the store's
//! failpoints), refusals, and the invariants' refusals, each checked by what it leaves behind.
//! The protocols' own decisions (settling forward or back, expiry, the start-up pass) are
//! tested in keyward-core (`secret_orderings`, `tests/secret_orderings_props.rs`); these
//! tests check them through the helper's state files and its errors.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use keyward_core::config::Config;
use keyward_core::fake::MemoryBackend;
use keyward_core::ipc::{ErrorCode, Reply};
use keyward_core::orderings::SlotStore;
use keyward_core::token::{Role, TokenState};
use keyward_core::{recovery_key, HolderRole, Secret, SlotId, Uid, UserName};

use super::recovery::{check_confirm, commit_pending, pending_or_new};
use super::{bootstrap_on, grant_on, revoke_on, service_rotate_on};
use crate::error::OpError;
use crate::pending_key;
use crate::vault::luks::host::LuksHost;
use crate::vault::luks::LuksVault;
use crate::vault::{ServiceStanding, Vault};
use keyward_core::secret_orderings::Host;

type Store = SlotStore<MemoryBackend>;

struct Fixture {
    _dir: tempfile::TempDir,
    c: Config,
}

/// A config naming one volume "root", its state in a fresh temporary directory.
fn fixture_with(policy: &str) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "state_dir = \"{}\"\n[[volume]]\nname = \"root\"\ndevice = \"/dev/null\"\n[policy]\npending_max_age_secs = 315360000\n{policy}",
        dir.path().display()
    );
    let c = Config::parse(&text).unwrap();
    let service = c.state_dir.join("service");
    std::fs::create_dir(&service).unwrap();
    std::fs::set_permissions(
        &service,
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    Fixture { _dir: dir, c }
}

fn fixture() -> Fixture {
    fixture_with("")
}

fn installer() -> Secret {
    Secret::copy_from(b"installer passphrase")
}

/// A volume as an installer leaves it: one unmanaged slot (0) for the installer's passphrase.
fn volume(f: &Fixture) -> LuksVault<'_, Store> {
    LuksVault::new(
        &f.c,
        &f.c.volumes[0],
        SlotStore::new(MemoryBackend::formatted(&installer())),
    )
}

fn bootstrapped(f: &Fixture) -> LuksVault<'_, Store> {
    let mut v = volume(f);
    bootstrap_on(&mut v, None, &installer()).unwrap();
    v
}

fn user(name: &str) -> UserName {
    UserName::parse(name).unwrap()
}

fn code(r: Result<impl std::fmt::Debug, OpError>) -> ErrorCode {
    r.expect_err("the operation should fail").code()
}

fn service_slots(v: &mut LuksVault<'_, Store>) -> Vec<(SlotId, TokenState)> {
    let state = v.state().unwrap();
    state
        .keyward_tokens()
        .filter(|(_, t)| t.role == Role::Service)
        .filter_map(|(_, t)| t.keyslot.map(|s| (s, t.state)))
        .collect()
}

fn recovery_slots(v: &mut LuksVault<'_, Store>, state: TokenState) -> Vec<SlotId> {
    let s = v.state().unwrap();
    s.keyward_tokens()
        .filter(|(_, t)| t.role == Role::Recovery && t.state == state)
        .filter_map(|(_, t)| t.keyslot)
        .collect()
}

/// Grant `name` a slot for `password` through the service secret, as a login does.
fn grant_user(v: &mut LuksVault<'_, Store>, name: &str, password: &[u8]) -> SlotId {
    let uid = Uid::new(1000).unwrap();
    let (_, service) = v.working().unwrap();
    v.grant_user(&user(name), uid, &service, &Secret::copy_from(password))
        .unwrap()
}

fn stored_secret(f: &Fixture) -> Option<Secret> {
    LuksHost::new(&f.c, &f.c.volumes[0].name)
        .service_secret()
        .unwrap()
}

fn stored_next(f: &Fixture) -> Option<Secret> {
    LuksHost::new(&f.c, &f.c.volumes[0].name)
        .next_service_secret()
        .unwrap()
}

#[test]
fn bootstrap_makes_a_service_slot_its_stored_secret_opens_and_is_idempotent() {
    let f = fixture();
    let mut v = volume(&f);
    let first = bootstrap_on(&mut v, None, &installer()).unwrap();
    let Reply::Bootstrapped {
        slot,
        created: true,
    } = first
    else {
        panic!("{first:?}")
    };
    let secret = stored_secret(&f).expect("the service secret is stored");
    assert!(stored_next(&f).is_none());
    assert!(v.opens(SlotId::new(slot).unwrap(), &secret).unwrap());
    let again = bootstrap_on(&mut v, None, &installer()).unwrap();
    assert_eq!(
        again,
        Reply::Bootstrapped {
            slot,
            created: false
        }
    );
}

#[test]
fn bootstrap_with_a_wrong_passphrase_is_exit_3_and_leaves_no_secret_behind() {
    let f = fixture();
    let mut v = volume(&f);
    let wrong = Secret::copy_from(b"not the passphrase");
    let r = bootstrap_on(&mut v, None, &wrong);
    assert_eq!(code(r), ErrorCode::AuthenticationFailed);
    assert!(stored_secret(&f).is_none());
    assert!(stored_next(&f).is_none());
    assert!(service_slots(&mut v).is_empty());
}

#[test]
fn bootstrap_of_a_luks2_volume_naming_a_holder_is_a_usage_error_and_changes_nothing() {
    let f = fixture();
    let mut v = volume(&f);
    let r = bootstrap_on(&mut v, Some(&user("alice")), &installer());
    assert_eq!(code(r), ErrorCode::Usage);
    assert!(service_slots(&mut v).is_empty());
}

#[test]
fn bootstrap_refuses_to_replace_a_service_slot_no_stored_secret_opens() {
    let f = fixture();
    let mut v = bootstrapped(&f);
    LuksHost::new(&f.c, &f.c.volumes[0].name)
        .forget_service_secret()
        .unwrap();
    let r = bootstrap_on(&mut v, None, &installer());
    assert_eq!(code(r), ErrorCode::Refused);
    assert_eq!(service_slots(&mut v).len(), 1, "the drifted slot stays");
}

#[test]
fn a_crash_after_the_new_secret_is_written_but_before_its_slot_leaves_the_old_pair() {
    let f = fixture();
    let mut v = volume(&f);
    v.store.backend_mut().fail_at("grant.slot-added");
    assert!(bootstrap_on(&mut v, None, &installer()).is_err());
    // The failed grant dropped `.next`; settling finds no service slot.
    assert!(stored_next(&f).is_none());
    assert!(matches!(v.service().unwrap(), ServiceStanding::Missing));
    let again = bootstrap_on(&mut v, None, &installer()).unwrap();
    assert!(matches!(again, Reply::Bootstrapped { created: true, .. }));
}

#[test]
fn grant_before_bootstrap_says_to_bootstrap() {
    let f = fixture();
    let mut v = volume(&f);
    let r = v.working();
    let e = r.expect_err("no service slot");
    assert_eq!(e.code(), ErrorCode::Failed);
    assert!(e.to_string().contains("keyward bootstrap root"), "{e}");
}

#[test]
fn a_granted_slot_opens_with_the_users_password_only() {
    let f = fixture();
    let mut v = bootstrapped(&f);
    let slot = grant_user(&mut v, "alice", b"alice's password");
    assert!(v
        .opens(slot, &Secret::copy_from(b"alice's password"))
        .unwrap());
    assert!(!v.opens(slot, &Secret::copy_from(b"a guess")).unwrap());
}

#[test]
fn grant_of_a_user_nss_does_not_know_is_a_usage_error() {
    let f = fixture();
    let mut v = bootstrapped(&f);
    let r = grant_on(
        &mut v,
        &user("no-such-user-kw17"),
        &Secret::copy_from(b"pw"),
    );
    assert_eq!(code(r), ErrorCode::Usage);
}

#[test]
fn revoke_removes_the_users_slot_and_only_theirs() {
    let f = fixture();
    let mut v = bootstrapped(&f);
    let alice = grant_user(&mut v, "alice", b"a");
    let bob = grant_user(&mut v, "bob", b"b");
    let r = revoke_on(&mut v, &user("alice")).unwrap();
    assert_eq!(r, Reply::Revoked { slot: alice.get() });
    let state = v.state().unwrap();
    assert!(state.slot(alice).is_none());
    assert!(state.slot(bob).is_some());
}

#[test]
fn revoke_of_a_user_without_a_slot_fails_and_changes_nothing() {
    let f = fixture();
    let mut v = bootstrapped(&f);
    let before = v.state().unwrap().holders().len();
    let r = revoke_on(&mut v, &user("carol"));
    let e = r.expect_err("no slot");
    assert_eq!(e.code(), ErrorCode::Failed);
    assert!(
        e.to_string().contains("holds no keyward slot on root"),
        "{e}"
    );
    assert_eq!(v.state().unwrap().holders().len(), before);
}

#[test]
fn an_unmanaged_slot_is_never_keywards_to_revoke() {
    let f = fixture();
    let mut v = bootstrapped(&f);
    let r = v.revoke_user(&user("alice"), SlotId::new(0).unwrap());
    assert_eq!(code(r), ErrorCode::Refused);
    assert!(v.state().unwrap().slot(SlotId::new(0).unwrap()).is_some());
}

#[test]
fn service_rotation_moves_to_a_new_slot_and_secret_and_drops_the_old() {
    let f = fixture();
    let mut v = bootstrapped(&f);
    let (old, old_secret) = v.working().unwrap();
    let Reply::ServiceRotated { old: o, new } = service_rotate_on(&mut v).unwrap() else {
        panic!()
    };
    assert_eq!(o, old.get());
    let new = SlotId::new(new).unwrap();
    let current = stored_secret(&f).unwrap();
    assert!(!current.ct_eq(&old_secret));
    assert!(v.opens(new, &current).unwrap());
    assert_eq!(service_slots(&mut v), vec![(new, TokenState::Active)]);
    assert!(stored_next(&f).is_none());
}

#[test]
fn a_rotation_cut_at_the_new_slot_settles_to_a_working_pair() {
    let f = fixture();
    let mut v = bootstrapped(&f);
    v.store.backend_mut().fail_at("grant.verified");
    assert!(service_rotate_on(&mut v).is_err());
    let ServiceStanding::Working(slot, secret) = v.service().unwrap() else {
        panic!("the volume lost its working service slot")
    };
    assert!(v.opens(slot, &secret).unwrap());
    assert_eq!(service_slots(&mut v).len(), 1);
}

#[test]
fn repair_of_a_working_service_slot_is_refused() {
    let f = fixture();
    let mut v = bootstrapped(&f);
    let r = v.repair_service(&installer());
    assert_eq!(code(r), ErrorCode::Refused);
}

#[test]
fn repair_without_a_service_slot_is_refused() {
    let f = fixture();
    let mut v = volume(&f);
    let r = v.repair_service(&installer());
    assert_eq!(code(r), ErrorCode::Refused);
}

#[test]
fn repair_replaces_a_drifted_service_slot() {
    let f = fixture();
    let mut v = bootstrapped(&f);
    let (stale, _) = v.working().unwrap();
    LuksHost::new(&f.c, &f.c.volumes[0].name)
        .forget_service_secret()
        .unwrap();
    assert!(matches!(v.service().unwrap(), ServiceStanding::Drift(s) if s == stale));
    let (old, new) = v.repair_service(&installer()).unwrap();
    assert_eq!(old, stale);
    assert_eq!(service_slots(&mut v), vec![(new, TokenState::Active)]);
    assert!(v.opens(new, &stored_secret(&f).unwrap()).unwrap());
}

#[test]
fn recovery_begin_seals_the_key_before_answering_and_is_idempotent() {
    let f = fixture();
    let mut v = bootstrapped(&f);
    let (slot, key) = pending_or_new(&mut v).unwrap();
    let sealed = pending_key::load(&f.c, &f.c.volumes[0].name)
        .unwrap()
        .unwrap();
    assert!(sealed.ct_eq(&key));
    assert_eq!(recovery_slots(&mut v, TokenState::Pending), vec![slot]);
    let (again, key2) = pending_or_new(&mut v).unwrap();
    assert_eq!(again, slot);
    assert!(key2.ct_eq(&key));
}

#[test]
fn recovery_commit_with_the_wrong_group_is_refused_and_the_key_stays_pending() {
    let f = fixture();
    let mut v = bootstrapped(&f);
    let (slot, _) = pending_or_new(&mut v).unwrap();
    let r = commit_pending(&f.c, &mut v, Some(slot.get()), |key| {
        check_confirm(key, &Secret::copy_from(b"aaaaaaaa")).map(|()| None)
    });
    assert_eq!(code(r), ErrorCode::Refused);
    assert_eq!(recovery_slots(&mut v, TokenState::Pending), vec![slot]);
    assert!(pending_key::load(&f.c, &f.c.volumes[0].name)
        .unwrap()
        .is_some());
}

#[test]
fn recovery_commit_retires_the_previous_key_and_forgets_the_sealed_one() {
    let f = fixture();
    let mut v = bootstrapped(&f);
    let confirm = |key: &Secret| Secret::copy_from(recovery_key::last_group(key));
    let (first, key) = pending_or_new(&mut v).unwrap();
    commit_pending(&f.c, &mut v, Some(first.get()), |k| {
        check_confirm(k, &confirm(&key)).map(|()| None)
    })
    .unwrap();
    let (second, key2) = pending_or_new(&mut v).unwrap();
    let r = commit_pending(&f.c, &mut v, Some(second.get()), |k| {
        check_confirm(k, &confirm(&key2)).map(|()| None)
    })
    .unwrap();
    assert_eq!(
        r,
        Reply::RecoveryCommitted {
            slot: second.get(),
            retired: vec![first.get()]
        }
    );
    assert_eq!(recovery_slots(&mut v, TokenState::Active), vec![second]);
    assert!(pending_key::load(&f.c, &f.c.volumes[0].name)
        .unwrap()
        .is_none());
}

#[test]
fn recovery_commit_naming_another_slot_or_with_nothing_pending_fails() {
    let f = fixture();
    let mut v = bootstrapped(&f);
    let none = commit_pending(&f.c, &mut v, Some(5), |_| Ok(None));
    assert_eq!(code(none), ErrorCode::Failed);
    let (slot, _) = pending_or_new(&mut v).unwrap();
    let wrong = commit_pending(&f.c, &mut v, Some(slot.get() + 1), |_| Ok(None));
    let e = wrong.expect_err("another slot");
    assert!(e.to_string().contains("not"), "{e}");
    assert_eq!(recovery_slots(&mut v, TokenState::Pending), vec![slot]);
}

#[test]
fn a_pending_key_whose_sealed_copy_is_lost_is_dropped_with_its_slot() {
    let f = fixture();
    let mut v = bootstrapped(&f);
    let (slot, _) = pending_or_new(&mut v).unwrap();
    pending_key::drop(&f.c, &f.c.volumes[0].name).unwrap();
    assert!(v.settle_pending_recovery().unwrap().is_none());
    assert!(v.state().unwrap().slot(slot).is_none());
}

#[test]
fn a_pending_rotation_past_the_policys_age_is_revoked() {
    // The helper's host takes the age from `[policy] pending_max_age_secs`.
    let f = fixture_with("");
    let mut v = bootstrapped(&f);
    let (slot, _) = pending_or_new(&mut v).unwrap();
    // The same volume, judged by a policy that allows no pending age at all.
    let strict = {
        let text = format!(
            "state_dir = \"{}\"\n[[volume]]\nname = \"root\"\ndevice = \"/dev/null\"\n[policy]\npending_max_age_secs = 0\n",
            f.c.state_dir.display()
        );
        Config::parse(&text).unwrap()
    };
    let store = std::mem::replace(
        &mut v.store,
        SlotStore::new(MemoryBackend::formatted(&installer())),
    );
    let mut strict_vault = LuksVault::new(&strict, &strict.volumes[0], store);
    assert!(strict_vault.settle_pending_recovery().unwrap().is_none());
    assert!(strict_vault.state().unwrap().slot(slot).is_none());
    assert!(pending_key::load(&strict, &strict.volumes[0].name)
        .unwrap()
        .is_none());
}

#[test]
fn recovery_abort_drops_the_pending_slot() {
    let f = fixture();
    let mut v = bootstrapped(&f);
    let (slot, _) = pending_or_new(&mut v).unwrap();
    assert_eq!(v.abort_recovery().unwrap(), Some(slot));
    assert!(recovery_slots(&mut v, TokenState::Pending).is_empty());
}

#[test]
fn release_dry_run_lists_keywards_slots_and_changes_nothing_then_release_removes_them() {
    let f = fixture();
    let mut v = bootstrapped(&f);
    let alice = grant_user(&mut v, "alice", b"a");
    let (service, _) = v.working().unwrap();
    let listed = v.release(true).unwrap();
    assert_eq!(listed.len(), 2);
    assert!(listed.contains(&alice.get()) && listed.contains(&service.get()));
    assert!(v.state().unwrap().slot(alice).is_some());
    assert_eq!(v.release(false).unwrap(), listed);
    let state = v.state().unwrap();
    assert!(state.holders().iter().all(|h| h.token.is_none()));
    assert!(
        state.slot(SlotId::new(0).unwrap()).is_some(),
        "the installer's slot stays"
    );
    assert!(stored_secret(&f).is_none());
}

#[test]
fn verify_says_missing_then_ok_then_drift() {
    let f = fixture();
    let mut v = volume(&f);
    assert_eq!(v.verify().service, "missing");
    bootstrap_on(&mut v, None, &installer()).unwrap();
    let ok = v.verify();
    assert_eq!(ok.service, "ok");
    assert!(ok.violations.is_empty(), "{:?}", ok.violations);
    LuksHost::new(&f.c, &f.c.volumes[0].name)
        .forget_service_secret()
        .unwrap();
    assert_eq!(v.verify().service, "drift");
}

#[test]
fn a_user_slot_does_not_count_as_a_way_in_for_keyward_alone() {
    // Only keyward's slots left (the installer's slot gone by another tool): release must
    // refuse, since removing them would lock the volume (I1).
    let f = fixture();
    let mut v = bootstrapped(&f);
    grant_user(&mut v, "alice", b"a");
    let zero = SlotId::new(0).unwrap();
    // What `cryptsetup luksKillSlot` would do behind keyward's back.
    keyward_core::orderings::SlotBackend::destroy_slot(v.store.backend_mut(), zero).unwrap();
    let r = v.release(false);
    assert_eq!(code(r), ErrorCode::Refused);
    assert!(v
        .state()
        .unwrap()
        .holders()
        .iter()
        .any(|h| h.role == HolderRole::Service));
}

#[test]
fn every_op_error_keeps_its_exit_code_through_rewording() {
    use keyward_core::StoreError;
    let cases = [
        (
            OpError::from(StoreError::AuthenticationFailed),
            ErrorCode::AuthenticationFailed,
        ),
        (OpError::from(StoreError::Busy), ErrorCode::Busy),
        (OpError::from(StoreError::NoFreeSlot), ErrorCode::Failed),
        (OpError::NoSuchVolume(f_name()), ErrorCode::Usage),
        (OpError::Refused("no".into()), ErrorCode::Refused),
        (OpError::Usage("no".into()), ErrorCode::Usage),
        (
            OpError::io("service secret")(std::io::ErrorKind::NotFound.into()),
            ErrorCode::Failed,
        ),
    ];
    for (e, code) in cases {
        assert_eq!(e.code(), code, "{e}");
        let worded = e.reworded(|m| format!("command x failed: {m}"));
        assert_eq!(worded.code(), code);
        assert!(worded.to_string().starts_with("command x failed: "));
    }
}

fn f_name() -> keyward_core::VolumeName {
    keyward_core::VolumeName::parse("root").unwrap()
}

#[test]
fn a_protocol_error_keeps_its_words_and_exit_code_in_the_helper() {
    use keyward_core::secret_orderings::{ProtocolError, ServiceStanding};
    use keyward_core::StoreError;
    let slot = SlotId::new(3).unwrap();
    let cases: [(ProtocolError<OpError>, ErrorCode, &str); 5] = [
        (
            ProtocolError::NothingToRepair(slot),
            ErrorCode::Refused,
            "service slot 3 works; nothing to repair (rotate it with `keyward service rotate`)",
        ),
        (
            ProtocolError::NoServiceSlot(f_name()),
            ErrorCode::Refused,
            "root has no service slot; run `keyward bootstrap root`",
        ),
        (
            ProtocolError::RepairUnsettled(ServiceStanding::Drift(slot)),
            ErrorCode::Failed,
            "after repair the service slot is Drift(SlotId(3)); run `keyward verify`",
        ),
        (
            ProtocolError::EveryWayInIsKeywards(f_name()),
            ErrorCode::Refused,
            "root: every way in is keyward's; removing them would lock the volume. Add another key (cryptsetup luksAddKey) first",
        ),
        (
            ProtocolError::Store(StoreError::Busy),
            ErrorCode::Busy,
            "the volume is busy: another process is updating its header",
        ),
    ];
    for (e, code, message) in cases {
        let e = OpError::from(e);
        assert_eq!((e.code(), e.to_string().as_str()), (code, message));
    }
    let io = OpError::io("service secret")(std::io::ErrorKind::NotFound.into());
    let e = OpError::from(ProtocolError::Host(io));
    assert!(
        matches!(
            e,
            OpError::Io {
                what: "service secret",
                ..
            }
        ),
        "{e:?}"
    );
}
