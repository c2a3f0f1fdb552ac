//! A hung helper never hangs a login (issue 14): with a "helper" that is bound and listening
//! but accepts nothing, its backlog full, a real login through the PAM stack (pam_unix, then
//! pam_keyward.so) still succeeds, and returns within about the module's 200 ms budget — not
//! after the 20 s and more it took when the budget started after `connect`: it costs less than
//! 700 ms more than the same login with the helper down. Runs in a private mount namespace
//! with a copy of /etc.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;

const SCRIPT: &str = r#"
set -euo pipefail
cd "$T"
cp -a /etc etc-work
mount --bind etc-work /etc
useradd --no-create-home alice
printf 'alice:alice pass\n' | chpasswd
printf 'auth requisite pam_unix.so\nauth optional %s socket=%s\naccount required pam_permit.so\n' \
  "$SO" "$T/hung.sock" > /etc/pam.d/kwhung
# The same stack with the helper down (no socket): what a login costs without any wait.
printf 'auth requisite pam_unix.so\nauth optional %s socket=%s\naccount required pam_permit.so\n' \
  "$SO" "$T/absent.sock" > /etc/pam.d/kwdown
# A listener with a backlog of one that never accepts, its backlog then filled: a blocking
# connect() to it waits forever.
python3 - "$T/hung.sock" > hung.ready <<'PY' &
import socket, sys, time
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind(sys.argv[1]); s.listen(1)
held = []
while True:
    c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); c.setblocking(False)
    try:
        c.connect(sys.argv[1]); held.append(c)
    except BlockingIOError:
        break
print(len(held), flush=True)
time.sleep(120)
PY
hung=$!
for _ in $(seq 100); do [ -s hung.ready ] && break; sleep 0.05; done
[ -s hung.ready ] || { echo "the hung listener did not start" >&2; exit 1; }
# Control: a blocking connect really hangs on it.
if timeout 2 python3 -c 'import socket,sys; s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])' "$T/hung.sock"; then
  echo "the listener accepted a blocking connect: the test proves nothing" >&2; exit 1
fi
start=$(date +%s%N)
set +e
printf 'alice pass\n' | timeout 30 pamtester kwhung alice authenticate > login.out 2>&1
echo $? > login.rc
set -e
echo $(( ($(date +%s%N) - start) / 1000000 )) > login.ms
start=$(date +%s%N)
printf 'alice pass\n' | timeout 30 pamtester kwdown alice authenticate > down.out 2>&1
echo $(( ($(date +%s%N) - start) / 1000000 )) > down.ms
kill "$hung"
"#;

#[test]
fn a_hung_helper_does_not_hang_a_login() {
    let run = PamScript::run(SCRIPT, &[]);
    let read = |f: &str| run.read(f);
    assert_eq!(
        read("login.rc"),
        "0",
        "the login failed: {}",
        read("login.out")
    );
    let ms: u64 = read("login.ms").parse().unwrap();
    // The budget is 200 ms; pamtester and pam_unix's yescrypt add their own. Generous, and far
    // below the hang this guards against.
    assert!(ms < 3000, "the login took {ms} ms with a hung helper");
    // What the hung helper adds to a login is the budget, give or take scheduling: measured
    // against the same login with the helper down (which costs no wait at all).
    let down: u64 = read("down.ms").parse().unwrap();
    assert!(
        ms.saturating_sub(down) < 700,
        "a hung helper added {} ms to a login ({ms} ms, {down} ms with the helper down; budget 200 ms)",
        ms.saturating_sub(down)
    );
}
