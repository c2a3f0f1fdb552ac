//! `keyward install` / `uninstall` for real (useradd, userdel, directories, units), inside a
//! private mount namespace whose /etc is a copy: the machine's own /etc is never touched.
//! Install twice changes nothing the second time; uninstall releases keyward's slots and leaves
//! /etc as it was (shadow-utils' own `-` backup files aside); uninstall refuses, removing
//! nothing, when keyward's slots are a volume's only way in.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;

use common::*;

const SCRIPT: &str = r#"
set -euo pipefail
cd "$T"
cp -a /etc etc-work
cp -a /etc etc-pristine
mount --bind etc-work /etc
# pam-auth-update keeps its profiles and state outside /etc: private copies of those too.
cp -a /usr/share/pam-configs pam-configs && mount --bind pam-configs /usr/share/pam-configs
cp -a /var/lib/pam var-lib-pam && mount --bind var-lib-pam /var/lib/pam
kw() { "$KW" --config "$CFG" "$@"; }
start_helper() {
  "$HELPER" --config "$CFG" 2>>helper.err & echo $! > helper.pid
  for _ in $(seq 200); do [ -S run/helper.sock ] && return 0; sleep 0.05; done
  echo "helper did not start" >&2; cat helper.err >&2; exit 1
}
stop_helper() { kill "$(cat helper.pid)" 2>/dev/null || true; wait "$(cat helper.pid)" 2>/dev/null || true; }

kw install > install1.out
kw install > install2.out
getent passwd _keyward > passwd.out
getent shadow _keyward | cut -d: -f2 > shadowpw.out
stat -c '%n %U %G %a' state run log agent > stat.out
ls /etc/systemd/system /etc/tmpfiles.d > units.out
grep -h pam_keyward /etc/pam.d/common-auth /etc/pam.d/common-password > pam-enabled.out || true
cp /etc/pam.d/keyward pam-service.out || true

start_helper
printf '%s\n' "$INSTALL_PASS" | kw bootstrap data --passphrase-stdin > bootstrap.out
printf 'daemon pw\n' | kw grant data daemon --passphrase-stdin > grant.out
set +e
kw uninstall > uninstall-noyes.out 2>&1; echo $? > uninstall-noyes.rc
set -e
kw uninstall --yes > uninstall.out 2>&1
stop_helper
cryptsetup luksDump --dump-json-metadata disk.img > after-uninstall.json
diff -r --no-dereference -x 'passwd-' -x 'shadow-' -x 'group-' -x 'gshadow-' etc-pristine /etc > etc.diff || true
ls -d state run log agent > leftover.out 2>/dev/null || true
(ls /etc/systemd/system /etc/tmpfiles.d | grep keyward || true) > units-after.out

# Refusal: keyward's slots are the only way in.
kw install > reinstall.out
start_helper
printf '%s\n' "$INSTALL_PASS" | kw bootstrap data --passphrase-stdin > bootstrap2.out
cryptsetup luksKillSlot --batch-mode disk.img 0
set +e
kw uninstall --yes > refused.out 2>&1; echo $? > refused.rc
set -e
stop_helper
getent passwd _keyward > still-there.out
cryptsetup luksDump --dump-json-metadata disk.img > after-refusal.json
"#;

#[test]
fn install_uninstall_in_a_private_namespace() {
    let inst = Instance::prepare();
    let t = inst.root.path();
    // The service user is the real `_keyward`, created inside the namespace only.
    let cfg = std::fs::read_to_string(&inst.config)
        .unwrap()
        .replace("service_user = \"nobody\"", "service_user = \"_keyward\"");
    std::fs::write(&inst.config, cfg).unwrap();
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "bash", "-c", SCRIPT])
        .env("T", t)
        .env("KW", bin("keyward"))
        .env("HELPER", bin("keyward-helper"))
        .env("CFG", &inst.config)
        .env("INSTALL_PASS", INSTALL_PASS)
        .output()
        .unwrap();
    let read = |f: &str| std::fs::read_to_string(t.join(f)).unwrap_or_default();
    assert!(
        out.status.success(),
        "script failed: {}\nhelper: {}",
        String::from_utf8_lossy(&out.stderr),
        read("helper.err")
    );

    // The account: system uid, no home, no shell, locked password.
    let passwd = read("passwd.out");
    let fields: Vec<&str> = passwd.trim().split(':').collect();
    let uid: u32 = fields[2].parse().unwrap();
    assert!(uid < 1000, "system uid: {passwd}");
    assert_eq!(fields[5], "/nonexistent");
    assert_eq!(fields[6], "/usr/sbin/nologin");
    let pw = read("shadowpw.out");
    assert!(
        pw.starts_with('!') || pw.starts_with('*'),
        "password locked: {pw:?}"
    );

    // Directories with DESIGN.md section 7's owners and modes.
    let stat = read("stat.out");
    for want in [
        "state root root 700",
        "run root _keyward 750",
        "agent _keyward _keyward 700",
    ] {
        assert!(stat.contains(want), "{want} in {stat}");
    }
    assert!(
        stat.lines()
            .any(|l| l.starts_with("log root ") && l.ends_with(" 750")),
        "{stat}"
    );
    assert!(read("units.out").contains("keyward-helper.socket"));
    assert!(read("units.out").contains("keyward.conf"));
    let pam = read("pam-enabled.out");
    assert_eq!(
        pam.lines().count(),
        3,
        "pam_keyward in common-auth, common-password, and its `stash` line for directory \
         users: {pam}"
    );
    assert!(pam.contains("pam_keyward.so stash"), "{pam}");
    assert!(
        read("pam-service.out").contains("@include common-auth"),
        "the `keyward` PAM service is written"
    );

    // Idempotent.
    assert!(read("install1.out").contains("created system user"));
    assert_eq!(
        read("install2.out").trim(),
        "keyward is already installed; nothing changed"
    );

    // Uninstall without --yes does nothing; with it, keyward's slots go and /etc is as before.
    assert_eq!(read("uninstall-noyes.rc").trim(), "2");
    assert!(
        read("uninstall.out").contains("removed keyward keyslots"),
        "{}",
        read("uninstall.out")
    );
    let meta: serde_json::Value = serde_json::from_str(&read("after-uninstall.json")).unwrap();
    assert_eq!(
        meta["keyslots"].as_object().unwrap().len(),
        1,
        "only the installer's slot remains"
    );
    assert!(meta["tokens"].as_object().unwrap().is_empty());
    assert_eq!(read("etc.diff"), "", "/etc changed");
    assert_eq!(read("leftover.out"), "", "directories left behind");
    assert_eq!(read("units-after.out"), "", "units left behind");

    // Refused when keyward's slot is the only way in: exit 4, nothing removed.
    assert_eq!(read("refused.rc").trim(), "4", "{}", read("refused.out"));
    assert!(read("still-there.out").contains("_keyward"));
    let meta: serde_json::Value = serde_json::from_str(&read("after-refusal.json")).unwrap();
    assert_eq!(
        meta["tokens"].as_object().unwrap().len(),
        1,
        "the service slot stays"
    );
}
