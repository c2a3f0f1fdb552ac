//! Login capture on a Mac (issue 19): the request the authorization plugin sends
//! (`helper_client::send_login_capture`, its own client code) reaches the real helper serving
//! the simulated Mac. The helper runs in its own mount namespace over a copy of /etc in which
//! the Mac's people exist for NSS with the Mac's uids and passwords (as on a Mac, where NSS is
//! the Mac's directory): `alice` (502, in `keyward-users`), `admin` (501, not managed).

use std::time::{Duration, Instant};

use keyward_core::{Secret, UserName};

use super::*;

/// The instance's helper sees `etc-work` as /etc; `alice` is managed through `keyward-users`.
fn with_mac_people(inst: &mut Instance) {
    let script = r#"
set -euo pipefail
cd "$T"
cp -a /etc etc-work
mount --bind etc-work /etc
groupadd keyward-users
useradd --no-create-home --uid 501 admin
useradd --no-create-home --uid 502 --groups keyward-users alice
printf 'admin:admin-pw\nalice:alice-pw\n' | chpasswd
"#;
    run_namespace_script(inst, script);
    set_policy(inst, "managed_group = \"keyward-users\"");
    // A token keyward granted goes at the next login of a user who is no longer managed.
    set_policy(inst, "revoke_unmanaged = true");
    inst.helper_in_namespace(
        r#"mount --bind "$0" /etc && exec "$@""#,
        &[&inst.path("etc-work").display().to_string()],
    );
}

/// The config without the LUKS2 volume `data`: a Mac's.
fn mac_only(inst: &Instance) {
    let cfg = std::fs::read_to_string(&inst.config).unwrap();
    let start = cfg.find("[[volume]]\nname = \"data\"").unwrap();
    let end = start + cfg[start..].find("\n[[volume]]").unwrap() + 1;
    std::fs::write(&inst.config, format!("{}{}", &cfg[..start], &cfg[end..])).unwrap();
}

/// What the plugin does at a console login.
fn capture(inst: &Instance, user: &str, password: &str) {
    keyward_sys::helper_client::send_login_capture(
        &inst.socket(),
        UserName::parse(user).unwrap(),
        &Secret::copy_from(password.as_bytes()),
    )
    .unwrap();
}

/// The `n`th login-capture record of `user` (1-based), once the job wrote it.
fn nth_capture(inst: &Instance, user: &str, n: usize) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let records: Vec<Value> = inst
            .audit_lines()
            .iter()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .filter(|r| r["op"] == "login-capture" && r["user"] == user)
            .collect();
        if let Some(r) = records.get(n - 1) {
            return r.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no login-capture record {n} for {user}: {}\n{}",
            inst.audit_lines().join("\n"),
            inst.helper_stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn result(r: &Value) -> &str {
    r["result"].as_str().unwrap()
}

/// The user holders of `vol` named `user`.
fn user_holders<'a>(status: &'a Value, vol: &str, user: &str) -> Vec<&'a Value> {
    volume(status, vol)["holders"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["role"] == "user" && h["user"] == user)
        .collect()
}

fn audit_verifies(inst: &Instance) {
    let out = inst.keyward(&["audit", "--verify"], b"");
    assert_eq!(code(&out), Some(0), "audit --verify: {}", stderr(&out));
}

