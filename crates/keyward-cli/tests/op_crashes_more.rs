//! Crash tests, continued (issue 16): the password change the PAM module reports
//! (`Request::PasswordChange`, sent by `pam_sm_chauthtok` once `passwd` has committed), and the
//! start-up reconcile itself cut short — a crash while the helper recovers from a crash.
//!
//! As in `op_crashes.rs`, every failpoint ends the helper with SIGKILL, as a power cut would.
//! After the last restart stock cryptsetup proves that every holder still opens — the user whose
//! password changed with the old or the new password (never neither, and the one the ordering
//! promises for that step), the other user, the committed recovery key, the installer's
//! passphrase, the stored service secret — that no keyslot or token is left over, and that
//! `verify` and `audit --verify` pass; then the interrupted operation, retried, lands. Needs the
//! `failpoints` features (the README's test command sets them).
#![allow(clippy::unwrap_used)]

#[path = "op_crashes/check.rs"]
mod check;
mod common;
#[path = "op_crashes/fixture.rs"]
mod fixture;

use check::*;
use common::*;
use fixture::*;
use keyward_core::ipc::Reply;

const OLD: &str = "alice old pw";
const NEW: &str = "alice new pw";
const BOB_PW: &str = "bob pw 1";

/// Bootstrapped; Alice enrolled by her first login, Bob granted by the admin, a committed
/// recovery key; the installer's passphrase stays in keyslot 0.
fn with_holders(step: &str) -> (Instance, Held) {
    let inst = fixture("");
    inst.bootstrap();
    let mut held = Held::default();
    set_password(&inst, ALICE, OLD);
    login(&inst, ALICE, OLD);
    wait_for_login(&inst, ALICE, 1, step);
    held.users.push((ALICE.into(), OLD.into()));
    grant(&inst, &mut held, BOB, BOB_PW);
    held.recovery = Some(rotate_recovery(&inst));
    check(&inst, &held, step, Unfinished::None);
    (inst, held)
}

/// `passwd` committed Alice's new password (pam_unix wrote the shadow file); then the PAM
/// module reports the change. The helper answers at once and rekeys in the background.
fn change_password(inst: &Instance) {
    set_password(inst, ALICE, NEW);
    let reply = send_change(inst, ALICE, OLD, NEW);
    assert!(matches!(reply, Some(Reply::Queued)), "{reply:?}");
}

/// Alice's one keyslot opens with the password the ordering promises after a crash at `step`
/// (the old one until the new slot is verified and the token moved, the new one from then on),
/// and not with the other. `held` then records it.
fn alice_holds(inst: &Instance, held: &mut Held, step: &str, forward: bool) {
    let vol = status(inst);
    let mine = user_slots(&vol, ALICE);
    assert_eq!(mine.len(), 1, "{step}: {vol}");
    let works = [OLD, NEW].map(|pw| inst.opens(mine[0], pw.as_bytes()));
    assert!(works[0] || works[1], "{step}: alice is locked out: {vol}");
    assert_eq!(works, [!forward, forward], "{step}: [old, new] open: {vol}");
    held.users.retain(|(u, _)| u != ALICE);
    held.users
        .push((ALICE.into(), if forward { NEW } else { OLD }.into()));
}

/// The change, retried (the user runs `passwd` again, or the PAM module's next report): it
/// lands, and only the new password opens.
fn retry_change(inst: &Instance, held: &mut Held, step: &str) {
    let reply = send_change(inst, ALICE, OLD, NEW);
    assert!(matches!(reply, Some(Reply::Queued)), "{step}: {reply:?}");
    // The crashed change wrote no record: the helper died before the job's outcome was known.
    wait_for_job(inst, "password-change", ALICE, 1, step);
    held.users.retain(|(u, _)| u != ALICE);
    held.users.push((ALICE.into(), NEW.into()));
    check(inst, held, step, Unfinished::None);
    assert!(
        !opens_any(inst, OLD),
        "{step}: the old password still opens"
    );
}

/// The start-up reconcile's record of Alice's interrupted rekey is in the chain.
fn reconcile_recorded(inst: &Instance, step: &str) {
    let recorded = inst
        .audit_lines()
        .iter()
        .any(|l| l.contains("\"op\":\"reconcile\"") && l.contains(ALICE));
    assert!(
        recorded,
        "{step}: no reconcile record names alice: {:#?}",
        inst.audit_lines()
    );
}

