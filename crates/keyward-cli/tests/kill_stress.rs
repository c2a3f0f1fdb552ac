//! Kill stress (issue 14): the helper is killed with SIGKILL — a power cut from its point of
//! view — at random moments while the real CLI runs a service rotation, a standalone recovery
//! rotation (show, then the last group typed back), a grant or a revoke. Most kills come from
//! outside after a random delay; some come from a LUKS failpoint, which raises SIGKILL itself
//! (the helper's own failpoints do too; the crash tests in `rotation.rs`, `escrow_crash.rs` and
//! `op_crashes*.rs` go through every one of those in turn). After every kill the
//! helper is restarted and must prove, with stock cryptsetup, that nobody lost their way in:
//! every managed user's passphrase and the installer's passphrase open their slots, a recovery
//! key the admin was shown opens every committed recovery slot, the stored service secret opens
//! the one service slot, no slot leaked, and `keyward verify` and `keyward audit --verify` pass.
//!
//! The operations and delays come from a seeded RNG; the seed is printed and can be set with
//! `KEYWARD_STRESS_SEED` (timing still varies between runs, so a replay repeats the same
//! operations and delays, not necessarily the same interleaving). `KEYWARD_STRESS_KILLS` sets
//! the number of kills that must land while a command runs (default 40).
#![allow(clippy::unwrap_used)]

// The crate root looks for modules beside it; this one lives in its own directory so that
// cargo does not take it for a test target.
#[path = "kill_stress/checks.rs"]
mod checks;
mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use checks::{check, holders, status, Findings, Model};
use common::*;

/// Managed users; they exist only in the helper's private copy of /etc/passwd (uids 2101…).
const USERS: &[&str] = &[
    "ksalice", "ksbob", "kscarol", "ksdave", "kserin", "ksfrank", "ksgrace", "ksheidi",
];

/// Give the helper (only) accounts for [`USERS`]: a private mount namespace where copies of
/// /etc/passwd and /etc/group with those users appended are bound over the real ones. The
/// machine's own files are never written; the helper keeps its pid (`exec` all the way), so
/// killing the child kills the helper itself.
fn private_accounts(inst: &mut Instance) {
    let dir = inst.path("etc");
    std::fs::create_dir(&dir).unwrap();
    let mut passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    let mut group = std::fs::read_to_string("/etc/group").unwrap();
    for (i, u) in USERS.iter().enumerate() {
        let id = 2101 + i;
        passwd.push_str(&format!(
            "{u}:x:{id}:{id}::/nonexistent:/usr/sbin/nologin\n"
        ));
        group.push_str(&format!("{u}:x:{id}:\n"));
    }
    std::fs::write(dir.join("passwd"), passwd).unwrap();
    std::fs::write(dir.join("group"), group).unwrap();
    chmod(&dir.join("passwd"), 0o644);
    chmod(&dir.join("group"), 0o644);
    inst.helper_in_namespace(
        r#"mount --bind "$0/passwd" /etc/passwd && mount --bind "$0/group" /etc/group && exec "$@""#,
        &[&dir.display().to_string()],
    );
}

/// splitmix64: small, seedable, good enough to pick operations and delays.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Op {
    Grant(String),
    Revoke(String),
    ServiceRotate,
    RecoveryRotate,
}

impl Op {
    fn kind(&self) -> &'static str {
        match self {
            Op::Grant(_) => "grant",
            Op::Revoke(_) => "revoke",
            Op::ServiceRotate => "service-rotate",
            Op::RecoveryRotate => "recovery-rotate",
        }
    }

    /// LUKS failpoints on this operation's path: they raise SIGKILL, like the outside kill.
    fn failpoints(&self) -> &'static [&'static str] {
        const GRANT: &[&str] = &[
            "grant.intent-written",
            "grant.slot-added",
            "grant.verified",
            "grant.committed",
        ];
        const ALL: &[&str] = &[
            "grant.intent-written",
            "grant.slot-added",
            "grant.verified",
            "grant.committed",
            "revoke.intent-written",
            "revoke.slot-destroyed",
        ];
        match self {
            Op::Grant(_) => GRANT,
            Op::Revoke(_) => &["revoke.intent-written", "revoke.slot-destroyed"],
            Op::ServiceRotate | Op::RecoveryRotate => ALL,
        }
    }
}

/// What the CLI did.
struct Outcome {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    /// The recovery key it printed, if it got that far.
    shown_key: Option<String>,
    /// When it exited, after the start of the run.
    exited_after: Duration,
}

