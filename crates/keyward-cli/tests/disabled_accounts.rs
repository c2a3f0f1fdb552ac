//! Disabled accounts get no unlock right (issue 14): an account expired with `chage -E 0` or
//! locked with `usermod -L` is refused by the system, so keyward refuses it too — at a login
//! PAM let through its auth phase (pam_unix checks expiry only later, in the account phase), and
//! at an admin's `keyward grant` (exit 4); `verify` reports a granted user who was locked since
//! as `disabled` (and `status` shows it), and with `revoke_unmanaged` revokes the slot. Real shadow-utils and PAM, in a
//! private mount namespace with a copy of /etc.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;

const SCRIPT: &str = r#"
wait_until() { for _ in $(seq 300); do if "$@"; then return 0; fi; sleep 0.1; done; return 1; }
audit_has() { grep -q -- "$1" log/audit.jsonl; }

groupadd keyward-users
useradd --no-create-home --groups keyward-users alice
useradd --no-create-home --groups keyward-users bob
useradd --no-create-home --groups keyward-users carol
printf 'alice:alice pass\nbob:bob pass\ncarol:carol pass\n' | chpasswd
printf 'auth requisite pam_unix.so\nauth optional %s socket=%s\naccount required pam_unix.so\n' \
  "$SO" "$T/run/helper.sock" > /etc/pam.d/kwtest

start_helper
printf '%s\n' "$INSTALL_PASS" | kw bootstrap data --passphrase-stdin > /dev/null

# alice's account expired: her login reaches the module (auth phase) but gets no slot.
chage -E 0 alice
set +e; printf 'alice pass\n' | pamtester kwtest alice authenticate acct_mgmt > alice-login.out 2>&1; echo $? > alice-login.rc; set -e
wait_until audit_has 'login-capture.*alice.*disabled' && echo yes > alice-refused.ok
slot_of alice > alice-slot.out
set +e; printf 'alice pass\n' | kw grant data alice --passphrase-stdin > alice-grant.out 2>&1; echo $? > alice-grant.rc; set -e

# carol is locked: the same.
usermod -L carol
set +e; printf 'carol pass\n' | kw grant data carol --passphrase-stdin > carol-grant.out 2>&1; echo $? > carol-grant.rc; set -e

# bob holds a slot, then is locked: verify says so and, with revoke_unmanaged, revokes it.
printf 'bob pass\n' | kw grant data bob --passphrase-stdin > /dev/null
slot_of bob > bob-slot.out
kw status data > status-before-lock.out
usermod -L bob
kw status data --json > status-locked.json
kw status data > status-locked.out
set +e; kw verify data --json > verify1.json; echo $? > verify1.rc; set -e
slot_of bob > bob-kept.out
sed -i 's/^\[policy\]$/[policy]\nrevoke_unmanaged = true/' "$CFG"
stop_helper; start_helper
set +e; kw verify data --json > verify2.json; echo $? > verify2.rc; set -e
slot_of bob > bob-after.out
stop_helper
"#;

#[test]
fn expired_or_locked_accounts_get_no_unlock_right() {
    require_pamtester();
    let inst = Instance::prepare();
    run_namespace_script(&inst, &format!("{SHELL_PRELUDE}{SCRIPT}"));
    let read = |f: &str| script_output(&inst, f);
    let ctx = || script_context(&inst);
    // PAM refuses the expired account in its account phase; keyward refused it already.
    assert_ne!(read("alice-login.rc"), "0", "{}", read("alice-login.out"));
    assert_eq!(read("alice-refused.ok"), "yes", "{}", ctx());
    assert_eq!(read("alice-slot.out"), "", "an expired account got a slot");
    assert_eq!(read("alice-grant.rc"), "4", "{}", read("alice-grant.out"));
    assert!(
        read("alice-grant.out").contains("expired"),
        "{}",
        read("alice-grant.out")
    );
    assert_eq!(read("carol-grant.rc"), "4", "{}", read("carol-grant.out"));
    assert!(
        read("carol-grant.out").contains("locked"),
        "{}",
        read("carol-grant.out")
    );

    assert!(!read("bob-slot.out").is_empty(), "{}", ctx());
    // status shows where each user slot's holder stands, now.
    let st: serde_json::Value = serde_json::from_str(&read("status-locked.json")).unwrap();
    let holder = st["volumes"][0]["holders"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["user"] == "bob")
        .unwrap_or_else(|| panic!("{st}"))
        .clone();
    assert_eq!(holder["standing"], "disabled", "{st}");
    assert!(
        read("status-locked.out").contains("holder disabled"),
        "{}",
        read("status-locked.out")
    );
    assert!(
        !read("status-before-lock.out").contains("holder"),
        "a managed holder needs no note: {}",
        read("status-before-lock.out")
    );
    let v1: serde_json::Value = serde_json::from_str(&read("verify1.json")).unwrap();
    let bob = &v1["volumes"][0]["users"][0];
    assert_eq!(bob["user"], "bob", "{v1}");
    assert_eq!(bob["status"], "disabled", "{v1}");
    assert_eq!(bob["revoked"], false, "{v1}");
    assert_eq!(read("verify1.rc"), "1", "verify reports the problem");
    assert_eq!(read("bob-kept.out"), read("bob-slot.out"));
    let v2: serde_json::Value = serde_json::from_str(&read("verify2.json")).unwrap();
    assert_eq!(v2["volumes"][0]["users"][0]["revoked"], true, "{v2}");
    assert_eq!(read("bob-after.out"), "", "{}", ctx());
}
