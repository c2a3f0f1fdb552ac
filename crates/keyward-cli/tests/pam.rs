//! The real PAM stack (pam_unix, pamtester, chpasswd, real yescrypt hashes) with pam_keyward.so
//! and the real helper, inside a private mount namespace whose /etc is a copy. A managed user's
//! login gives them a slot that opens with their password (checked with stock cryptsetup); a
//! password change (pamtester, `passwd` run by the user on a terminal, `chpasswd` by root)
//! moves the slot to the new password; a wrong
//! password, an unmanaged user and hostile names enrol nothing; with the helper down, logins
//! still succeed; two logins at once make one slot; the password never reaches disk or a log.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;

use common::*;

const SCRIPT: &str = r#"
set -euo pipefail
cd "$T"
cp -a /etc etc-work
mount --bind etc-work /etc
kw() { "$KW" --config "$CFG" "$@"; }
start_helper() {
  rm -f run/helper.sock
  "$HELPER" --config "$CFG" 2>>helper.err & echo $! > helper.pid
  for _ in $(seq 200); do [ -S run/helper.sock ] && return 0; sleep 0.05; done
  echo "helper did not start" >&2; cat helper.err >&2; exit 1
}
stop_helper() { kill "$(cat helper.pid)" 2>/dev/null || true; wait "$(cat helper.pid)" 2>/dev/null || true; }
slot_of() { # slot_of USER -> the user's keyslot, or nothing
  kw status data --json | tr -d ' \n' | grep -o "{[^{}]*\"user\":\"$1\"[^{}]*}" | grep -o '"slot":[0-9]*' | cut -d: -f2 || true
}
opens() { printf '%s' "$2" | cryptsetup open --test-passphrase --key-slot "$1" disk.img --key-file - 2>/dev/null; }
wait_until() { # wait_until CMD... : up to 60 s
  for _ in $(seq 600); do if "$@"; then return 0; fi; sleep 0.1; done; return 1
}
user_slot_opens() { local s; s=$(slot_of "$1"); [ -n "$s" ] && opens "$s" "$2"; }
audit_count() { grep -c -- "$1" log/audit.jsonl || true; }
audit_has() { [ "$(audit_count "$1")" -ge 1 ]; }

groupadd keyward-users
useradd --no-create-home --groups keyward-users alice
useradd --no-create-home --groups keyward-users bob
useradd --no-create-home carol
printf 'alice:%s\nbob:bob pass 1\ncarol:carol pass\n' "$PW1" | chpasswd
grep '^alice:' /etc/shadow | cut -d: -f2 | cut -c1-3 > alice-hash-prefix.out

printf 'auth requisite pam_unix.so\nauth optional %s socket=%s\naccount required pam_permit.so\npassword requisite pam_unix.so yescrypt\npassword optional %s socket=%s\n' \
  "$SO" "$T/run/helper.sock" "$SO" "$T/run/helper.sock" > /etc/pam.d/kwtest
# The module first, before any check: it sees whatever name arrives.
printf 'auth optional %s socket=%s\nauth required pam_deny.so\n' "$SO" "$T/run/helper.sock" > /etc/pam.d/kwhostile
# A misplaced module: after a pam_unix that may fail, so it sees a password nobody checked.
printf 'auth optional pam_unix.so\nauth optional %s socket=%s\nauth required pam_deny.so\n' "$SO" "$T/run/helper.sock" > /etc/pam.d/kwmisplaced
printf 'password optional %s socket=%s\n' "$SO" "$T/run/helper.sock" >> /etc/pam.d/chpasswd

start_helper
printf '%s\n' "$INSTALL_PASS" | kw bootstrap data --passphrase-stdin > /dev/null

# 1. Login: alice gets a slot for her password.
printf '%s\n' "$PW1" | pamtester kwtest alice authenticate > login1.out 2>&1
wait_until user_slot_opens alice "$PW1" && echo yes > login1.ok
slot_of alice > slot1.out

