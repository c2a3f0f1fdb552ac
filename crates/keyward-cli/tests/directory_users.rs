//! Directory users (issue 15), for real: an OpenLDAP slapd and an sssd (ldap id, auth and
//! chpass providers, cached credentials) in a private mount namespace, the PAM stack exactly as
//! pam-auth-update writes it with libpam-sss and keyward's two profiles installed, the real
//! helper, and stock cryptsetup to prove every claim about a keyslot.
//!
//! Covered: a directory member's login (sshd, su) grants a slot that opens with the password the directory
//! accepts; a password the directory rejects never reaches a keyslot, even from a misplaced
//! module; a non-member and members with uids outside `uid_min..=uid_max` get nothing; `passwd`
//! through pam_sss moves the slot at once; an admin's reset at the directory moves it at the
//! next login; with the directory down a cached login still works and nothing is revoked, even
//! with the cache expired; a member removed from the group loses the slot at `verify` once the
//! directory says so, and so does a user deleted from the directory; a failed lookup (sssd
//! down) revokes nothing; the helper's own PAM check never captures itself, answers one hidden
//! prompt only (a second hidden prompt or a visible one fails it), and one that hangs is killed
//! at its deadline without holding up the login or the helper; the audit chain holds.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Instant;

use common::*;

const SCRIPT: &str = r#"
source "$DIRENV"
opens() { printf '%s' "$2" | cryptsetup open --test-passphrase --key-slot "$1" disk.img --key-file - 2>/dev/null; }
wait_until() { for _ in $(seq 300); do if "$@"; then return 0; fi; sleep 0.1; done; return 1; }
user_slot_opens() { local s; s=$(slot_of "$1"); [ -n "$s" ] && opens "$s" "$2"; }
# Let the helper finish every queued job: a status round trip after a short settle.
settle() { sleep "${1:-2}"; kw status data --json > /dev/null; }
login() { printf '%s\n' "$2" | pamtester kwlogin "$1" authenticate > "login-$1-$3.out" 2>&1; }
trap 'kill "$(cat "$T/helper.pid" 2>/dev/null)" 2>/dev/null || true; dir_stop' EXIT

dir_start
# keyward's two profiles as shipped, with the module's path and this test's socket.
for p in keyward keyward-directory; do
  sed "s#pam_keyward.so#$SO socket=$T/run/helper.sock#" "$DIST/pam-configs/$p" > "$T/$p"
done
dir_pam_update "$T/keyward" "$T/keyward-directory"
cp "$DIST/pam.d/keyward" /etc/pam.d/keyward
cp /etc/pam.d/common-auth common-auth.out
cp /etc/pam.d/common-password common-password.out
# A login service as a display manager's: the system's stacks, nothing else.
printf '@include common-auth\n@include common-account\n@include common-password\n' > /etc/pam.d/kwlogin
# A misplaced module: after a module that may fail (pam_unix, which knows no directory user),
# so it sees a password nobody checked.
printf 'auth optional pam_unix.so\nauth optional %s socket=%s\nauth required pam_deny.so\n' \
  "$SO" "$T/run/helper.sock" > /etc/pam.d/kwmisplaced

start_helper
trap 'kill "$(cat "$T/helper.pid")" 2>/dev/null || true; dir_stop' EXIT
printf '%s\n' "$INSTALL_PASS" | kw bootstrap data --passphrase-stdin > /dev/null

# A real sshd on a free loopback port, password authentication through PAM.
mkdir -p /run/sshd && chmod 0755 /run/sshd
ssh-keygen -q -t ed25519 -N '' -f "$T/ssh_host_key"
SSH_PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
printf 'Port %s\nListenAddress 127.0.0.1\nHostKey %s\nUsePAM yes\nPasswordAuthentication yes\nKbdInteractiveAuthentication no\nPubkeyAuthentication no\nPidFile %s\n' \
  "$SSH_PORT" "$T/ssh_host_key" "$T/sshd.pid" > "$T/sshd_config"