/// A recovery key as `keyward recovery rotate --show` prints it.
fn key_in(line: &str) -> Option<String> {
    let w = line.trim();
    (w.len() == 71 && w.matches('-').count() == 7).then(|| w.to_owned())
}

/// Run the CLI for `op` (in the calling thread); `pass` is the new passphrase of a grant.
fn run_op(config: PathBuf, op: Op, pass: String, start: Instant) -> Outcome {
    let args: Vec<String> = match &op {
        Op::Grant(u) => vec![
            "grant".into(),
            "data".into(),
            u.clone(),
            "--passphrase-stdin".into(),
        ],
        Op::Revoke(u) => vec!["revoke".into(), "data".into(), u.clone()],
        Op::ServiceRotate => vec!["service".into(), "rotate".into(), "data".into()],
        Op::RecoveryRotate => ["recovery", "rotate", "data", "--show", "--confirm-stdin"]
            .map(String::from)
            .to_vec(),
    };
    let mut child = Command::new(bin("keyward"))
        .arg("--config")
        .arg(&config)
        .args(&args)
        .env_remove("KEYWARD_CONFIG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take();
    if let Op::Grant(_) = op {
        let _ = stdin
            .take()
            .unwrap()
            .write_all(format!("{pass}\n").as_bytes());
    }
    // Read what it prints; type the last group back as soon as the key is shown.
    let mut stdout = String::new();
    let mut shown_key = None;
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let Ok(line) = line else { break };
        if shown_key.is_none() {
            if let Some(key) = key_in(&line) {
                let group = key.rsplit('-').next().unwrap().to_owned();
                if let Some(mut s) = stdin.take() {
                    let _ = s.write_all(format!("{group}\n").as_bytes());
                }
                shown_key = Some(key);
            }
        }
        stdout.push_str(&line);
        stdout.push('\n');
    }
    drop(stdin);
    let mut stderr = String::new();
    let _ = child.stderr.take().unwrap().read_to_string(&mut stderr);
    let status = child.wait().unwrap();
    Outcome {
        code: status.code(),
        stdout,
        stderr,
        shown_key,
        exited_after: start.elapsed(),
    }
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|s| {
        s.trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name} must be a number, not {s:?}"))
    })
}

/// Run `op` to completion with no kill; returns how long the CLI took, and what the checks
/// found.
fn run_clean(inst: &mut Instance, model: &mut Model, op: Op) -> (Duration, Findings) {
    let pass = model.next_passphrase(&op);
    let start = Instant::now();
    let out = run_op(inst.config.clone(), op.clone(), pass.clone(), start);
    assert_eq!(out.code, Some(0), "{op:?}: {} {}", out.stdout, out.stderr);
    let f = check(inst, model, &op, &out, &pass);
    (out.exited_after, f)
}

