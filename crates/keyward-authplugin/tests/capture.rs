//! The `keyward:capture` mechanism against a fake engine and a fake helper that speaks the real
//! frames: every way a login can look, and every way the helper can fail, ends in exactly one
//! "allow" within the login-path budget; only a good login sends one `LoginCapture`.

mod common;

use std::time::{Duration, Instant};

use common::{absent_socket, received, spawn_helper, FakeEngine, Helper, Value};
use keyward_authplugin::capture::{invoke, AllowFailure, CaptureError, Captured};
use keyward_core::ipc::{Request, PROTOCOL_VERSION};
use keyward_sys::helper_client::LOGIN_PATH_BUDGET;

/// The LoginCapture requests among what the helper received (after the hello).
fn captures(reqs: Vec<Request>) -> Vec<(String, Vec<u8>)> {
    reqs.into_iter()
        .filter_map(|r| match r {
            Request::LoginCapture { user, password } => {
                Some((user.to_string(), password.into_secret().expose().to_vec()))
            }
            Request::Hello { version } => {
                assert_eq!(version, PROTOCOL_VERSION);
                None
            }
            other => panic!("unexpected request {other:?}"),
        })
        .collect()
}

#[test]
fn a_good_login_sends_one_capture_with_the_user_and_password_and_allows() {
    let helper = spawn_helper(Helper::Queues);
    let mut engine = FakeEngine::with(b"alice\0", b"correct horse battery\0");
    let report = invoke(&mut engine, &helper.socket());
    assert_eq!(report.captured, Captured::Sent, "{report}");
    assert_eq!(report.allowed, Ok(()));
    assert_eq!(engine.allowed, 1);
    assert_eq!(
        captures(received(&helper)),
        vec![("alice".to_owned(), b"correct horse battery".to_vec())]
    );
    assert!(!report.to_string().contains("correct horse"));
}

#[test]
fn values_without_a_terminating_nul_are_taken_as_they_are() {
    let helper = spawn_helper(Helper::Queues);
    let mut engine = FakeEngine::with(b"bob", "pässwörd".as_bytes());
    assert_eq!(
        invoke(&mut engine, &helper.socket()).captured,
        Captured::Sent
    );
    assert_eq!(
        captures(received(&helper)),
        vec![("bob".to_owned(), "pässwörd".as_bytes().to_vec())]
    );
}

#[test]
fn an_absent_user_or_password_sends_nothing_and_allows() {
    let helper = spawn_helper(Helper::Queues);
    for missing in ["username", "password"] {
        let mut engine = FakeEngine::with(b"alice", b"pw");
        engine.context.remove(missing);
        let report = invoke(&mut engine, &helper.socket());
        assert_eq!(
            report.captured,
            Captured::Skipped(CaptureError::Absent(missing)),
            "{report}"
        );
        assert_eq!(engine.allowed, 1);
    }
    // An engine that answers an error for the key is the same as absent, for the login.
    let mut engine = FakeEngine::with(b"alice", b"pw");
    engine.context.insert("password", Value::Fails(-60010));
    let report = invoke(&mut engine, &helper.socket());
    assert!(matches!(
        report.captured,
        Captured::Skipped(CaptureError::Engine { .. })
    ));
    assert_eq!(engine.allowed, 1);
    assert!(captures(received(&helper)).is_empty());
}

#[test]
fn values_of_the_wrong_type_or_garbage_send_nothing_and_allow() {
    let helper = spawn_helper(Helper::Queues);
    let cases: [(&[u8], &[u8]); 6] = [
        // A uid_t stored under the name (binary, with NULs inside).
        (&501u32.to_le_bytes(), b"pw"),
        // Not UTF-8.
        (&[0xff, 0xfe, b'a'], b"pw"),
        // UTF-8, but no name keyward manages: a full name, capitals, a path.
        ("Alice Appleseed".as_bytes(), b"pw"),
        (b"../../etc", b"pw"),
        // A NUL inside the password: not the string builtin:authenticate checked.
        (b"alice", b"pw\0tail"),
        // Two trailing NULs: not a C string either.
        (b"alice", b"pw\0\0"),
    ];
    for (user, password) in cases {
        let mut engine = FakeEngine::with(user, password);
        let report = invoke(&mut engine, &helper.socket());
        assert!(
            matches!(
                report.captured,
                Captured::Skipped(CaptureError::NotManaged(_) | CaptureError::Malformed { .. })
            ),
            "{user:?}: {report}"
        );
        assert_eq!(engine.allowed, 1, "{user:?}");
    }
    assert!(captures(received(&helper)).is_empty());
}