printf '@include common-auth\naccount required pam_nologin.so\n@include common-account\nsession optional pam_permit.so\n@include common-password\n' > /etc/pam.d/sshd
/usr/sbin/sshd -f "$T/sshd_config" -E "$T/sshd.log"
trap 'kill "$(cat "$T/helper.pid")" "$(cat "$T/sshd.pid" 2>/dev/null)" 2>/dev/null || true; dir_stop' EXIT
ssh_as() { # ssh_as USER PASSWORD COMMAND...: a password login through sshd (sshpass reads $SSHPASS)
  local u=$1 pw=$2; shift 2
  SSHPASS=$pw sshpass -e ssh -p "$SSH_PORT" -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null \
    -o PubkeyAuthentication=no -o PreferredAuthentications=password -o LogLevel=ERROR "$u@127.0.0.1" "$@"
}

# 1. dave (member, uid 200001) logs in over ssh: a slot that opens with the directory's password.
ssh_as dave "$DIR_PW_dave" id -un > ssh-dave.out 2>&1 || true
wait_until user_slot_opens dave "$DIR_PW_dave" && echo yes > dave-login.ok
slot_of dave > dave-slot.out

# 2. Wrong passwords. Through the real stack pam_sss refuses and keyward is never reached;
# through a misplaced module the helper's own PAM check refuses it.
if login erin 'not erins password' 1; then echo yes > wrong-login-succeeded.out; fi
printf '%s\n' 'not erins password' | pamtester kwmisplaced erin authenticate > misplaced.out 2>&1 || true
wait_until grep -q '"user":"erin".*refused the password' log/audit.jsonl && echo yes > misplaced-refused.ok

# 3. frank (not in the group), gail (uid 900) and hugo (uid 3000000000), right passwords.
login frank "$DIR_PW_frank" 1
login gail "$DIR_PW_gail" 1
login hugo "$DIR_PW_hugo" 1
settle
for u in erin frank gail hugo; do printf '%s=%s\n' "$u" "$(slot_of "$u")"; done > outsiders.out
for u in frank gail hugo; do
  grep -q "\"user\":\"$u\".*not managed" log/audit.jsonl && echo "$u" >> outsiders-refused.out
done

# 4. dave changes his password with passwd (setuid root, on a terminal): pam_sss commits it.
# First a failed try (a wrong current password): nothing may reach the helper.
NEW_dave='Copper kettle changed 5Lm'
# And a change the directory refuses after the old password passed (frank may not write his):
# the new password was typed and handed on, but never committed.
(sleep 1; printf '%s\n' "$DIR_PW_frank"; sleep 1; printf '%s\n' 'Never committed 9Kp'; sleep 1; printf '%s\n' 'Never committed 9Kp'; sleep 2) \
  | setpriv --reuid=frank --regid="$DIR_PRIMARY_GID" --clear-groups script -qec passwd /dev/null > passwd-frank-failed.out 2>&1 || true
(sleep 1; printf '%s\n' 'not daves password'; sleep 1; printf '%s\n' 'Never committed 8Hj'; sleep 1; printf '%s\n' 'Never committed 8Hj'; sleep 2) \
  | setpriv --reuid=dave --regid="$DIR_PRIMARY_GID" --clear-groups script -qec passwd /dev/null > passwd-dave-failed.out 2>&1 || true
(sleep 1; printf '%s\n' "$DIR_PW_dave"; sleep 1; printf '%s\n' "$NEW_dave"; sleep 1; printf '%s\n' "$NEW_dave"; sleep 2) \
  | setpriv --reuid=dave --regid="$DIR_PRIMARY_GID" --clear-groups script -qec passwd /dev/null > passwd-dave.out 2>&1 || true
ldapwhoami -x -H "$DIR_URI" -D "$(dir_user_dn dave)" -w "$NEW_dave" > /dev/null 2>&1 && echo yes > dave-ldap-changed.ok
wait_until user_slot_opens dave "$NEW_dave" && echo yes > dave-passwd.ok
s=$(slot_of dave); if opens "$s" "$DIR_PW_dave"; then echo yes > dave-old-opens.out; fi