# A second login with the same password changes nothing (and runs no KDF).
printf '%s\n' "$PW1" | pamtester kwtest alice authenticate > /dev/null 2>&1
wait_until audit_has 'login-capture.*alice.*verified earlier' && echo yes > relogin.ok
slot_of alice > slot1b.out

# 2. A password change (pamtester as root: pam_unix asks only for the new one).
printf '%s\n%s\n' "$PW2" "$PW2" | pamtester kwtest alice chauthtok > change.out 2>&1
wait_until user_slot_opens alice "$PW2" && echo yes > change.ok
s=$(slot_of alice); if opens "$s" "$PW1"; then echo yes > old-still-opens.out; fi

# 2b. Alice runs passwd herself (setuid root, asks her current password, on a terminal).
printf 'password optional %s socket=%s\n' "$SO" "$T/run/helper.sock" >> /etc/pam.d/passwd
grep '^alice:' /etc/shadow | cut -d: -f2 > hash-before-passwd.out
(sleep 1; printf '%s\n' "$PW2"; sleep 1; printf '%s\n' "$PW4"; sleep 1; printf '%s\n' "$PW4"; sleep 1) \
  | setpriv --reuid=alice --regid=alice --init-groups script -qec passwd /dev/null > passwd-user.out 2>&1 || true
grep '^alice:' /etc/shadow | cut -d: -f2 > hash-after-passwd.out
wait_until user_slot_opens alice "$PW4" && echo yes > user-passwd.ok
s=$(slot_of alice); if opens "$s" "$PW2"; then echo yes > old-pw2-still-opens.out; fi

# 3. Root resets it with chpasswd (no old password anywhere).
printf 'alice:%s\n' "$PW3" | chpasswd
wait_until user_slot_opens alice "$PW3" && echo yes > reset.ok
s=$(slot_of alice); if opens "$s" "$PW4"; then echo yes > old2-still-opens.out; fi

# 4. A wrong password: pam_unix refuses and the module is never reached.
before=$(grep -c . log/audit.jsonl)
set +e; printf 'wrong\n' | pamtester kwtest alice authenticate > wrong.out 2>&1; echo $? > wrong.rc; set -e
sleep 1
echo $(( $(grep -c . log/audit.jsonl) - before )) > wrong-audit-delta.out

# 5. The module reached with a password that is not the user's (a misplaced module): the
#    helper checks /etc/shadow and enrols nothing.
s=$(slot_of alice)
printf 'not her password\n' | pamtester kwmisplaced alice authenticate > /dev/null 2>&1 || true
wait_until audit_has 'login-capture.*alice.*does not match' && echo yes > shadow-check.ok
slot_of alice > slot-after-wrong.out
if opens "$s" "$PW3"; then echo yes > still-pw3.ok; fi

# 6. An unmanaged user: nothing.
printf 'carol pass\n' | pamtester kwtest carol authenticate > /dev/null 2>&1
wait_until audit_has 'login-capture.*carol.*not managed' && echo yes > carol.ok
slot_of carol > carol-slot.out

# 7. Hostile names: no crash, nothing sent.
before=$(grep -c . log/audit.jsonl)
long=$(head -c 300 /dev/zero | tr '\0' a)
for name in '../etc' '-rf' 'ünïcødé' "$long" 'a b' 'root/x'; do
  set +e; printf 'x\n' | pamtester kwhostile "$name" authenticate > /dev/null 2>&1; echo $? >> hostile.rc; set -e
done
sleep 1
echo $(( $(grep -c . log/audit.jsonl) - before )) > hostile-audit-delta.out

# 8. Two logins at once: one slot.
printf 'bob pass 1\n' | pamtester kwtest bob authenticate > /dev/null 2>&1 & p1=$!
printf 'bob pass 1\n' | pamtester kwtest bob authenticate > /dev/null 2>&1 & p2=$!
wait "$p1" "$p2" || true
wait_until user_slot_opens bob 'bob pass 1' && echo yes > bob.ok
sleep 1
kw status data --json | tr -d ' \n' | grep -o '"user":"bob"' | wc -l > bob-slots.out

