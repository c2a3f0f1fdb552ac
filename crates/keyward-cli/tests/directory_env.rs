//! The directory-user test environment itself (tests/directory/env.sh), with the stock stack and
//! no keyward in it: a real OpenLDAP slapd and a real sssd in a private mount namespace. Directory
//! users resolve (uids far below and far above the usual range too) with their groups; after
//! `dir_pam_update` the namespace's PAM stack is Debian's with pam_sss, through which a directory
//! user logs in, changes their own password (in the directory), logs in from sssd's cache while
//! slapd is down, and logs in with an admin-reset password once it is back; a group change shows
//! within seconds. The host's /etc is never touched (the script works on a copy).
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

const SCRIPT: &str = r#"
source "$DIR_ENV"
trap dir_stop EXIT
check() { # check NAME CMD... : output in NAME.log, exit code in NAME.rc; never stops the script
  local name=$1
  shift
  set +e
  "$@" > "$name.log" 2>&1
  echo $? > "$name.rc"
  set -e
}
ms_since() { echo $(( ($(date +%s%N) - $1) / 1000000 )); }
login() { printf '%s\n' "$2" | pamtester kwdir-test "$1" authenticate; }
# dave changes his own password: not root, so pam_sss asks for the current one first.
dave_chpw() {
  printf '%s\n%s\n%s\n' "$1" "$2" "$2" \
    | setpriv --reuid=dave --regid="$DIR_PRIMARY_GID" --init-groups pamtester kwdir-test dave chauthtok
}
whoami_as() { ldapwhoami -x -D "$(dir_user_dn "$1")" -w "$2"; }
NEW='Bright orchard 5Kp'
RESET='Quiet harbour 6Lm'

t0=$(date +%s%N)
dir_start
ms_since "$t0" > setup-ms.out
echo "$DIR_PORT" > port.out

for u in dave frank gail hugo; do getent passwd "$u" > "getent-$u.out"; done
for u in dave erin frank gail hugo; do id -Gn "$u" > "groups-$u.out"; done
getent group kwdir > group-kwdir.out
grep -E '^(passwd|group|shadow):' /etc/nsswitch.conf > nsswitch.out

t0=$(date +%s%N)
dir_pam_update > pam-update.out 2>&1
ms_since "$t0" > pam-update-ms.out
cp /etc/pam.d/common-auth common-auth.out
cp /etc/pam.d/common-password common-password.out
printf 'auth include common-auth\naccount include common-account\npassword include common-password\n' \
  > /etc/pam.d/kwdir-test

# Online: the right password, a wrong one, the account stack.
t0=$(date +%s%N)
check login-ok login dave "$DIR_PW_dave"
ms_since "$t0" > login-ms.out
check login-wrong login dave 'not the password 1'
login_acct() { printf '%s\n' "$2" | pamtester kwdir-test "$1" authenticate acct_mgmt; }
check acct login_acct dave "$DIR_PW_dave"

# dave's own password change goes to the directory.
check chpw dave_chpw "$DIR_PW_dave" "$NEW"
check whoami-new whoami_as dave "$NEW"
check whoami-old whoami_as dave "$DIR_PW_dave"
check login-new login dave "$NEW"

# slapd down: sssd's cached credentials.
dir_stop_slapd
t0=$(date +%s%N)
check offline-ok login dave "$NEW"
ms_since "$t0" > offline-ms.out
check offline-wrong login dave "$DIR_PW_dave"
check offline-getent getent passwd dave

# Back up, and an admin reset: the new password works, the one before does not.
t0=$(date +%s%N)
dir_start_slapd
ms_since "$t0" > restart-ms.out
dir_reset_password dave "$RESET"
check reset-ok login dave "$RESET"
check reset-old login dave "$NEW"