#[test]
fn a_login_on_a_mac_grants_a_secure_token_once_and_revokes_it_when_the_policy_says_so() {
    let mut inst = instance();
    mac_only(&inst);
    with_mac_people(&mut inst);
    let inst = inst.start();
    assert_eq!(code(&bootstrap_mac(&inst)), Some(0));

    // A user the policy does not manage gets nothing; their own token stays as it was.
    capture(&inst, "admin", "admin-pw");
    let r = nth_capture(&inst, "admin", 1);
    assert!(result(&r).starts_with("error:Refused: not managed"), "{r}");
    let status = status_json(&inst);
    assert!(user_holders(&status, "mac", "admin").is_empty(), "{status}");

    // A wrong password: sysadminctl refuses, nothing is granted, and the record says so.
    capture(&inst, "alice", "not alice's password");
    let r = nth_capture(&inst, "alice", 1);
    assert!(result(&r).starts_with("ok: mac: failed: "), "{r}");
    assert!(
        result(&r).contains("authentication"),
        "the refusal is named: {r}"
    );
    assert!(user_holders(&status_json(&inst), "mac", "alice").is_empty());

    // The login grants alice a Secure Token from the service account.
    capture(&inst, "alice", "alice-pw");
    let r = nth_capture(&inst, "alice", 2);
    assert!(
        result(&r).starts_with("ok: mac: granted a Secure Token (slot "),
        "{r}"
    );
    assert_eq!(r["caller"], "admin", "{r}");
    assert_eq!(r["uid"], 0, "{r}");
    let status = status_json(&inst);
    let alice = user_holders(&status, "mac", "alice");
    assert_eq!(alice.len(), 1, "{status}");
    assert_eq!(alice[0]["uid"], 502);
    assert_eq!(alice[0]["kdf"], "secure-token");
    assert_eq!(alice[0]["state"], "active");
    assert_eq!(alice[0]["standing"], "managed");
    let slot = alice[0]["slot"].clone();

    // The next login has nothing to do, and says so.
    capture(&inst, "alice", "alice-pw");
    let r = nth_capture(&inst, "alice", 3);
    assert_eq!(
        result(&r),
        format!("ok: mac: holds its Secure Token (slot {slot}); nothing to do"),
        "{r}"
    );
    assert_eq!(user_holders(&status_json(&inst), "mac", "alice").len(), 1);

    // alice leaves keyward-users: at her next login her token goes, with her password — not
    // with a wrong one (sysadminctl refuses; reported, the token stays).
    in_helper_ns(&inst, "gpasswd -d alice keyward-users >/dev/null");
    capture(&inst, "alice", "wrong");
    let r = nth_capture(&inst, "alice", 4);
    assert!(result(&r).starts_with("ok: mac: failed: "), "{r}");
    assert_eq!(user_holders(&status_json(&inst), "mac", "alice").len(), 1);
    capture(&inst, "alice", "alice-pw");
    let r = nth_capture(&inst, "alice", 5);
    assert_eq!(
        result(&r),
        format!(
            "ok: mac: not-managed: revoked its Secure Token (slot {slot}) with the login password"
        ),
        "{r}"
    );
    let status = status_json(&inst);
    assert!(user_holders(&status, "mac", "alice").is_empty(), "{status}");
    assert_eq!(volume(&status, "mac")["violations"], Value::Array(vec![]));
    // And nothing more after that.
    capture(&inst, "alice", "alice-pw");
    let r = nth_capture(&inst, "alice", 6);
    assert!(result(&r).starts_with("error:Refused: not managed"), "{r}");

    audit_verifies(&inst);
    let text = inst.audit_lines().join("\n")
        + &std::fs::read_to_string(inst.path("state/macos-registry.json")).unwrap();
    for secret in ["alice-pw", "admin-pw", "not alice's password"] {
        assert!(!text.contains(secret), "{secret} written down");
    }
}

#[test]
fn one_login_serves_a_luks2_volume_and_a_mac_volume_alike() {
    let mut inst = instance();
    with_mac_people(&mut inst);
    let inst = inst.start();
    inst.bootstrap();
    assert_eq!(code(&bootstrap_mac(&inst)), Some(0));

    // A wrong password: the system's check keeps it from the LUKS2 slot, sysadminctl from the
    // Mac; both said in one record.
    capture(&inst, "alice", "wrong");
    let r = nth_capture(&inst, "alice", 1);
    assert!(result(&r).starts_with("ok: "), "{r}");
    assert!(result(&r).contains("data: nothing done: "), "{r}");
    assert!(result(&r).contains("mac: failed: "), "{r}");

    capture(&inst, "alice", "alice-pw");
    let r = nth_capture(&inst, "alice", 2);
    assert!(result(&r).contains("data: granted slot "), "{r}");
    assert!(
        result(&r).contains("mac: granted a Secure Token (slot "),
        "{r}"
    );
    let status = status_json(&inst);
    let data = user_holders(&status, "data", "alice");
    let mac = user_holders(&status, "mac", "alice");
    assert_eq!((data.len(), mac.len()), (1, 1), "{status}");
    assert!(inst.opens(data[0]["slot"].as_u64().unwrap(), b"alice-pw"));
    assert_eq!(mac[0]["kdf"], "secure-token");

    capture(&inst, "alice", "alice-pw");
    let r = nth_capture(&inst, "alice", 3);
    assert!(result(&r).contains("data: slot "), "{r}");
    assert!(result(&r).contains("works"), "{r}");
    assert!(result(&r).contains("mac: holds its Secure Token"), "{r}");
    audit_verifies(&inst);
}
