//! Unit tests of the PAM check child: both halves of the protocol, the helper's side driven
//! against stand-in children (`/bin/sh` scripts) with the real spawning, deadline and kill.

use super::*;

fn alice() -> UserName {
    UserName::parse("alice").expect("a user name")
}

/// Run `script` with `/bin/sh` as the check child for alice's password `pw`.
fn ask_sh(script: &str, deadline: Duration) -> Result<Verdict, AskError> {
    ask_with(
        Path::new("/bin/sh"),
        &["-c", script],
        deadline,
        &alice(),
        &Secret::copy_from(b"pw 1"),
    )
}

/// Is `pid` gone (no such process, or exited and waiting to be reaped)?
fn gone(pid: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{}/stat", pid.trim())).map_or(true, |stat| {
        stat.rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
    })
}

#[test]
fn the_childs_input_buffer_never_grows_so_no_unwiped_copy_is_left() {
    for len in [0, 1, 100, MAX_INPUT, MAX_INPUT + 1, 3 * MAX_INPUT] {
        let data = vec![b'x'; len];
        let input = read_input(data.as_slice()).expect("reading a slice");
        assert_eq!(input.len(), len.min(MAX_INPUT + 1));
        assert_eq!(input.capacity(), MAX_INPUT + 1, "input of {len} bytes");
    }
}

/// The child's side on one end of a socket pair, fed `input`: its exit code and answer.
fn serve_with(
    input: &[u8],
    ready: Result<(), String>,
    check: impl FnOnce(&UserName, &Secret) -> Result<Verdict, String>,
) -> (ExitCode, String) {
    let (mut helper, child) = UnixStream::pair().expect("socketpair");
    helper.write_all(input).expect("sending");
    helper
        .shutdown(std::net::Shutdown::Write)
        .expect("shutdown");
    let code = serve(child, ready, check);
    let answer = read_answer(
        &mut helper,
        Instant::now() + Duration::from_secs(10),
        || false,
    )
    .expect("reading the answer");
    (code, String::from_utf8(answer).expect("text"))
}

#[test]
fn the_child_answers_its_verdict_on_the_socket() {
    let (code, answer) = serve_with(b"alice\npw 1", Ok(()), |user, password| {
        assert_eq!((user.as_str(), password.expose()), ("alice", &b"pw 1"[..]));
        Ok(Verdict::Accepted)
    });
    assert_eq!((code, answer.as_str()), (ExitCode::SUCCESS, "accepted"));
    let (code, answer) = serve_with(b"alice\npw", Ok(()), |_, _| {
        Ok(Verdict::Refused("auth: Authentication failure (7)".into()))
    });
    assert_eq!(
        (code, answer.as_str()),
        (
            ExitCode::SUCCESS,
            "refused: auth: Authentication failure (7)"
        )
    );
    let (code, answer) = serve_with(b"alice\npw", Ok(()), |_, _| {
        Err("pam_start failed (4)".into())
    });
    assert_eq!(
        (code, answer.as_str()),
        (ExitCode::FAILURE, "error: pam_start failed (4)")
    );
}

#[test]
fn the_child_refuses_malformed_input_without_asking_pam() {
    let never = |_: &UserName, _: &Secret| -> Result<Verdict, String> { panic!("PAM was asked") };
    for (input, why) in [
        (&b"alice"[..], "no user name"),
        (b"Alice Smith\npw", "not a user name"),
        (&[b'x'; MAX_INPUT + 1][..], "no user name"),
    ] {
        assert_eq!(
            serve_with(input, Ok(()), never),
            (ExitCode::FAILURE, format!("error: {why}"))
        );
    }
    let mut long = b"alice\n".to_vec();
    long.resize(MAX_INPUT + 1, b'p');
    assert_eq!(
        serve_with(&long, Ok(()), never),
        (ExitCode::FAILURE, "error: input too long".into())
    );
    assert_eq!(
        serve_with(
            b"alice\npw",
            Err("prctl(PR_SET_DUMPABLE): EPERM".into()),
            never
        ),
        (
            ExitCode::FAILURE,
            "error: prctl(PR_SET_DUMPABLE): EPERM".into()
        )
    );
}

#[test]
fn the_childs_answer_is_bounded() {
    let why = "é".repeat(MAX_VERDICT);
    let (code, answer) = serve_with(b"alice\npw", Ok(()), |_, _| Ok(Verdict::Refused(why)));
    assert_eq!(code, ExitCode::SUCCESS);
    assert!(
        answer.len() <= MAX_VERDICT && answer.len() > MAX_VERDICT - 2,
        "{}",
        answer.len()
    );
    assert!(answer.starts_with("refused: é"));
}