# A group change, seen by waiting (short cache timeouts) and at once after a flush.
id -Gn erin > erin-before.out
dir_remove_member erin
t0=$(date +%s%N)
if dir_wait bash -c '! id -Gn erin | grep -qw kwdir'; then ms_since "$t0" > erin-gone-ms.out; fi
id -Gn erin > erin-after.out
id -Gn gail > gail-before.out
dir_remove_member gail
dir_flush_cache
id -Gn gail > gail-after.out

cp "$T/dir.pids" all-pids.out
dir_stop
for pid in $(cat all-pids.out); do if kill -0 "$pid" 2>/dev/null; then echo "$pid" >> still-running.out; fi; done
"#;

/// Kills, on drop, whatever a script that died early left in "$T/dir.pids" (slapd, sssd*).
struct LeftoverPids(PathBuf);

impl Drop for LeftoverPids {
    fn drop(&mut self) {
        let pids = std::fs::read_to_string(&self.0).unwrap_or_default();
        for pid in pids.split_whitespace() {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            if comm.starts_with("slapd") || comm.starts_with("sssd") {
                let _ = Command::new("kill").args(["-9", pid]).status();
            }
        }
    }
}

fn missing_tools() -> Vec<&'static str> {
    let bins = [
        "/usr/sbin/slapd",
        "/usr/sbin/sssd",
        "/usr/sbin/sss_cache",
        "/usr/bin/ldapwhoami",
        "/usr/bin/ldappasswd",
        "/usr/bin/pamtester",
        "/usr/share/pam-configs/sss",
    ];
    bins.into_iter()
        .filter(|p| !Path::new(p).exists())
        .collect()
}

