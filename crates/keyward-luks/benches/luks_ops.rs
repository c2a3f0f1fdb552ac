//! Grant, rekey and verify with the service-secret KDF (PBKDF2-SHA512, 1000 iterations), each
//! as a ratio against stock cryptsetup doing the same header work with the same PBKDF
//! parameters, measured in the same run on the same image:
//!
//! | keyward        | baseline                                              |
//! |----------------|-------------------------------------------------------|
//! | grant          | `cryptsetup luksAddKey`                               |
//! | rekey          | `cryptsetup luksAddKey` + `cryptsetup luksKillSlot`   |
//! | verify         | `cryptsetup open --test-passphrase --key-slot N`      |
//!
//! keyward is timed twice: in-process (how the helper calls it) and as a process
//! (`keyward-luks-tool`, start-up included, as cryptsetup is). Medians of interleaved runs;
//! the machine is noisy, so only the ratios mean anything. Target: every ratio ≤ 1.10.
#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use keyward_core::kdf::KdfPolicy;
use keyward_core::store::GrantRequest;
use keyward_core::Authority;
use keyward_core::{Role, Secret, SlotId, Uid, UnlockStore, UserName};

const ROUNDS: usize = 15;
const ITER: &str = "1000";

fn run(cmd: &mut Command, stdin: &[u8]) -> std::process::Output {
    let mut c = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin.take().unwrap().write_all(stdin).unwrap();
    let out = c.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn timed(f: impl FnOnce()) -> Duration {
    let t = Instant::now();
    f();
    t.elapsed()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn add_key(img: &Path, keyfile: &Path, new: &[u8]) {
    run(
        Command::new("cryptsetup")
            .args([
                "luksAddKey",
                "--batch-mode",
                "--pbkdf",
                "pbkdf2",
                "--hash",
                "sha512",
            ])
            .args(["--pbkdf-force-iterations", ITER, "--key-file"])
            .arg(keyfile)
            .arg(img)
            .arg("-"),
        new,
    );
}

fn kill_slot(img: &Path, slot: SlotId) {
    run(
        Command::new("cryptsetup")
            .args(["luksKillSlot", "--batch-mode"])
            .arg(img)
            .arg(slot.to_string()),
        b"",
    );
}

fn test_pass(img: &Path, slot: SlotId, pass: &[u8]) {
    run(
        Command::new("cryptsetup")
            .args(["open", "--test-passphrase", "--key-slot", &slot.to_string()])
            .arg(img)
            .args(["--key-file", "-"]),
        pass,
    );
}

fn slot_opening(store: &mut keyward_luks::LuksStore, pass: &Secret) -> SlotId {
    let state = store.state().unwrap();
    state
        .slots
        .iter()
        .map(|s| s.id)
        .find(|s| store.verify(*s, pass).unwrap())
        .unwrap()
}

fn tool() -> PathBuf {
    // Built by `cargo bench` alongside this bench (same profile directory).
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap();
    dir.join("keyward-luks-tool")
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("bench.img");
    std::fs::File::create(&img)
        .unwrap()
        .set_len(32 << 20)
        .unwrap();
    run(
        Command::new("cryptsetup")
            .args([
                "luksFormat",
                "--batch-mode",
                "--type",
                "luks2",
                "--pbkdf",
                "pbkdf2",
                "--hash",
                "sha512",
            ])
            .args(["--pbkdf-force-iterations", ITER])
            .arg(&img)
            .args(["--key-file", "-"]),
        b"install",
    );
    let lock = dir.path().join("bench.lock");
    let mut store = keyward_luks::open(&img, &lock, KdfPolicy::default()).unwrap();
    let service = keyward_sys::random::service_secret().unwrap();
    let req = |role| GrantRequest {
        role,
        pending: false,
    };
    store
        .grant(
            &req(Role::Service),
            Authority::Holder(&Secret::copy_from(b"install")),
            &service,
        )
        .unwrap();
    // The baseline authenticates with the same service secret, from a 0600 key file.
    let keyfile = dir.path().join("service.key");
    std::fs::write(&keyfile, service.expose()).unwrap();
    // Rights are random keys here, so the KDF is the service-secret one for both sides.
    let recovery = |n: usize| Role::User {
        name: UserName::parse(&format!("bench{n}")).unwrap(),
        uid: Uid::new(5000 + u32::try_from(n).unwrap()).unwrap(),
    };
    let fast = KdfPolicy {
        danger_fast_kdf: true,
        ..KdfPolicy::default()
    };
    let mut store = keyward_luks::open(&img, &lock, fast).unwrap();
    let tool = tool();
    let tool_ok = tool.exists();

    let (mut base_grant, mut kw_grant, mut kw_grant_proc) = (vec![], vec![], vec![]);
    let (mut base_rekey, mut kw_rekey) = (vec![], vec![]);
    let (mut base_verify, mut kw_verify, mut kw_verify_proc) = (vec![], vec![], vec![]);
    for n in 0..ROUNDS {
        let pass = Secret::from_string(format!("bench pass {n}"));
        let pass2 = Secret::from_string(format!("bench pass {n} b"));

        // Baseline grant, rekey, verify.
        base_grant.push(timed(|| add_key(&img, &keyfile, pass.expose())));
        let s = slot_opening(&mut store, &pass);
        base_verify.push(timed(|| test_pass(&img, s, pass.expose())));
        base_rekey.push(timed(|| {
            add_key(&img, &keyfile, pass2.expose());
            kill_slot(&img, s);
        }));
        let s2 = slot_opening(&mut store, &pass2);
        kill_slot(&img, s2);

        // keyward in-process.
        let mut slot = SlotId::new(0).unwrap();
        kw_grant.push(timed(|| {
            slot = store
                .grant(&req(recovery(n)), Authority::Service(&service), &pass)
                .unwrap();
        }));
        kw_verify.push(timed(|| assert!(store.verify(slot, &pass).unwrap())));
        kw_rekey.push(timed(|| {
            slot = store
                .rekey(slot, Authority::Service(&service), &pass2)
                .unwrap();
        }));
        if tool_ok {
            let input = [service.expose(), b"\n", pass.expose(), b"\n"].concat();
            kw_verify_proc.push(timed(|| {
                run(
                    Command::new(&tool)
                        .arg(&img)
                        .arg(&lock)
                        .args(["verify", &slot.to_string()]),
                    pass2.expose(),
                );
            }));
            store.revoke(slot).unwrap();
            kw_grant_proc.push(timed(|| {
                run(
                    Command::new(&tool)
                        .arg("--danger-fast-kdf")
                        .arg(&img)
                        .arg(&lock)
                        .args(["grant-user", &format!("bench{n}"), &(5000 + n).to_string()]),
                    &input,
                );
            }));
            let s = slot_opening(&mut store, &pass);
            store.revoke(s).unwrap();
        } else {
            store.revoke(slot).unwrap();
        }
    }

    println!("keyward-luks benchmark: {ROUNDS} rounds, PBKDF2-SHA512 {ITER} iterations, medians");
    println!(
        "{:<28} {:>12} {:>12} {:>8}",
        "operation", "keyward", "cryptsetup", "ratio"
    );
    let row = |name: &str, kw: &Vec<Duration>, base: &Vec<Duration>| {
        if kw.is_empty() {
            return;
        }
        let (k, b) = (median(kw.clone()), median(base.clone()));
        let ratio = k.as_secs_f64() / b.as_secs_f64();
        let verdict = if ratio <= 1.10 { "ok" } else { "over target" };
        println!(
            "{name:<28} {:>10.2}ms {:>10.2}ms {ratio:>7.2}x  {verdict}",
            k.as_secs_f64() * 1e3,
            b.as_secs_f64() * 1e3
        );
    };
    row("grant (in-process)", &kw_grant, &base_grant);
    row("grant (process)", &kw_grant_proc, &base_grant);
    row("rekey (in-process)", &kw_rekey, &base_rekey);
    row("verify (in-process)", &kw_verify, &base_verify);
    row("verify (process)", &kw_verify_proc, &base_verify);
    if !tool_ok {
        println!("(keyward-luks-tool not built next to the bench: run `cargo build --release -p keyward-luks` for process rows)");
    }
}