/// Rekey steps after which the change goes forward (the new slot is verified and the token
/// names it); before them it is undone.
fn rekey_goes_forward(step: &str) -> bool {
    matches!(
        step,
        "rekey.token-moved" | "rekey.old-destroyed" | "login.rekeyed"
    )
}

#[test]
fn crash_at_every_step_of_a_password_change() {
    // Every step a PAM password change passes: the store's rekey, then the helper's own step
    // between the rekey and the job's record (shared with a login's rekey; a change has no
    // step of its own).
    for step in REKEY_STEPS {
        let (mut inst, mut held) = with_holders(step);
        crash_at(&mut inst, step, change_password);
        alice_holds(&inst, &mut held, step, rekey_goes_forward(step));
        check(&inst, &held, step, Unfinished::None);
        if step.starts_with("rekey.") {
            reconcile_recorded(&inst, step);
        }
        // Whatever step the crash hit, the chain holds the rekey's record, written before it.
        let begun = inst.audit_lines().iter().any(|l| {
            l.contains("\"op\":\"slot-rekey\"") && l.contains(ALICE) && l.contains("begun")
        });
        assert!(
            begun,
            "{step}: no slot-rekey record: {:#?}",
            inst.audit_lines()
        );
        retry_change(&inst, &mut held, step);
    }
}

/// Kill an operation at `first`; then kill the helper at each step of `then` in turn during
/// its start-up work (reconcile, recovery and service settling); then start it cleanly.
fn crash_then_during_start(
    inst: &mut Instance,
    first: &str,
    then: &[&str],
    run: impl FnOnce(&Instance),
) -> String {
    let name = format!("{first} then {}", then.join(" then "));
    kill_at(inst, first, run);
    for step in then {
        dies_at_start(inst, step);
    }
    assert!(inst.try_start(), "{name}: {}", inst.helper_stderr());
    name
}

#[test]
fn reconcile_cut_short_after_a_password_change() {
    const CASES: &[(&str, &[&str])] = &[
        ("rekey.intent-written", &["reconcile.token-written"]),
        ("rekey.slot-added", &["reconcile.slot-destroyed"]),
        ("rekey.slot-added", &["reconcile.token-written"]),
        (
            "rekey.verified",
            &["reconcile.slot-destroyed", "reconcile.token-written"],
        ),
        ("rekey.token-moved", &["reconcile.slot-destroyed"]),
        ("rekey.token-moved", &["reconcile.token-written"]),
        ("rekey.old-destroyed", &["reconcile.token-written"]),
    ];
    for (first, then) in CASES {
        let (mut inst, mut held) = with_holders(first);
        let name = crash_then_during_start(&mut inst, first, then, change_password);
        alice_holds(&inst, &mut held, &name, rekey_goes_forward(first));
        check(&inst, &held, &name, Unfinished::None);
        reconcile_recorded(&inst, &name);
        retry_change(&inst, &mut held, &name);
    }
}

#[test]
fn reconcile_cut_short_after_a_grant() {
    const CASES: &[(&str, &[&str])] = &[
        ("grant.intent-written", &["reconcile.token-written"]),
        ("grant.slot-added", &["reconcile.slot-destroyed"]),
        ("grant.slot-added", &["reconcile.token-written"]),
        (
            "grant.verified",
            &["reconcile.slot-destroyed", "reconcile.token-written"],
        ),
    ];
    for (first, then) in CASES {
        let (mut inst, mut held) = with_holders(first);
        let out = inst.keyward(&["revoke", "data", BOB], b"");
        assert_eq!(code(&out), Some(0), "{first}: {}", stderr(&out));
        held.users.retain(|(u, _)| u != BOB);
        let name = crash_then_during_start(&mut inst, first, then, |i| {
            let pass = format!("{BOB_PW}\n");
            let args = ["grant", "data", BOB, "--passphrase-stdin"];
            died_in(i, first, &args, pass.as_bytes());
        });
        // Undone: Bob holds nothing and his passphrase opens nothing.
        let after = check(&inst, &held, &name, Unfinished::None);
        assert!(user_slots(&after, BOB).is_empty(), "{name}: {after}");
        assert!(!opens_any(&inst, BOB_PW), "{name}: a keyslot was left");
        grant(&inst, &mut held, BOB, BOB_PW);
        check(&inst, &held, &name, Unfinished::None);
    }
}

