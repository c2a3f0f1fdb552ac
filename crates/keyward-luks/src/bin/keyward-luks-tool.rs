//! `keyward-luks-tool`: a low-level developer tool that runs keyward's LUKS2 orderings directly
//! on a device or image file, without the helper. Secrets are read from stdin, one per line
//! (authority first, then the new secret) — never from argv. Output is JSON on stdout.
//!
//! ```text
//! keyward-luks-tool [OPTIONS] DEVICE LOCKFILE status              # JSON
//! keyward-luks-tool [OPTIONS] DEVICE LOCKFILE table               # the same, for people
//! keyward-luks-tool [OPTIONS] DEVICE LOCKFILE grant-user NAME UID   # stdin: authority, passphrase
//! keyward-luks-tool [OPTIONS] DEVICE LOCKFILE grant-service         # stdin: holder passphrase, service secret; slot made `ignore`
//! keyward-luks-tool [OPTIONS] DEVICE LOCKFILE rekey SLOT            # stdin: authority, new passphrase
//! keyward-luks-tool [OPTIONS] DEVICE LOCKFILE revoke SLOT
//! keyward-luks-tool [OPTIONS] DEVICE LOCKFILE verify SLOT           # stdin: secret
//! keyward-luks-tool [OPTIONS] DEVICE LOCKFILE reconcile
//! ```
//! The authority is the service secret, unless `--holder` says it is a current holder's
//! passphrase. `--danger-fast-kdf` uses PBKDF2 for passphrases (tests only);
//! `--argon2-time-ms N` and `--argon2-memory-kib N` override the argon2id defaults;
//! `--boot-budget-ms N` sets `[kdf] boot_budget_ms` (scripts/bench-boot).
//! Exit codes follow the keyward CLI contract: 0 ok, 1 error, 2 usage, 3 authentication
//! failed, 4 refused by a safety rule, 6 busy.

use std::io::BufRead;
use std::path::Path;
use std::process::ExitCode;

use keyward_core::kdf::KdfPolicy;
use keyward_core::store::GrantRequest;
use keyward_core::{Authority, Role, Secret, SlotId, StoreError, Uid, UnlockStore, UserName};
use serde_json::json;
use zeroize::Zeroizing;

fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut flags = Flags::default();
    while let Some(a) = args.first().cloned() {
        let number = |args: &mut Vec<String>| -> Option<u32> {
            args.remove(0);
            args.first().and_then(|n| n.parse().ok())
        };
        match a.as_str() {
            "--danger-fast-kdf" => flags.fast = true,
            "--holder" => flags.holder = true,
            "--argon2-time-ms" => flags.argon2_time_ms = number(&mut args),
            "--argon2-memory-kib" => flags.argon2_memory_kib = number(&mut args),
            "--boot-budget-ms" => flags.boot_budget_ms = number(&mut args),
            _ => break,
        }
        if !args.is_empty() {
            args.remove(0);
        }
    }
    match run(&args, flags) {
        Ok(out) => {
            if !out.is_null() {
                println!("{out}");
            }
            ExitCode::SUCCESS
        }
        Err(Failure::Usage(m)) => {
            eprintln!("keyward-luks-tool: {m}");
            ExitCode::from(2)
        }
        Err(Failure::Store(e)) => {
            eprintln!("keyward-luks-tool: {e}");
            ExitCode::from(exit_code(&e))
        }
    }
}

#[derive(Default, Clone, Copy)]
struct Flags {
    fast: bool,
    holder: bool,
    argon2_time_ms: Option<u32>,
    argon2_memory_kib: Option<u32>,
    boot_budget_ms: Option<u32>,
}

enum Failure {
    Usage(String),
    Store(StoreError),
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        Failure::Store(e)
    }
}

fn exit_code(e: &StoreError) -> u8 {
    match e {
        StoreError::AuthenticationFailed => 3,
        StoreError::Refused(_) => 4,
        StoreError::Busy => 6,
        _ => 1,
    }
}

fn usage(m: &str) -> Failure {
    Failure::Usage(m.to_owned())
}

fn read_secret(lines: &mut impl BufRead) -> Result<Secret, Failure> {
    let mut buf = Zeroizing::new(Vec::new());
    lines
        .read_until(b'\n', &mut buf)
        .map_err(|e| usage(&format!("reading stdin: {e}")))?;
    if buf.is_empty() {
        return Err(usage("expected a secret on stdin"));
    }
    Ok(Secret::from_line(buf))
}

fn slot_arg(a: Option<&String>) -> Result<SlotId, Failure> {
    let a = a.ok_or_else(|| usage("missing SLOT"))?;
    SlotId::parse(a).map_err(|e| usage(&e.to_string()))
}

