//! The helper's PAM check (`keyward-helper --check-password`, for an account with no
//! /etc/shadow password) through the real PAM stack, with a module that prints on its process's
//! stdout, as any module may: neither what it prints nor how much can decide or block the
//! check. The verdict comes back on the check's socket pair, and its stdout is /dev/null.
//! Runs in a private mount namespace with a copy of /etc.
//!
//! Seen failing with the verdict on the child's stdout (a pipe the helper read after the child
//! exited): a module printing `refused: ...` refused the password, and one printing 200 KB
//! blocked the check until its 30 s deadline, which refused it too.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;

const SCRIPT: &str = r#"
wait_until() { for _ in $(seq 600); do if "$@"; then return 0; fi; sleep 0.1; done; return 1; }
opens() { printf '%s' "$2" | cryptsetup open --test-passphrase --key-slot "$1" disk.img --key-file - 2>/dev/null; }
user_slot_opens() { local s; s=$(slot_of "$1"); [ -n "$s" ] && opens "$s" "$2"; }

# alice has no password in /etc/shadow: the `keyward` PAM service decides for her.
groupadd keyward-users
useradd --no-create-home --groups keyward-users alice
# pam_loud: prints a line that reads like a verdict, then `bytes=N` more, and accepts.
cat > pam_loud.c <<'EOF'
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <security/pam_modules.h>
int pam_sm_authenticate(pam_handle_t *pamh, int flags, int argc, const char **argv) {
    static const char line[] = "refused: printed by pam_loud\n";
    static char block[4096];
    size_t want = 0, done = 0;
    (void)pamh; (void)flags;
    for (int i = 0; i < argc; i++)
        if (strncmp(argv[i], "bytes=", 6) == 0)
            want = strtoul(argv[i] + 6, NULL, 10);
    if (write(1, line, sizeof line - 1) < 0)
        return PAM_AUTH_ERR;
    memset(block, 'x', sizeof block);
    while (done < want) {
        ssize_t n = write(1, block, want - done < sizeof block ? want - done : sizeof block);
        if (n <= 0)
            return PAM_AUTH_ERR;
        done += (size_t)n;
    }
    return PAM_SUCCESS;
}
int pam_sm_setcred(pam_handle_t *pamh, int flags, int argc, const char **argv) {
    (void)pamh; (void)flags; (void)argc; (void)argv;
    return PAM_SUCCESS;
}
EOF
cc -shared -fPIC -o "$T/pam_loud.so" pam_loud.c -lpam
# A misplaced capture (after pam_unix, which fails for alice): only the helper's check decides.
printf 'auth optional pam_unix.so\nauth optional %s socket=%s\nauth required pam_permit.so\naccount required pam_permit.so\n' \
  "$SO" "$T/run/helper.sock" > /etc/pam.d/kwtest

start_helper
printf '%s\n' "$INSTALL_PASS" | kw bootstrap data --passphrase-stdin > /dev/null

# 1. A few bytes that read like a refusal.
printf 'auth required %s bytes=0\naccount required pam_permit.so\n' "$T/pam_loud.so" > /etc/pam.d/keyward
printf '%s\n' 'Loud one 3Kd' | pamtester kwtest alice authenticate > login-1.out 2>&1 || true
wait_until user_slot_opens alice 'Loud one 3Kd' && echo yes > short.ok

# 2. More than a pipe holds.
printf 'auth required %s bytes=200000\naccount required pam_permit.so\n' "$T/pam_loud.so" > /etc/pam.d/keyward
start=$(date +%s%N)
printf '%s\n' 'Loud two 4Le' | pamtester kwtest alice authenticate > login-2.out 2>&1 || true
wait_until user_slot_opens alice 'Loud two 4Le' && echo yes > long.ok
echo $(( ($(date +%s%N) - start) / 1000000 )) > long-ms.out
grep -c '"user":"alice".*\(refused the password\|did not answer\)' log/audit.jsonl > refusals.out || true
"#;

#[test]
fn what_a_pam_module_prints_neither_decides_nor_blocks_the_check() {
    require_pamtester();
    let inst = Instance::prepare();
    run_namespace_script(&inst, &format!("{SHELL_PRELUDE}{SCRIPT}"));
    let read = |f: &str| script_output(&inst, f);
    let ctx = || script_context(&inst);
    assert_eq!(
        read("short.ok"),
        "yes",
        "a module's `refused: ...` on stdout decided the check: {}",
        ctx()
    );
    assert_eq!(
        read("long.ok"),
        "yes",
        "200 KB on stdout failed the check: {}",
        ctx()
    );
    assert_eq!(read("refusals.out"), "0", "{}", ctx());
    eprintln!(
        "200 KB printed: the slot followed in {} ms",
        read("long-ms.out")
    );
}