# 5. erin gets a slot through su (a real PAM client: frank runs `su erin`, which asks erin's
# password on a terminal), the admin resets her password at the directory, she logs in with it.
(sleep 1; printf '%s\n' "$DIR_PW_erin"; sleep 2) \
  | setpriv --reuid=frank --regid="$DIR_PRIMARY_GID" --clear-groups script -qec "su erin -c 'id -un'" /dev/null > su-erin.out 2>&1 || true
wait_until user_slot_opens erin "$DIR_PW_erin" && echo yes > erin-login.ok
NEW_erin='Willow brook reset 6Np'
dir_reset_password erin "$NEW_erin"
login erin "$NEW_erin" 2 && echo yes > erin-reset-login.ok
wait_until user_slot_opens erin "$NEW_erin" && echo yes > erin-reset.ok
s=$(slot_of erin); if opens "$s" "$DIR_PW_erin"; then echo yes > erin-old-opens.out; fi

# 5b. A `keyward` PAM stack that hangs (a module waiting on a server that never answers): the
# helper kills its check at the deadline and gives the password no right; neither the login
# nor the helper waits for it.
cp /etc/pam.d/keyward keyward-pam.saved
printf 'auth required pam_exec.so /bin/sleep 120\naccount required pam_permit.so\n' > /etc/pam.d/keyward
start=$(date +%s%N)
printf '%s\n' 'Hung check 4Hx' | pamtester kwmisplaced erin authenticate > hung-login.out 2>&1 || true
echo $(( ($(date +%s%N) - start) / 1000000 )) > hung-login-ms.out
sleep 1
start=$(date +%s%N)
kw status data --json > /dev/null && echo $(( ($(date +%s%N) - start) / 1000000 )) > hung-status-ms.out
for _ in $(seq 450); do grep -q '"user":"erin".*did not answer within' log/audit.jsonl && break; sleep 0.1; done
grep '"user":"erin".*did not answer within' log/audit.jsonl > hung-refused.out || true
s=$(slot_of erin); if opens "$s" 'Hung check 4Hx'; then echo yes > hung-opens.out; fi
# 5c. The check answers one hidden prompt, and only one. pam_stress accepts whatever password
# it is given: with one prompt the check passes (the control: the stack decides, and erin's
# slot follows), with a second prompt (as a second factor would ask) it fails, and the password
# gets no right.
refusals() { grep '"user":"erin"' log/audit.jsonl | grep -c 'refused the password' || true; }
printf 'auth required pam_stress.so\naccount required pam_permit.so\n' > /etc/pam.d/keyward
printf '%s\n' 'One prompt 5Jq' | pamtester kwmisplaced erin authenticate > one-prompt.out 2>&1 || true
wait_until user_slot_opens erin 'One prompt 5Jq' && echo yes > one-prompt.ok
before=$(refusals)
printf 'auth required pam_stress.so\nauth required pam_stress.so\naccount required pam_permit.so\n' > /etc/pam.d/keyward
printf '%s\n' 'Two prompts 6Kr' | pamtester kwmisplaced erin authenticate > two-prompts.out 2>&1 || true
more_refusals() { [ "$(refusals)" -gt "$before" ]; }
wait_until more_refusals && echo yes > two-prompts-refused.ok
s=$(slot_of erin); if opens "$s" 'Two prompts 6Kr'; then echo yes > two-prompts-opens.out; fi
if opens "$s" 'One prompt 5Jq'; then echo yes > one-prompt-kept.ok; fi
# 5d. A visible (echo-on) prompt — a user name, or a code shown as typed — is refused as well.
# pam_one_prompt asks one question and accepts any answer: asked hidden, the check passes (the
# control: erin's slot follows); asked visible, the conversation refuses it and the password
# gets no right.
cc -shared -fPIC -o "$T/pam_one_prompt.so" "$ONE_PROMPT_C" -lpam
printf 'auth required %s\naccount required pam_permit.so\n' "$T/pam_one_prompt.so" > /etc/pam.d/keyward
printf '%s\n' 'Hidden prompt 7Lm' | pamtester kwmisplaced erin authenticate > hidden-prompt.out 2>&1 || true
wait_until user_slot_opens erin 'Hidden prompt 7Lm' && echo yes > hidden-prompt.ok
before=$(refusals)
printf 'auth required %s visible\naccount required pam_permit.so\n' "$T/pam_one_prompt.so" > /etc/pam.d/keyward
printf '%s\n' 'Visible prompt 8Mn' | pamtester kwmisplaced erin authenticate > visible-prompt.out 2>&1 || true
wait_until more_refusals && echo yes > visible-prompt-refused.ok
grep '"user":"erin"' log/audit.jsonl | grep 'refused the password' | tail -n 1 > visible-prompt-refusal.out || true
s=$(slot_of erin); if opens "$s" 'Visible prompt 8Mn'; then echo yes > visible-prompt-opens.out; fi
if opens "$s" 'Hidden prompt 7Lm'; then echo yes > hidden-prompt-kept.ok; fi
cp keyward-pam.saved /etc/pam.d/keyward

