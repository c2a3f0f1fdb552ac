//! Crash tests for the operations that had none (issue 16): bootstrap, service repair, recovery
//! abort, pending-key expiry, release (`keyward uninstall`) and the rekey a login makes after a
//! password was changed outside keyward. At every named step on the way (the helper's own
//! failpoints and keyward-luks's) the helper is killed with SIGKILL, as a power cut would end
//! it, and restarted: its start-up repair and reconcile run before it serves. Then stock
//! cryptsetup proves that every holder still opens with what they hold — the installer's
//! passphrase, each user's current password, the committed recovery key, the stored service
//! secret — that no keyslot leaked and none is left half-made, that the volume keeps a way in
//! besides keyward's service slot, and that `keyward verify` and `keyward audit --verify` pass
//! (once the admin has re-run an operation the crash undid, where verify rightly reports it
//! unfinished). Needs the `failpoints` features (the README's test command sets them).
#![allow(clippy::unwrap_used)]

#[path = "op_crashes/check.rs"]
mod check;
mod common;
#[path = "op_crashes/fixture.rs"]
mod fixture;

use std::time::{Duration, Instant};

use check::*;
use common::*;
use fixture::*;

#[test]
fn crash_at_every_step_of_a_bootstrap() {
    const STEPS: &[&str] = &[
        "bootstrap.next-written",
        "grant.intent-written",
        "grant.slot-added",
        "grant.verified",
        "grant.committed",
        "bootstrap.slot-added",
    ];
    for step in STEPS {
        let mut inst = fixture("");
        let held = Held::default();
        crash_at(&mut inst, step, |i| {
            let pass = format!("{INSTALL_PASS}\n");
            died_in(
                i,
                step,
                &["bootstrap", "data", "--passphrase-stdin"],
                pass.as_bytes(),
            );
        });
        // Either undone (no service slot, nothing stored) or finished (the slot opens with the
        // stored secret); never a slot whose secret is only in `.next`.
        let after = check(&inst, &held, step, Unfinished::ServiceMissing);
        assert!(!inst.path("state/service/data.next").exists(), "{step}");
        let finished = step.starts_with("bootstrap.slot") || *step == "grant.committed";
        assert_eq!(service_slot(&after).is_some(), finished, "{step}: {after}");

        // The admin runs bootstrap again; the service secret then grants.
        inst.bootstrap();
        let mut held = held;
        grant(&inst, &mut held, ALICE, "alice pw 1");
        check(&inst, &held, step, Unfinished::None);
    }
}

#[test]
fn crash_at_every_step_of_a_service_repair() {
    const STEPS: &[&str] = &[
        "service-repair.next-written",
        "grant.intent-written",
        "grant.slot-added",
        "grant.verified",
        "grant.committed",
        "service-repair.slot-added",
        "service-settle.promoted",
        "service-settle.committed",
        "revoke.intent-written",
        "revoke.slot-destroyed",
    ];
    for step in STEPS {
        let mut inst = fixture("");
        inst.bootstrap();
        let mut held = Held::default();
        grant(&inst, &mut held, ALICE, "alice pw 1");
        held.recovery = Some(rotate_recovery(&inst));
        // The stored secret is lost: the service slot drifts.
        let stale = service_slot(&status(&inst)).unwrap();
        std::fs::write(inst.path("state/service/data"), "0".repeat(64)).unwrap();

        crash_at(&mut inst, step, |i| {
            let args = ["service", "repair", "data", "--passphrase-stdin"];
            died_in(i, step, &args, b"alice pw 1\n");
        });
        let after = check(&inst, &held, step, Unfinished::ServiceDrift(stale));
        if service_slot(&after) == Some(stale) {
            // Undone: the admin repairs again.
            let out = inst.keyward(
                &["service", "repair", "data", "--passphrase-stdin"],
                b"alice pw 1\n",
            );
            assert_eq!(code(&out), Some(0), "{step}: {}", stderr(&out));
        }
        let after = check(&inst, &held, step, Unfinished::None);
        assert_ne!(service_slot(&after), Some(stale), "{step}");
        grant(&inst, &mut held, BOB, "bob pw 1");
        check(&inst, &held, step, Unfinished::None);
    }
}

/// Bootstrap, a user, a committed recovery key and a second one pending (begun, not
/// confirmed); returns the instance and what the holders hold.
fn with_pending_recovery(policy: &str) -> (Instance, Held, String) {
    let inst = fixture(policy);
    inst.bootstrap();
    let mut held = Held::default();
    grant(&inst, &mut held, ALICE, "alice pw 1");
    held.recovery = Some(rotate_recovery(&inst));
    let pending = begin_recovery(&inst);
    (inst, held, pending)
}

#[test]
fn crash_at_every_step_of_a_recovery_abort() {
    const STEPS: &[&str] = &[
        "revoke.intent-written",
        "revoke.slot-destroyed",
        "recovery-abort.revoked",
    ];
    for step in STEPS {
        let (mut inst, held, _) = with_pending_recovery("");
        crash_at(&mut inst, step, |i| {
            died_in(i, step, &["recovery", "abort", "data"], b"");
        });
        let after = check(&inst, &held, step, Unfinished::None);
        assert!(pending_recovery(&after).is_none(), "{step}: {after}");
        assert!(!inst.path("state/pending/data").exists(), "{step}");
        finish_with_a_new_recovery_key(&inst, held, step);
    }
}