/// How the helper died.
#[derive(Debug, PartialEq, Eq)]
enum Kill {
    /// SIGKILL from outside while the command ran.
    Outside,
    /// SIGKILL from outside, but the command had already finished.
    AfterExit,
    /// The LUKS failpoint raised SIGKILL.
    Failpoint(&'static str),
    /// The failpoint was not on the command's path; SIGKILL from outside after it.
    FailpointMissed(&'static str),
    /// The helper died of something else while armed with a failpoint (not expected).
    HelperEnded(String),
}

/// Run `op` through the CLI and kill the helper: after `delay`, or, with `failpoint`, where
/// the helper (restarted armed with it) raises SIGKILL itself. The helper is dead on return.
fn kill_during(
    inst: &mut Instance,
    op: &Op,
    pass: &str,
    failpoint: Option<&'static str>,
    delay: Duration,
) -> (Outcome, Kill) {
    if let Some(fp) = failpoint {
        inst.stop_helper();
        inst.helper_env = vec![("KEYWARD_FAILPOINT".into(), fp.into())];
        assert!(inst.try_start(), "{}", inst.helper_stderr());
        inst.helper_env.clear();
    }
    let start = Instant::now();
    let (config, op2, pass2) = (inst.config.clone(), op.clone(), pass.to_owned());
    let cli = std::thread::spawn(move || run_op(config, op2, pass2, start));
    let kill = match failpoint {
        Some(fp) => {
            while !cli.is_finished() {
                std::thread::sleep(Duration::from_millis(2));
            }
            match inst.helper.as_mut().unwrap().try_wait().unwrap() {
                Some(st) if st.signal() == Some(9) => Kill::Failpoint(fp),
                Some(st) => Kill::HelperEnded(st.to_string()),
                None => Kill::FailpointMissed(fp),
            }
        }
        None => {
            std::thread::sleep(delay);
            let at = start.elapsed();
            inst.stop_helper();
            let out = cli.join().unwrap();
            let kill = if at < out.exited_after {
                Kill::Outside
            } else {
                Kill::AfterExit
            };
            return (out, kill);
        }
    };
    inst.stop_helper();
    (cli.join().unwrap(), kill)
}

#[test]
fn sigkill_the_helper_at_random_moments() {
    let seed = env_u64("KEYWARD_STRESS_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
    });
    let kills_wanted = env_u64("KEYWARD_STRESS_KILLS").unwrap_or(40);
    println!("kill stress: seed {seed} (replay with KEYWARD_STRESS_SEED={seed})");
    let mut rng = Rng(seed);
    let began = Instant::now();

    let mut inst = Instance::prepare();
    private_accounts(&mut inst);
    // The users this test grants are the managed ones, so `keyward verify` judges them.
    set_policy(&inst, &format!("managed_users = {USERS:?}"));
    let mut inst = inst.start();
    inst.bootstrap();
    let mut model = Model {
        users: BTreeMap::new(),
        recovery: Vec::new(),
        shown: Vec::new(),
        audit_breaks: 0,
        slot0: inst.metadata()["keyslots"]["0"].clone(),
        first_audit_line: inst.audit_lines()[0].clone(),
        grants: 0,
    };
    // Settle into a populated volume, timing each kind of operation: a kill's delay is drawn
    // from 0 to a little over how long that kind takes.
    let mut took = BTreeMap::<&'static str, Duration>::new();
    for op in [
        Op::Grant(USERS[0].into()),
        Op::Grant(USERS[1].into()),
        Op::Grant(USERS[2].into()),
        Op::Revoke(USERS[1].into()),
        Op::ServiceRotate,
        Op::RecoveryRotate,
    ] {
        let kind = op.kind();
        let (d, f) = run_clean(&mut inst, &mut model, op.clone());
        assert!(f.failures.is_empty(), "{op:?}: {:?}", f.failures);
        took.insert(kind, d.max(took.get(kind).copied().unwrap_or_default()));
    }
    println!("clean run times: {took:?}");

    let mut findings: Vec<(u64, String, String)> = Vec::new();
    let mut lockouts = 0;
    let mut notes = BTreeMap::<String, usize>::new();
    let (mut during, mut after, mut by_failpoint, mut iterations) = (0u64, 0u64, 0u64, 0u64);
    while during < kills_wanted && iterations < kills_wanted * 3 {
        iterations += 1;
        let without: Vec<&str> = USERS
            .iter()
            .copied()
            .filter(|u| !model.users.contains_key(*u))
            .collect();
        let with: Vec<String> = model.users.keys().cloned().collect();
        let op = match rng.below(4) {
            0 if !without.is_empty() => Op::Grant((*rng.pick(&without)).to_owned()),
            1 if !with.is_empty() => Op::Revoke(rng.pick(&with).clone()),
            0 | 2 => Op::ServiceRotate,
            _ => Op::RecoveryRotate,
        };
        let pass = model.next_passphrase(&op);
        // One kill in four is a LUKS failpoint on the operation's path (SIGKILL at a named
        // step); the others come from outside at a random delay.
        let failpoint = (rng.below(4) == 0).then(|| *rng.pick(op.failpoints()));
        let limit = took[op.kind()].mul_f64(1.2);
        let delay = Duration::from_micros(rng.below(limit.as_micros() as u64 + 1));
        let (out, kill) = kill_during(&mut inst, &op, &pass, failpoint, delay);
        let how = match &kill {
            Kill::Outside => format!("SIGKILL at {delay:.1?} of <= {limit:.1?}"),
            Kill::AfterExit => format!("SIGKILL at {delay:.1?}, after the command"),
            Kill::Failpoint(fp) => format!("SIGKILL at failpoint {fp}"),
            Kill::FailpointMissed(fp) => format!("failpoint {fp} not reached; SIGKILL after"),
            Kill::HelperEnded(st) => format!("helper ended by itself: {st}"),
        };
        match &kill {
            Kill::Outside | Kill::Failpoint(_) => during += 1,
            Kill::AfterExit | Kill::FailpointMissed(_) => after += 1,
            Kill::HelperEnded(_) => {
                during += 1;
                findings.push((iterations, op.kind().into(), how.clone()));
            }
        }
        by_failpoint += u64::from(matches!(kill, Kill::Failpoint(_)));
        if kill == Kill::AfterExit {
            // The command had finished: its time refines the delay range for its kind.
            let e = took.get_mut(op.kind()).unwrap();
            *e = (*e + out.exited_after) / 2;
        }
        if !matches!(out.code, Some(0) | Some(5)) {
            findings.push((
                iterations,
                op.kind().into(),
                format!(
                    "cli exit {:?} (not 0, nor 5 for a dead helper): {}",
                    out.code,
                    out.stderr.trim()
                ),
            ));
        }

        if !inst.try_start() {
            panic!(
                "seed {seed}, kill {iterations} ({op:?}, {how}): the helper does not restart: {}",
                inst.helper_stderr()
            );
        }
        let f = check(&mut inst, &mut model, &op, &out, &pass);
        println!(
            "#{iterations:>2} {:<16} {how:<48} cli exit {:?} -> {}",
            format!("{op:?}").chars().take(16).collect::<String>(),
            out.code,
            if f.failures.is_empty() {
                "ok".to_owned()
            } else {
                format!("{} failed checks", f.failures.len())
            }
        );
        lockouts += f.lockouts.len();
        for what in f.failures {
            println!("      {what}");
            findings.push((iterations, format!("{op:?} ({how})"), what));
        }
        for what in f.notes {
            println!("      note: {what}");
            *notes.entry(what).or_default() += 1;
        }
    }

    // Finally, with no kill: both rotations complete and leave exactly one slot of each kind.
    for op in [Op::ServiceRotate, Op::RecoveryRotate] {
        let (_, f) = run_clean(&mut inst, &mut model, op.clone());
        lockouts += f.lockouts.len();
        for what in f.failures {
            println!("   final {op:?}: {what}");
            findings.push((iterations + 1, format!("{op:?} (final, no kill)"), what));
        }
    }
    let vol = status(&inst).unwrap();
    let recovery = holders(&vol, "recovery");
    if recovery.len() != 1 {
        findings.push((
            iterations + 1,
            "RecoveryRotate (final, no kill)".into(),
            format!(
                "{} recovery slots after a clean rotation: {recovery:?}",
                recovery.len()
            ),
        ));
    }

    let discontinuities = inst
        .audit_lines()
        .iter()
        .filter(|l| l.contains("\"audit-discontinuity\""))
        .count();
    // What the helper repaired at its starts, each on the record.
    let repairs = |op: &str| {
        inst.audit_lines()
            .iter()
            .filter(|l| l.contains(&format!("\"op\":\"{op}\"")))
            .count()
    };
    let (headers, torn, recovery) = (
        repairs("header-repair"),
        repairs("audit-repair"),
        repairs("recovery-reconcile"),
    );
    println!(
        "kill stress, seed {seed}: {} kills ({during} while a command ran, {by_failpoint} of them \
         at a LUKS failpoint; {after} after it had finished), {lockouts} lockouts, {} failed \
         checks, {discontinuities} audit-discontinuity records; repaired at start: {headers} \
         headers, {torn} torn audit lines, {recovery} interrupted recovery commits; {:.1} s",
        during + after,
        findings.len(),
        began.elapsed().as_secs_f64()
    );
    for (what, n) in &notes {
        println!("note, {n}x: {what}");
    }
    // One line per distinct failure, with where it first appeared and how often.
    let mut distinct: Vec<(String, u64, String, usize)> = Vec::new();
    for (i, op, what) in &findings {
        match distinct.iter_mut().find(|d| d.0 == *what) {
            Some(d) => d.3 += 1,
            None => distinct.push((what.clone(), *i, op.clone(), 1)),
        }
    }
    let report: Vec<String> = distinct
        .iter()
        .map(|(what, i, op, n)| format!("first at kill {i} ({op}), {n}x: {what}"))
        .collect();
    assert!(
        during >= kills_wanted,
        "seed {seed}: only {during} kills landed while a command ran"
    );
    assert!(
        findings.is_empty(),
        "seed {seed} (replay with KEYWARD_STRESS_SEED={seed}): {lockouts} lockouts, {} failed \
         checks:\n{}",
        findings.len(),
        report.join("\n")
    );
}