# 9. An admin's login bootstraps a volume that has no service slot yet (data2), from the login
#    password, which opens the installer's slot there.
groupadd keyward-admins
useradd --no-create-home --groups keyward-admins dave
printf 'dave:%s\n' "$INSTALL_PASS" | chpasswd
kw status data2 --json | tr -d ' \n' | grep -c '"role":"service"' > data2-service-before.out || true
printf '%s\n' "$INSTALL_PASS" | pamtester kwtest dave authenticate > /dev/null 2>&1
wait_until audit_has 'login-capture.*dave.*bootstrapped service slot' && echo yes > admin-bootstrap.ok
kw status data2 --json | tr -d ' \n' | grep -c '"role":"service"' > data2-service-after.out || true

# 10. Users who leave the managed set, or are deleted, are reported by verify…
gpasswd -d alice keyward-users > /dev/null
userdel bob
set +e; kw verify > verify1.out; echo $? > verify1.rc; set -e
slot_of alice > alice-kept.out
#     …and, with revoke_unmanaged = true, their slots are revoked.
sed -i 's/^\[policy\]$/[policy]\nrevoke_unmanaged = true/' "$CFG"
stop_helper; start_helper
set +e; kw verify > verify2.out; echo $? > verify2.rc; set -e
slot_of alice > alice-after-revoke.out
kw verify > verify3.out; echo $? > verify3.rc

# 11. The helper is down: the login still succeeds.
stop_helper
start=$(date +%s%N)
set +e; printf '%s\n' "$PW3" | pamtester kwtest alice authenticate > down.out 2>&1; echo $? > down.rc; set -e
echo $(( ($(date +%s%N) - start) / 1000000 )) > down-ms.out
"#;