#[test]
fn crash_at_every_step_of_a_pending_key_expiry() {
    const STEPS: &[&str] = &[
        "revoke.intent-written",
        "revoke.slot-destroyed",
        "recovery-expire.revoked",
    ];
    for step in STEPS {
        // A pending key older than 2 s is dropped by the reconcile pass at start-up.
        let (mut inst, held, _) = with_pending_recovery("pending_max_age_secs = 2\n");
        let begun = Instant::now();
        inst.stop_helper();
        std::thread::sleep(Duration::from_millis(3100).saturating_sub(begun.elapsed()));
        dies_at_start(&mut inst, step);
        assert!(inst.try_start(), "{step}: {}", inst.helper_stderr());
        let after = check(&inst, &held, step, Unfinished::None);
        assert!(pending_recovery(&after).is_none(), "{step}: {after}");
        assert!(!inst.path("state/pending/data").exists(), "{step}");
        finish_with_a_new_recovery_key(&inst, held, step);
    }
}

/// After an interrupted abort or expiry: a new rotation commits, and only its key opens.
fn finish_with_a_new_recovery_key(inst: &Instance, mut held: Held, step: &str) {
    let old = held.recovery.take().unwrap();
    held.recovery = Some(rotate_recovery(inst));
    check(inst, &held, step, Unfinished::None);
    assert!(
        !opens_any(inst, &old),
        "{step}: the old recovery key still opens"
    );
}

#[test]
fn crash_at_every_step_of_an_uninstall() {
    // (step, kills): a revoke step is reached once per keyslot released, so each run of
    // `uninstall` dies on the next slot until none is left; the run after that finishes.
    const STEPS: &[(&str, usize)] = &[
        ("revoke.intent-written", 4),
        ("revoke.slot-destroyed", 4),
        ("release.revoked", 1),
    ];
    for (step, kills) in STEPS {
        let mut inst = fixture("");
        inst.bootstrap();
        let mut held = Held::default();
        grant(&inst, &mut held, ALICE, "alice pw 1");
        grant(&inst, &mut held, BOB, "bob pw 1");
        held.recovery = Some(rotate_recovery(&inst));
        for _ in 0..*kills {
            crash_at(&mut inst, step, |i| {
                died_in(i, step, &["uninstall", "--yes", "--package"], b"");
            });
            // What was released is gone on purpose; everything that remains still opens.
            let after = check(&inst, &held, step, Unfinished::Releasing);
            held.users
                .retain(|(u, _)| !user_slots(&after, u).is_empty());
            if active_recovery(&after).is_empty() {
                held.recovery = None;
            }
        }
        let out = uninstall(&inst);
        assert_eq!(code(&out), Some(0), "{step}: {}", stderr(&out));
        // Only the installer's slot is left, untouched, and no keyward token.
        let meta = inst.metadata();
        let slots: Vec<&String> = meta["keyslots"].as_object().unwrap().keys().collect();
        assert_eq!(slots, ["0"], "{step}: {meta}");
        let tokens = meta["tokens"].as_object().unwrap();
        assert!(
            tokens.values().all(|t| t["type"] != "keyward"),
            "{step}: {meta}"
        );
        assert!(inst.opens(0, INSTALL_PASS.as_bytes()), "{step}");
        assert!(
            !inst.path("state").exists(),
            "{step}: the state directory is left"
        );
    }
}

#[test]
fn crash_at_every_step_of_a_login_rekey() {
    let (old, new) = ("alice old pw", "alice new pw");
    for step in REKEY_STEPS {
        let mut inst = fixture("");
        inst.bootstrap();
        let mut held = Held::default();
        // Alice's first login gives her a slot for her password.
        set_password(&inst, ALICE, old);
        login(&inst, ALICE, old);
        wait_for_login(&inst, ALICE, 1, step);
        held.users.push((ALICE.into(), old.into()));
        // Then the installer's passphrase goes: besides keyward's service slot, Alice's
        // password is the volume's only way in.
        let out = run(
            std::process::Command::new("cryptsetup")
                .args(["luksKillSlot", "--batch-mode"])
                .arg(&inst.image)
                .arg("0"),
            b"",
        );
        assert!(out.status.success(), "{}", stderr(&out));
        held.no_installer = true;
        check(&inst, &held, step, Unfinished::None);

        // Her password is changed outside keyward (no pam_keyward in that stack); her next
        // login rekeys the slot through the service secret, and the helper dies on the way.
        set_password(&inst, ALICE, new);
        crash_at(&mut inst, step, |i| drop(send_login(i, ALICE, new)));
        held.users.clear();
        let after = status(&inst);
        let mine = user_slots(&after, ALICE);
        assert_eq!(mine.len(), 1, "{step}: {after}");
        let works = [old, new].map(|pw| inst.opens(mine[0], pw.as_bytes()));
        assert!(works[0] || works[1], "{step}: alice is locked out: {after}");
        let pw = if works[1] { new } else { old };
        held.users.push((ALICE.into(), pw.into()));
        check(&inst, &held, step, Unfinished::None);
        held.users.clear();
        // What the start-up reconcile did to her slot is on the record, naming her.
        if step.starts_with("rekey.") {
            let recorded = inst
                .audit_lines()
                .iter()
                .any(|l| l.contains("\"op\":\"reconcile\"") && l.contains(ALICE));
            assert!(recorded, "{step}: {:#?}", inst.audit_lines());
        }

        // The next login leaves exactly the new password working.
        login(&inst, ALICE, new);
        wait_for_login(&inst, ALICE, 2, step);
        held.users.push((ALICE.into(), new.into()));
        let after = check(&inst, &held, step, Unfinished::None);
        assert_eq!(user_slots(&after, ALICE).len(), 1, "{step}: {after}");
        assert!(
            !opens_any(&inst, old),
            "{step}: the old password still opens"
        );
    }
}