#[test]
fn an_empty_password_sends_nothing_and_allows() {
    let helper = spawn_helper(Helper::Queues);
    for empty in [&b""[..], &b"\0"[..]] {
        let mut engine = FakeEngine::with(b"alice", empty);
        let report = invoke(&mut engine, &helper.socket());
        assert_eq!(
            report.captured,
            Captured::Skipped(CaptureError::EmptyPassword)
        );
        assert_eq!(engine.allowed, 1);
    }
    assert!(captures(received(&helper)).is_empty());
}

#[test]
fn no_helper_listening_still_allows() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut engine = FakeEngine::with(b"alice", b"pw");
    let report = invoke(&mut engine, &absent_socket(dir.path()));
    assert!(
        matches!(report.captured, Captured::Skipped(CaptureError::Helper(_))),
        "{report}"
    );
    assert_eq!(report.allowed, Ok(()));
    assert_eq!(engine.allowed, 1);
}

#[test]
fn a_helper_that_accepts_and_never_answers_costs_at_most_the_budget_and_allows() {
    let helper = spawn_helper(Helper::Mute);
    let mut engine = FakeEngine::with(b"alice", b"pw");
    let started = Instant::now();
    let report = invoke(&mut engine, &helper.socket());
    let took = started.elapsed();
    assert!(
        matches!(report.captured, Captured::Skipped(CaptureError::Helper(_))),
        "{report}"
    );
    assert_eq!(engine.allowed, 1);
    // The budget is 200 ms for the whole exchange; allow a loaded machine its slack.
    assert!(took >= LOGIN_PATH_BUDGET, "gave up early: {took:?}");
    assert!(
        took < LOGIN_PATH_BUDGET + Duration::from_millis(800),
        "{took:?}"
    );
}

#[test]
fn a_helper_that_refuses_still_allows() {
    let helper = spawn_helper(Helper::Refuses);
    let mut engine = FakeEngine::with(b"alice", b"pw");
    let report = invoke(&mut engine, &helper.socket());
    assert_eq!(
        report.captured,
        Captured::Skipped(CaptureError::Helper("refused: not managed".into())),
        "{report}"
    );
    assert_eq!(engine.allowed, 1);
    // The refusal came after the capture was read: it was one request, as sent.
    assert_eq!(captures(received(&helper)).len(), 1);
}

#[test]
fn a_panic_inside_the_logic_is_caught_and_the_login_allowed() {
    let helper = spawn_helper(Helper::Queues);
    let mut engine = FakeEngine::with(b"alice", b"pw");
    engine.context.insert("password", Value::Panics);
    let report = invoke(&mut engine, &helper.socket());
    assert_eq!(report.captured, Captured::Panicked);
    assert_eq!(report.allowed, Ok(()));
    assert_eq!(engine.allowed, 1);
    assert_eq!(report.severity(), 4);
    assert!(captures(received(&helper)).is_empty());
}

#[test]
fn an_engine_that_fails_to_take_allow_is_reported_not_retried() {
    let helper = spawn_helper(Helper::Queues);
    let mut engine = FakeEngine::with(b"alice", b"pw");
    engine.allow_fails = true;
    let report = invoke(&mut engine, &helper.socket());
    assert_eq!(report.captured, Captured::Sent);
    assert!(matches!(report.allowed, Err(AllowFailure::Engine(_))));
    assert_eq!(engine.allowed, 1);
}
