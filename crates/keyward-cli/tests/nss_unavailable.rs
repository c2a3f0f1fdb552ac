//! An NSS source that is configured but not answering (issue 14): `sss` in nsswitch.conf with
//! sssd not running, as on a laptop away from its directory. `keyward install` still works
//! (it failed with "user lookup: No such file or directory"), and a user whom only that source
//! could vouch for is `unknown` to verify — never `deleted` — so even with `revoke_unmanaged`
//! their slot stays. The real libnss_sss (Debian's libnss-sss, unpacked into a temporary
//! directory and found through LD_LIBRARY_PATH) in a private mount namespace with a copy of
//! /etc: nothing on the machine is installed or changed.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;

const SCRIPT: &str = r#"
set -euo pipefail
cd "$T"
# libnss_sss without installing the package (its postinst would edit the machine's nsswitch.conf).
mkdir nss && cd nss
apt-get download libnss-sss > download.out 2>&1 || { apt-get update -qq && apt-get download libnss-sss > download.out 2>&1; }
dpkg-deb -x libnss-sss_*.deb root
cd "$T"
lib=$(dirname "$(find "$T/nss/root" -name 'libnss_sss.so.2' | head -1)")
[ -n "$lib" ] || { echo "libnss_sss.so.2 not found in the package" >&2; exit 1; }
cp -a /etc etc-work
mount --bind etc-work /etc
# pam-auth-update keeps its profiles and state outside /etc: private copies of those too.
cp -a /usr/share/pam-configs pam-configs && mount --bind pam-configs /usr/share/pam-configs
cp -a /var/lib/pam var-lib-pam && mount --bind var-lib-pam /var/lib/pam
sed -i 's/^passwd:.*/passwd: files sss/; s/^group:.*/group: files sss/' /etc/nsswitch.conf
grep -q '^passwd: files sss' /etc/nsswitch.conf
export LD_LIBRARY_PATH="$lib"
# The source is there and not answering: a name the files lack is an error, not "no such user".
set +e; python3 -c '
import ctypes, ctypes.util, sys
libc = ctypes.CDLL(ctypes.util.find_library("c"))
buf = ctypes.create_string_buffer(4096); res = ctypes.c_void_p(); pw = (ctypes.c_char * 256)()
sys.exit(libc.getpwnam_r(b"nosuchuser", pw, buf, 4096, ctypes.byref(res)))'; echo $? > nss-errno.out; set -e

kw() { "$KW" --config "$CFG" "$@"; }
set +e; kw install --unit-dir "$T/units" --tmpfiles-dir "$T/tmpfiles" > install.out 2>&1; echo $? > install.rc; set -e
getent passwd _keyward > keyward-user.out || true

"$HELPER" --config "$CFG" 2>>helper.err & echo $! > helper.pid
trap 'kill "$(cat "$T/helper.pid")" 2>/dev/null || true' EXIT
for _ in $(seq 200); do [ -S run/helper.sock ] && break; sleep 0.05; done
printf '%s\n' "$INSTALL_PASS" | kw bootstrap data --passphrase-stdin > /dev/null
groupadd keyward-users
useradd --no-create-home --groups keyward-users bob
printf 'bob pass\n' | kw grant data bob --passphrase-stdin > /dev/null
# bob leaves the local files; only the silent directory could say whether he exists.
userdel bob
set +e; kw verify data --json > verify.json; echo $? > verify.rc; set -e
kw status data --json | tr -d ' \n' | grep -c '"user":"bob"' > bob-kept.out || true
kill "$(cat helper.pid)"; wait "$(cat helper.pid)" 2>/dev/null || true
"#;

#[test]
fn an_nss_source_that_does_not_answer_is_unknown_never_deleted() {
    let inst = Instance::prepare();
    // The service user of a real install, and a policy that would revoke a deleted user.
    let cfg = std::fs::read_to_string(&inst.config)
        .unwrap()
        .replace("service_user = \"nobody\"\n", "")
        .replace("[policy]\n", "[policy]\nrevoke_unmanaged = true\n");
    std::fs::write(&inst.config, cfg).unwrap();
    run_namespace_script(&inst, SCRIPT);
    let read = |f: &str| script_output(&inst, f);
    assert_ne!(
        read("nss-errno.out"),
        "0",
        "the source answered: the test proves nothing"
    );
    assert_eq!(read("install.rc"), "0", "{}", read("install.out"));
    assert!(read("keyward-user.out").starts_with("_keyward:"));
    let v: serde_json::Value = serde_json::from_str(&read("verify.json")).unwrap();
    let bob = &v["volumes"][0]["users"][0];
    assert_eq!(bob["user"], "bob", "{v}");
    assert_eq!(bob["status"], "unknown", "{v}");
    assert_eq!(bob["revoked"], false, "{v}");
    assert_eq!(
        read("bob-kept.out"),
        "1",
        "bob's slot was revoked on an unanswered lookup"
    );
}