/// A child whose PAM stack prints far more than a pipe holds (64 KiB) on stdout and stderr
/// still answers at once, and what it prints is not taken for its verdict: the verdict comes
/// on the socket. (Seen failing with the child's stdout a pipe the helper reads after exit:
/// the stand-in blocked until the deadline.)
#[test]
fn a_stack_that_prints_a_lot_neither_blocks_the_check_nor_answers_for_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let got = dir.path().join("input");
    let script = format!(
        "printf 'refused: printed by a module\\n'; head -c 200000 /dev/zero; \
         head -c 200000 /dev/zero >&2; cat > '{}'; printf accepted >&0",
        got.display()
    );
    let started = Instant::now();
    let verdict = ask_sh(&script, Duration::from_secs(20));
    assert!(
        matches!(verdict, Ok(Verdict::Accepted)),
        "{verdict:?} after {:?}",
        started.elapsed()
    );
    assert_eq!(
        std::fs::read(&got).expect("the child's input"),
        b"alice\npw 1"
    );
}

#[test]
fn refusals_and_failures_come_back_as_such() {
    let verdict = ask_sh(
        "cat > /dev/null; printf 'refused: auth: no\\n' >&0",
        Duration::from_secs(20),
    );
    assert!(
        matches!(&verdict, Ok(Verdict::Refused(why)) if why == "auth: no"),
        "{verdict:?}"
    );
    let failed = ask_sh(
        "cat > /dev/null; printf 'error: \\033boom' >&0; exit 1",
        Duration::from_secs(20),
    )
    .expect_err("a failed child");
    assert_eq!(
        failed.to_string(),
        "the PAM check failed (exit status: 1): error: \\u{1b}boom"
    );
    let said_nothing = ask_sh("cat > /dev/null; printf accepted", Duration::from_secs(20))
        .expect_err("nothing on the socket");
    assert!(
        matches!(&said_nothing, AskError::Failed { answer, .. } if answer.is_empty()),
        "{said_nothing:?}"
    );
}

/// An answer longer than [`MAX_VERDICT`] is cut there and fails the check promptly: the
/// helper stops reading and closes its end, so the child cannot block on a full socket.
#[test]
fn an_endless_answer_fails_the_check_without_waiting_for_the_deadline() {
    let started = Instant::now();
    let failed = ask_sh("cat > /dev/null; yes accepted >&0", Duration::from_secs(60))
        .expect_err("not a verdict");
    assert!(
        matches!(&failed, AskError::Failed { answer, .. }
            if answer.len() <= MAX_VERDICT && answer.starts_with("accepted\naccepted")),
        "{failed:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(50),
        "{:?}",
        started.elapsed()
    );
}

/// At the deadline the child is killed with every process below it, including one in a
/// session of its own (as pam_exec runs its programs) and one whose parent exited (it was
/// re-parented to the child, a subreaper). Seen failing without the subreaper (the orphan
/// survived) and without the tree kill (both survived).
#[test]
fn at_the_deadline_the_child_and_everything_it_started_are_killed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let at = |f: &str| dir.path().join(f).display().to_string();
    let script = format!(
        "setsid sh -c 'echo $$ > {direct}; exec sleep 300' & \
         sh -c \"setsid sh -c 'echo \\$\\$ > {orphan}; exec sleep 301' &\"; \
         echo $$ > {me}; sleep 300",
        direct = at("direct"),
        orphan = at("orphan"),
        me = at("me"),
    );
    let started = Instant::now();
    let failed = ask_sh(&script, Duration::from_secs(4)).expect_err("a hung child");
    assert_eq!(
        failed.to_string(),
        "the PAM stack did not answer within 4 s"
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    for f in ["me", "direct", "orphan"] {
        let pid = std::fs::read_to_string(at(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
        assert!(gone(&pid), "{f} ({}) survived the deadline", pid.trim());
    }
}

/// A child that dies without answering while a process it forked (a module's, without exec)
/// still holds the socket is reported as the crash it is, at once — not as a timeout at the
/// deadline, with nothing left to kill.
#[test]
fn a_child_that_crashes_is_reported_at_once_though_its_fork_holds_the_socket() {
    let dir = tempfile::tempdir().expect("tempdir");
    let held = dir.path().join("held").display().to_string();
    // The background sleep keeps the socket (from fd 3: sh gives an asynchronous list
    // /dev/null as its stdin before any redirection), then the child kills itself.
    let script = format!("exec 3<&0; sleep 8 0<&3 3<&- & echo $! > {held}; kill -9 $$");
    let started = Instant::now();
    let failed = ask_sh(&script, Duration::from_secs(6)).expect_err("a crashed child");
    let took = started.elapsed();
    if let Ok(pid) = std::fs::read_to_string(&held) {
        let _ = Command::new("kill").arg(pid.trim()).status();
    }
    assert!(
        matches!(&failed, AskError::Failed { status, .. } if status.code().is_none()),
        "{failed}"
    );
    assert!(took < Duration::from_secs(3), "{took:?}");
}