# 6. The directory goes away: a cached login works at once, nothing is revoked, even with
# sssd's cache expired (it answers from it while offline).
dir_stop_slapd
start=$(date +%s%N)
login dave "$NEW_dave" offline && echo yes > offline-login.ok
echo $(( ($(date +%s%N) - start) / 1000000 )) > offline-login-ms.out
dir_flush_cache
kw verify data --json > verify-offline.json 2> verify-offline.err || true
for u in dave erin; do printf '%s=%s\n' "$u" "$(slot_of "$u")"; done > offline-slots.out

# 7. Back online, erin leaves the group: verify (revoke_unmanaged) revokes her slot only.
dir_start_slapd
dir_remove_member erin
dir_flush_cache
wait_until sh -c '! id -Gn erin | tr " " "\n" | grep -qx kwdir' && echo yes > erin-left.ok
kw verify data --json > verify-online.json 2> verify-online.err || true
for u in dave erin; do printf '%s=%s\n' "$u" "$(slot_of "$u")"; done > online-slots.out

# 8. sssd itself is gone (not running): every directory lookup fails. An error is not an
# answer: verify revokes nothing.
dir_stop
kw verify data --json > verify-no-sssd.json 2> verify-no-sssd.err || true
printf 'dave=%s\n' "$(slot_of dave)" > no-sssd-slots.out

# 9. Back up; the admin deletes dave from the directory: once the directory says so, verify
# revokes his slot.
dir_start_sssd
dir_start_slapd
dir_delete_user dave
dir_flush_cache
wait_until sh -c '! getent passwd dave > /dev/null' && echo yes > dave-gone.ok
kw verify data --json > verify-deleted.json 2> verify-deleted.err || true
printf 'dave=%s\n' "$(slot_of dave)" > deleted-slots.out

# 10. The helper's PAM check (the `keyward` service includes common-auth, with pam_keyward.so)
# never captured itself: one capture record per login handed over.
settle 1
grep '"op":"login-capture"' log/audit.jsonl | grep -c '"user":"dave"' > dave-captures.out || true
grep '"op":"password-change"' log/audit.jsonl | grep -c '"user":"dave"' > dave-changes.out || true
grep '"op":"password-change"' log/audit.jsonl | grep -c '"user":"frank"' > frank-changes.out || true
kw audit --verify > audit-verify.out 2>&1 && echo yes > audit.ok
"#;