fn run(args: &[String], flags: Flags) -> Result<serde_json::Value, Failure> {
    let [device, lock, op, rest @ ..] = args else {
        return Err(usage(
            "usage: keyward-luks-tool [--danger-fast-kdf] DEVICE LOCKFILE OP [ARGS]",
        ));
    };
    let kdf = KdfPolicy {
        danger_fast_kdf: flags.fast,
        argon2_time_ms: flags.argon2_time_ms,
        argon2_max_memory_kib: flags.argon2_memory_kib,
        boot_budget_ms: flags.boot_budget_ms,
    };
    let mut store = keyward_luks::open(Path::new(device), Path::new(lock), kdf)?;
    let stdin = std::io::stdin();
    let mut input = stdin.lock();
    let grant = |role| GrantRequest {
        role,
        pending: false,
    };
    let authority = |s| {
        if flags.holder {
            Authority::Holder(s)
        } else {
            Authority::Service(s)
        }
    };
    Ok(match op.as_str() {
        "status" => status_json(&store.state()?),
        "table" => {
            print!("{}", status_table(&store.state()?));
            return Ok(serde_json::Value::Null);
        }
        "grant-user" => {
            let [name, uid] = rest else {
                return Err(usage("grant-user NAME UID"));
            };
            let name = UserName::parse(name).map_err(|e| usage(&e.to_string()))?;
            let uid: u32 = uid.parse().map_err(|_| usage("UID must be a number"))?;
            let uid = Uid::new(uid).map_err(|e| usage(&e.to_string()))?;
            let auth = read_secret(&mut input)?;
            let secret = read_secret(&mut input)?;
            let slot = store.grant(&grant(Role::User { name, uid }), authority(&auth), &secret)?;
            json!({ "slot": slot.get() })
        }
        "grant-service" => {
            let auth = read_secret(&mut input)?;
            let secret = read_secret(&mut input)?;
            let slot = store.grant(&grant(Role::Service), Authority::Holder(&auth), &secret)?;
            // As the helper does (keyward-core secret_orderings): never tried for a typed passphrase.
            store.ignore_at_boot(slot)?;
            json!({ "slot": slot.get() })
        }
        "rekey" => {
            let slot = slot_arg(rest.first())?;
            let auth = read_secret(&mut input)?;
            let secret = read_secret(&mut input)?;
            json!({ "slot": store.rekey(slot, authority(&auth), &secret)?.get() })
        }
        "revoke" => {
            store.revoke(slot_arg(rest.first())?)?;
            json!({ "revoked": true })
        }
        "verify" => {
            let slot = slot_arg(rest.first())?;
            let secret = read_secret(&mut input)?;
            json!({ "opens": store.verify(slot, &secret)? })
        }
        "reconcile" => {
            json!({ "actions": store.reconcile()?.iter().map(|a| format!("{a:?}")).collect::<Vec<_>>() })
        }
        other => {
            return Err(usage(&format!(
                "unknown operation {}",
                keyward_core::quote(other)
            )))
        }
    })
}

fn status_json(state: &keyward_core::VolumeState) -> serde_json::Value {
    let holders: Vec<_> = state
        .holders()
        .into_iter()
        .map(|h| {
            let mut v = json!({
                "slot": h.slot.get(),
                "role": h.role.label(),
                "kdf": h.kdf,
                "state": h.state.map(|s| if s.is_transitional() { "in-progress" } else if s == keyward_core::TokenState::Pending { "pending" } else { "active" }),
            });
            if let keyward_core::HolderRole::User { name, uid } = &h.role {
                v["user"] = json!(name.as_str());
                v["uid"] = json!(uid.get());
            }
            v
        })
        .collect();
    let violations: Vec<String> = keyward_core::invariants::check_state(state)
        .iter()
        .map(ToString::to_string)
        .collect();
    json!({ "holders": holders, "violations": violations })
}

fn status_table(state: &keyward_core::VolumeState) -> String {
    let mut out = format!(
        "{:<5} {:<10} {:<12} {:<14} {}\n",
        "SLOT", "ROLE", "HOLDER", "KDF", "STATE"
    );
    for h in state.holders() {
        let who = match &h.role {
            keyward_core::HolderRole::User { name, uid } => format!("{name} ({uid})"),
            _ => "-".to_owned(),
        };
        let st = match h.state {
            None => "not keyward's: never touched",
            Some(s) if s.is_transitional() => "in progress",
            Some(keyward_core::TokenState::Pending) => "pending",
            Some(_) => "active",
        };
        let line = format!(
            "{:<5} {:<10} {:<12} {:<14} {st}\n",
            h.slot,
            h.role.label(),
            who,
            h.kdf
        );
        out.push_str(&line);
    }
    for v in keyward_core::invariants::check_state(state) {
        out.push_str(&format!("warning: {v}\n"));
    }
    out
}