#[test]
fn reconcile_cut_short_after_a_revoke() {
    const CASES: &[(&str, &[&str])] = &[
        (
            "revoke.intent-written",
            &["reconcile.slot-destroyed", "reconcile.token-written"],
        ),
        ("revoke.intent-written", &["reconcile.token-written"]),
        ("revoke.slot-destroyed", &["reconcile.token-written"]),
    ];
    for (first, then) in CASES {
        let (mut inst, mut held) = with_holders(first);
        let name = crash_then_during_start(&mut inst, first, then, |i| {
            died_in(i, first, &["revoke", "data", BOB], b"");
        });
        // Finished: Bob's right is gone, and nothing opens with his passphrase.
        held.users.retain(|(u, _)| u != BOB);
        let after = check(&inst, &held, &name, Unfinished::None);
        assert!(user_slots(&after, BOB).is_empty(), "{name}: {after}");
        assert!(!opens_any(&inst, BOB_PW), "{name}: bob's passphrase opens");
    }
}

#[test]
fn reconcile_cut_short_after_a_service_rotation() {
    // (first, then, forward): whether the rotation goes forward (the new secret is kept).
    const CASES: &[(&str, &[&str], bool)] = &[
        ("grant.slot-added", &["reconcile.slot-destroyed"], false),
        ("grant.verified", &["reconcile.token-written"], false),
        (
            "service-rotate.slot-added",
            &["service-settle.promoted"],
            true,
        ),
        (
            "service-rotate.slot-added",
            &["service-settle.committed"],
            true,
        ),
        (
            "service-rotate.slot-added",
            &[
                "revoke.intent-written",
                "reconcile.slot-destroyed",
                "reconcile.token-written",
            ],
            true,
        ),
        (
            "service-rotate.renamed",
            &["service-settle.committed", "revoke.slot-destroyed"],
            true,
        ),
        (
            "service-rotate.committed",
            &["revoke.intent-written", "reconcile.token-written"],
            true,
        ),
    ];
    for (first, then, forward) in CASES {
        let (mut inst, held) = with_holders(first);
        let old_slot = service_slot(&status(&inst)).unwrap();
        let old_secret = std::fs::read(inst.path("state/service/data")).unwrap();
        let name = crash_then_during_start(&mut inst, first, then, |i| {
            died_in(i, first, &["service", "rotate", "data"], b"");
        });
        let after = check(&inst, &held, &name, Unfinished::None);
        assert!(!inst.path("state/service/data.next").exists(), "{name}");
        let slot = service_slot(&after).unwrap();
        assert_eq!(slot != old_slot, *forward, "{name}: {after}");
        let secret = std::fs::read(inst.path("state/service/data")).unwrap();
        assert_eq!(secret != old_secret, *forward, "{name}");
        if !forward {
            let out = inst.keyward(&["service", "rotate", "data"], b"");
            assert_eq!(code(&out), Some(0), "{name}: {}", stderr(&out));
            let after = check(&inst, &held, &name, Unfinished::None);
            assert_ne!(service_slot(&after), Some(old_slot), "{name}");
        }
        assert!(
            !opens_any(&inst, &old_secret),
            "{name}: the old secret opens"
        );
    }
}

/// A password change while the stored service secret opens no slot (drift): nothing can be
/// rekeyed, so nothing is recorded as begun; the job's record says why, and Alice's slot still
/// opens with her old password only.
#[test]
fn a_password_change_without_a_working_service_secret_begins_nothing() {
    let (inst, _held) = with_holders("drift");
    std::fs::write(inst.path("state/service/data"), b"not the service secret").unwrap();
    change_password(&inst);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let job = loop {
        let lines = inst.audit_lines();
        let job = lines
            .iter()
            .find(|l| l.contains("\"op\":\"password-change\"") && l.contains(ALICE));
        if let Some(job) = job {
            break job.clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no password-change record"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert!(job.contains("does not open service slot"), "{job}");
    let begun: Vec<String> = (inst.audit_lines().into_iter())
        .filter(|l| l.contains("\"op\":\"slot-rekey\""))
        .collect();
    assert!(begun.is_empty(), "a rekey recorded as begun: {begun:#?}");
    let mine = user_slots(&status(&inst), ALICE);
    assert_eq!(mine.len(), 1);
    assert!(inst.opens(mine[0], OLD.as_bytes()) && !inst.opens(mine[0], NEW.as_bytes()));
}