#[test]
fn directory_users_through_stock_sssd_and_pam() {
    let missing = missing_tools();
    if !missing.is_empty() {
        skip_or_fail(&format!(
            "directory env: {} not installed (bash scripts/deps installs them)",
            missing.join(", ")
        ));
        return;
    }
    let inst = Instance::prepare();
    let t = inst.root.path();
    let _guard = LeftoverPids(t.join("dir.pids"));
    let env_sh = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/directory/env.sh");
    let script = format!("{SHELL_PRELUDE}\nDIR_ENV='{}'\n{SCRIPT}", env_sh.display());
    let read = |f: &str| {
        std::fs::read_to_string(t.join(f))
            .unwrap_or_default()
            .trim()
            .to_owned()
    };
    let logs = || {
        let mut s = String::new();
        for f in [
            "dir/slapd.log",
            "dir/sssd.out",
            "dir/sssd-log/sssd_example.log",
            "dir/sssd-log/sssd_pam.log",
        ] {
            let text = read(f);
            let tail: Vec<&str> = text.lines().rev().take(25).collect();
            s.push_str(&format!("--- {f}\n"));
            for l in tail.into_iter().rev() {
                s.push_str(l);
                s.push('\n');
            }
        }
        s
    };
    let out = namespace_script(&inst, &script).output().unwrap();
    assert!(
        out.status.success(),
        "script: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        logs()
    );
    let rc = |name: &str| read(&format!("{name}.rc"));
    let log = |name: &str| read(&format!("{name}.log"));

    // Identity.
    let dave: Vec<String> = read("getent-dave.out")
        .split(':')
        .map(str::to_owned)
        .collect();
    assert_eq!(dave.len(), 7, "{dave:?}");
    assert_eq!(
        (dave[0].as_str(), dave[2].as_str(), dave[5].as_str()),
        ("dave", "200001", "/nonexistent")
    );
    assert!(read("getent-gail.out").starts_with("gail:*:900:"));
    assert!(read("getent-hugo.out").starts_with("hugo:*:3000000000:"));
    let groups = |u: &str| -> Vec<String> {
        read(&format!("groups-{u}.out"))
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    };
    for u in ["dave", "erin", "gail", "hugo"] {
        assert!(
            groups(u).contains(&"kwdir".to_owned()),
            "{u}: {:?}",
            groups(u)
        );
    }
    assert!(!groups("frank").is_empty(), "frank resolves");
    assert!(
        !groups("frank").contains(&"kwdir".to_owned()),
        "{:?}",
        groups("frank")
    );
    assert!(read("group-kwdir.out").starts_with("kwdir:*:250000:"));
    for db in ["passwd", "group", "shadow"] {
        let line = read("nsswitch.out")
            .lines()
            .find(|l| l.starts_with(&format!("{db}:")))
            .unwrap_or_default()
            .to_owned();
        let srcs: Vec<&str> = line.split_whitespace().skip(1).collect();
        assert_eq!(srcs.get(..2), Some(&["files", "sss"][..]), "{line}");
    }

    // The PAM stack pam-auth-update makes with libpam-sss, and nothing printed.
    assert_eq!(read("pam-update.out"), "");
    assert!(
        read("common-auth.out").contains("pam_sss.so"),
        "{}",
        read("common-auth.out")
    );
    assert!(
        read("common-password.out")
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>()
                == ["password", "sufficient", "pam_sss.so", "use_authtok"]),
        "{}",
        read("common-password.out")
    );

    // Logins, online.
    assert_eq!(rc("login-ok"), "0", "{}\n{}", log("login-ok"), logs());
    assert!(log("login-ok").contains("successfully authenticated"));
    assert_eq!(rc("login-wrong"), "1", "{}", log("login-wrong"));
    assert!(log("login-wrong").contains("Authentication failure"));
    assert_eq!(rc("acct"), "0", "{}", log("acct"));

    // dave's own change, through pam_sss into the directory.
    assert_eq!(rc("chpw"), "0", "{}\n{}", log("chpw"), logs());
    assert!(
        log("chpw").contains("Current Password"),
        "asked as a user, not root: {}",
        log("chpw")
    );
    assert_eq!(rc("whoami-new"), "0", "{}", log("whoami-new"));
    assert!(log("whoami-new").contains("uid=dave,ou=people,dc=example,dc=test"));
    assert_eq!(rc("whoami-old"), "49", "{}", log("whoami-old"));
    assert_eq!(rc("login-new"), "0", "{}", log("login-new"));

    // slapd down: sssd's cache.
    assert_eq!(
        rc("offline-ok"),
        "0",
        "cached login: {}\n{}",
        log("offline-ok"),
        logs()
    );
    assert_eq!(rc("offline-wrong"), "1", "{}", log("offline-wrong"));
    assert_eq!(rc("offline-getent"), "0", "{}", log("offline-getent"));

    // Back online, an admin reset.
    assert_eq!(rc("reset-ok"), "0", "{}\n{}", log("reset-ok"), logs());
    assert_eq!(rc("reset-old"), "1", "{}", log("reset-old"));

    // Group changes.
    assert!(read("erin-before.out")
        .split_whitespace()
        .any(|g| g == "kwdir"));
    assert!(
        !read("erin-gone-ms.out").is_empty(),
        "erin still in kwdir after 30 s: {}",
        read("erin-after.out")
    );
    assert!(!read("erin-after.out")
        .split_whitespace()
        .any(|g| g == "kwdir"));
    assert!(read("gail-before.out")
        .split_whitespace()
        .any(|g| g == "kwdir"));
    assert!(
        !read("gail-after.out")
            .split_whitespace()
            .any(|g| g == "kwdir"),
        "a flushed cache answers from the directory: {}",
        read("gail-after.out")
    );

    // Everything stopped.
    assert_eq!(read("still-running.out"), "");

    println!(
        "directory env: setup (slapd, data, sssd, first lookup) {} ms on port {}; \
         pam-auth-update {} ms; online login {} ms; offline login {} ms; slapd restart and \
         sssd back online {} ms; group removal seen after {} ms",
        read("setup-ms.out"),
        read("port.out"),
        read("pam-update-ms.out"),
        read("login-ms.out"),
        read("offline-ms.out"),
        read("restart-ms.out"),
        read("erin-gone-ms.out"),
    );
}