#[test]
fn pam_login_and_password_changes() {
    require_pamtester();
    let inst = Instance::prepare();
    let t = inst.root.path();
    let so = bin("libpam_keyward.so");
    // A second volume, not yet bootstrapped, and an admin group allowed to bootstrap by login.
    let disk2 = t.join("disk2.img");
    format_image(&disk2);
    let extra = format!(
        "[[volume]]\nname = \"data2\"\ndevice = \"{}\"\n",
        disk2.display()
    );
    let mut cfg = std::fs::read_to_string(&inst.config).unwrap();
    cfg.push_str(&extra);
    std::fs::write(&inst.config, cfg).unwrap();
    set_policy(&inst, "admin_group = \"keyward-admins\"");
    let (pw1, pw2, pw3) = ("first pässword 1", "second password 2", "reset by root 3");
    let pw4 = "Fourth, typed at passwd 4";
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "bash", "-c", SCRIPT])
        .env("T", t)
        .env("KW", bin("keyward"))
        .env("HELPER", bin("keyward-helper"))
        .env("SO", &so)
        .env("CFG", &inst.config)
        .env("INSTALL_PASS", INSTALL_PASS)
        .env("PW1", pw1)
        .env("PW2", pw2)
        .env("PW3", pw3)
        .env("PW4", pw4)
        .output()
        .unwrap();
    let read = |f: &str| {
        std::fs::read_to_string(t.join(f))
            .unwrap_or_default()
            .trim()
            .to_owned()
    };
    let ctx = || {
        format!(
            "helper: {}\naudit:\n{}",
            read("helper.err"),
            read("log/audit.jsonl")
        )
    };
    assert!(
        out.status.success(),
        "script: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        ctx()
    );

    assert_eq!(
        read("alice-hash-prefix.out"),
        "$y$",
        "Debian hashes with yescrypt"
    );
    assert_eq!(read("login1.ok"), "yes", "login grants a slot: {}", ctx());
    assert_eq!(
        read("relogin.ok"),
        "yes",
        "a repeat login is a no-op: {}",
        ctx()
    );
    assert_eq!(read("slot1.out"), read("slot1b.out"));
    assert_eq!(
        read("change.ok"),
        "yes",
        "password change moves the slot: {}",
        ctx()
    );
    assert_eq!(
        read("old-still-opens.out"),
        "",
        "the old password must stop opening"
    );
    // 2b: `passwd` run by alice herself on a terminal (pam_unix asks her current password).
    let passwd = read("passwd-user.out");
    assert!(
        passwd.contains("password updated successfully"),
        "alice's own passwd must succeed: {passwd}"
    );
    assert_ne!(
        read("hash-before-passwd.out"),
        read("hash-after-passwd.out"),
        "passwd changed alice's /etc/shadow hash"
    );
    assert_eq!(
        read("user-passwd.ok"),
        "yes",
        "the slot follows a passwd run by the user: {passwd}\n{}",
        ctx()
    );
    assert_eq!(
        read("old-pw2-still-opens.out"),
        "",
        "the password before passwd stops opening"
    );
    assert_eq!(
        read("reset.ok"),
        "yes",
        "root reset moves the slot: {}",
        ctx()
    );
    assert_eq!(read("old2-still-opens.out"), "");
    assert_ne!(read("wrong.rc"), "0", "pamtester reports the auth failure");
    assert_eq!(
        read("wrong-audit-delta.out"),
        "0",
        "a failed login reaches no job"
    );
    assert_eq!(read("shadow-check.ok"), "yes", "{}", ctx());
    assert_eq!(read("still-pw3.ok"), "yes");
    assert_eq!(read("carol.ok"), "yes", "{}", ctx());
    assert_eq!(read("carol-slot.out"), "");
    let rcs = read("hostile.rc");
    assert!(
        rcs.lines().all(|rc| rc.parse::<i32>().unwrap() < 128),
        "pamtester crashed: {rcs}"
    );
    assert_eq!(
        read("hostile-audit-delta.out"),
        "0",
        "hostile names reach no handler: {}",
        ctx()
    );
    assert_eq!(read("bob.ok"), "yes", "{}", ctx());
    assert_eq!(
        read("bob-slots.out"),
        "1",
        "two logins at once make one slot"
    );
    assert_eq!(read("data2-service-before.out"), "0");
    assert_eq!(read("admin-bootstrap.ok"), "yes", "{}", ctx());
    assert_eq!(read("data2-service-after.out"), "1");
    let v1 = read("verify1.out");
    assert_eq!(read("verify1.rc"), "1", "verify flags users who left: {v1}");
    assert!(
        v1.contains("user alice") && v1.contains("not-managed"),
        "{v1}"
    );
    assert!(v1.contains("user bob") && v1.contains("deleted"), "{v1}");
    assert!(
        !read("alice-kept.out").is_empty(),
        "without revoke_unmanaged the slot stays"
    );
    let v2 = read("verify2.out");
    assert!(
        v2.contains("not-managed: slot revoked") && v2.contains("deleted: slot revoked"),
        "{v2}\n{}",
        ctx()
    );
    assert_eq!(read("alice-after-revoke.out"), "");
    assert_eq!(read("verify3.rc"), "0", "{}", read("verify3.out"));
    assert_eq!(read("down.rc"), "0", "login succeeds with the helper down");
    println!("login with the helper down took {} ms", read("down-ms.out"));

    // No password on disk (besides the image, whose key material is the point) or in a log.
    let mut stack = vec![t.to_owned()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            let ft = std::fs::symlink_metadata(&p).unwrap().file_type();
            if ft.is_dir() {
                stack.push(p);
            } else if ft.is_file() && p != inst.image {
                let bytes = std::fs::read(&p).unwrap();
                for pw in [pw1, pw2, pw3, pw4] {
                    let found = bytes.windows(pw.len()).any(|w| w == pw.as_bytes());
                    assert!(!found, "a password is in {}", p.display());
                }
            }
        }
    }
}