#[test]
fn directory_users_get_and_keep_unlock_rights() {
    let inst = Instance::prepare();
    // The default uid range (1000..=2147483647): gail (900) and hugo (3000000000) are outside.
    let cfg = std::fs::read_to_string(&inst.config)
        .unwrap()
        .replace("uid_min = 1\n", "");
    std::fs::write(&inst.config, cfg).unwrap();
    set_policy(&inst, "managed_group = \"kwdir\"");
    set_policy(&inst, "revoke_unmanaged = true");
    let manifest = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let dist = manifest.join("../../dist");
    let started = Instant::now();
    let out = namespace_script(&inst, &format!("{SHELL_PRELUDE}{SCRIPT}"))
        .env("DIST", &dist)
        .env("DIRENV", manifest.join("tests/directory/env.sh"))
        .env(
            "ONE_PROMPT_C",
            manifest.join("tests/directory/pam_one_prompt.c"),
        )
        .output()
        .unwrap();
    eprintln!(
        "directory scenario: {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let read = |f: &str| script_output(&inst, f);
    let ctx = || {
        format!(
            "{}\nsssd: {}\npasswd: {}",
            script_context(&inst),
            read("dir/sssd.out"),
            read("passwd-dave.out")
        )
    };
    assert!(
        out.status.success(),
        "script: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        ctx()
    );

    // The stack is pam-auth-update's, with keyward where it must be.
    let auth = read("common-auth.out");
    assert!(auth.contains("pam_sss.so"), "{auth}");
    let pos = |text: &str, what: &str| {
        text.find(what)
            .unwrap_or_else(|| panic!("{what} in {text}"))
    };
    assert!(
        pos(&auth, "pam_deny.so") < pos(&auth, "libpam_keyward.so"),
        "{auth}"
    );
    let password = read("common-password.out");
    assert!(
        pos(&password, "pam_unix.so") < pos(&password, "libpam_keyward.so")
            && pos(&password, "libpam_keyward.so") < pos(&password, "sufficient\t\t\tpam_sss.so"),
        "the stash line sits between pam_unix and pam_sss:\n{password}"
    );

    // One hidden prompt answered; a second refused, whatever the module would say.
    assert_eq!(
        read("one-prompt.ok"),
        "yes",
        "a one-prompt stack decides: {}",
        ctx()
    );
    assert_eq!(
        read("two-prompts-refused.ok"),
        "yes",
        "a stack that asks twice fails the check: {}",
        ctx()
    );
    assert_eq!(
        read("two-prompts-opens.out"),
        "",
        "a second prompt gave a right"
    );
    assert_eq!(read("one-prompt-kept.ok"), "yes", "{}", ctx());
    // A visible (echo-on) prompt refused by the conversation; the same module asking hidden
    // decides.
    assert_eq!(
        read("hidden-prompt.ok"),
        "yes",
        "a one-hidden-prompt module decides: {}",
        ctx()
    );
    assert_eq!(
        read("visible-prompt-refused.ok"),
        "yes",
        "a stack that asks a visible prompt fails the check: {}",
        ctx()
    );
    let refusal = read("visible-prompt-refusal.out");
    assert!(
        refusal.contains("Conversation error"),
        "the refusal names the conversation: {refusal}"
    );
    assert_eq!(
        read("visible-prompt-opens.out"),
        "",
        "a visible prompt gave a right"
    );
    assert_eq!(read("hidden-prompt-kept.ok"), "yes", "{}", ctx());
    // A hung PAM check: killed at its deadline, no right; the login and the helper go on.
    assert!(
        !read("hung-refused.out").is_empty(),
        "the hung check is refused at its deadline: {}",
        ctx()
    );
    assert_eq!(read("hung-opens.out"), "", "a hung check gave a right");
    let ms = |f: &str| -> u64 {
        read(f)
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("{f}: {e}: {}", ctx()))
    };
    // Far less than the check's 30 s deadline (the failed login carries pam_unix's delay of
    // about two seconds).
    let (login, status) = (ms("hung-login-ms.out"), ms("hung-status-ms.out"));
    assert!(
        login < 10_000,
        "the login waited for the hung check: {login} ms"
    );
    assert!(
        status < 10_000,
        "the helper waited for the hung check: {status} ms"
    );
    let ssh = read("ssh-dave.out");
    assert!(
        ssh.ends_with("dave"),
        "ssh as dave worked: {ssh}\n{}",
        read("sshd.log")
    );
    assert_eq!(
        read("dave-login.ok"),
        "yes",
        "a member's login grants a slot: {}",
        ctx()
    );
    assert_eq!(
        read("wrong-login-succeeded.out"),
        "",
        "pam_sss must refuse a wrong password"
    );
    assert_eq!(
        read("misplaced-refused.ok"),
        "yes",
        "the helper's PAM check refuses a password the directory rejects: {}",
        ctx()
    );
    assert_eq!(
        read("outsiders.out"),
        "erin=\nfrank=\ngail=\nhugo=",
        "no slot for a wrong password, a non-member, or uids outside the range: {}",
        ctx()
    );
    assert_eq!(
        read("outsiders-refused.out"),
        "frank\ngail\nhugo",
        "{}",
        ctx()
    );

    assert_eq!(
        read("dave-ldap-changed.ok"),
        "yes",
        "passwd changed it at the directory: {}",
        ctx()
    );
    assert_eq!(
        read("dave-passwd.ok"),
        "yes",
        "passwd through pam_sss moves the slot: {}",
        ctx()
    );
    assert_eq!(
        read("dave-old-opens.out"),
        "",
        "the old password stops opening"
    );
    assert_eq!(
        read("dave-changes.out"),
        "1",
        "a failed passwd sends nothing; the committed one is sent once: {}\n{}",
        read("passwd-dave-failed.out"),
        ctx()
    );
    let frank = read("passwd-frank-failed.out");
    assert!(frank.contains("password unchanged"), "{frank}");
    assert_eq!(
        read("frank-changes.out"),
        "0",
        "a change the directory refused after its preliminary check sends nothing: {frank}\n{}",
        ctx()
    );

    let su = read("su-erin.out");
    assert!(su.ends_with("erin"), "su to erin worked: {su}");
    assert_eq!(
        read("erin-login.ok"),
        "yes",
        "su grants a slot: {su}\n{}",
        ctx()
    );
    assert_eq!(
        read("erin-reset-login.ok"),
        "yes",
        "login with the reset password: {}",
        ctx()
    );
    assert_eq!(
        read("erin-reset.ok"),
        "yes",
        "a directory reset moves the slot at login: {}",
        ctx()
    );
    assert_eq!(
        read("erin-old-opens.out"),
        "",
        "the pre-reset password stops opening"
    );

    assert_eq!(
        read("offline-login.ok"),
        "yes",
        "a cached login works offline: {}",
        ctx()
    );
    let offline_ms: u64 = read("offline-login-ms.out").parse().unwrap();
    eprintln!("offline login: {offline_ms} ms");
    assert!(!read("dave-slot.out").is_empty());
    let offline = read("offline-slots.out");
    assert!(
        !offline.starts_with("dave=\n") && !offline.ends_with("\nerin="),
        "directory unreachable is not a revoke: {offline}\n{}\n{}",
        read("verify-offline.json"),
        ctx()
    );

    assert_eq!(read("erin-left.ok"), "yes", "{}", ctx());
    let online = read("online-slots.out");
    assert!(
        !online.starts_with("dave=\n") && online.ends_with("\nerin="),
        "verify revokes the slot of a member the directory removed, and only hers: {online}\n{}\n{}",
        read("verify-online.json"),
        ctx()
    );

    let no_sssd = read("no-sssd-slots.out");
    assert!(
        no_sssd.len() > "dave=".len(),
        "a failed lookup (sssd down) never revokes: {no_sssd}\n{}\n{}",
        read("verify-no-sssd.json"),
        read("verify-no-sssd.err")
    );
    assert_eq!(read("dave-gone.ok"), "yes", "{}", ctx());
    assert_eq!(
        read("deleted-slots.out"),
        "dave=",
        "a user the directory deleted loses the slot at verify: {}\n{}",
        read("verify-deleted.json"),
        read("verify-deleted.err")
    );
    assert!(
        read("verify-deleted.json").contains("\"deleted\""),
        "{}",
        read("verify-deleted.json")
    );
    assert_eq!(
        read("dave-captures.out"),
        "2",
        "one capture per login (2), none from the helper's own check: {}",
        ctx()
    );
    assert_eq!(read("audit.ok"), "yes", "{}", read("audit-verify.out"));
}
