//! Boot order through the real PAM stack (issue 18): whoever logs in gets the one LUKS2 slot
//! a passphrase typed at boot tries first (priority `prefer`, read with stock cryptsetup), and
//! stock `cryptsetup open --test-passphrase` with no slot named opens that slot; a password
//! change keeps it; with `[policy] primary_user` the primary user keeps it whoever logs in.
//! The service slot is `ignore`: stock `cryptsetup --debug open --test-passphrase` never tries
//! it for a typed passphrase, `--key-slot N` still opens it, the admin's way out
//! (`luksAddKey --key-slot N --new-key-slot M --key-file SECRET`) works, and a service slot
//! set back to `normal` (a volume bootstrapped before this) is `ignore` again after a restart.
//! Runs in a private mount namespace with a copy of /etc.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;

const SCRIPT: &str = r#"
# priority_of SLOT: the LUKS2 header's own word (stock cryptsetup), 1 when absent
priority_of() {
  cryptsetup luksDump --dump-json-metadata disk.img \
    | python3 -c "import json,sys; print(json.load(sys.stdin)['keyslots'].get('$1', {}).get('priority', 1))"
}
# boot_slot PASSWORD: the slot stock cryptsetup opens with no slot named (the boot path)
boot_slot() { printf '%s' "$1" | cryptsetup open --test-passphrase -v disk.img --key-file - 2>&1 | sed -n 's/^Key slot \([0-9]*\) unlocked.*/\1/p'; }
# tried PASSWORD: the slots stock cryptsetup tries, in order, with no slot named (--debug)
tried() { { printf '%s' "$1" | cryptsetup --debug open --test-passphrase disk.img --key-file - 2>&1 || true; } | sed -n 's/^# Trying to open LUKS2 keyslot \([0-9]*\)\.$/\1/p' | tr '\n' ' '; }
wait_until() { for _ in $(seq 600); do if "$@"; then return 0; fi; sleep 0.1; done; return 1; }
preferred() { local s; s=$(slot_of "$1"); [ -n "$s" ] && [ "$(priority_of "$s")" = 2 ]; }

groupadd keyward-users
useradd --no-create-home --groups keyward-users alice
useradd --no-create-home --groups keyward-users bob
printf 'alice:alice pass 1\nbob:bob pass 1\n' | chpasswd
printf 'auth requisite pam_unix.so\nauth optional %s socket=%s\naccount required pam_permit.so\npassword requisite pam_unix.so yescrypt\npassword optional %s socket=%s\n' \
  "$SO" "$T/run/helper.sock" "$SO" "$T/run/helper.sock" > /etc/pam.d/kwtest

start_helper
printf '%s\n' "$INSTALL_PASS" | kw bootstrap data --passphrase-stdin > /dev/null
svc=$(kw status data --json | tr -d ' \n' | grep -o '{[^{}]*"role":"service"[^{}]*}' | grep -o '"slot":[0-9]*' | cut -d: -f2)
priority_of "$svc" > service-priority.out
echo "$svc" > service-slot.out
secret=state/service/data
cryptsetup open --test-passphrase --key-slot "$svc" disk.img --key-file "$secret" && echo yes > service-by-number.ok
cryptsetup open --test-passphrase disk.img --key-file "$secret" 2>/dev/null || echo yes > service-unnamed-refused.ok

# alice logs in: her slot is preferred, and the boot path opens it first.
printf 'alice pass 1\n' | pamtester kwtest alice authenticate > /dev/null
wait_until preferred alice && echo yes > alice-preferred.ok
boot_slot 'alice pass 1' > alice-boot.out; slot_of alice > alice-slot.out
tried 'not a password' > wrong-tried.out

# bob logs in: his slot is preferred now, alice's is normal again.
printf 'bob pass 1\n' | pamtester kwtest bob authenticate > /dev/null
wait_until preferred bob && echo yes > bob-preferred.ok
priority_of "$(slot_of alice)" > alice-after-bob.out

# bob changes his password: the new slot is preferred at once.
printf 'bob pass 2\nbob pass 2\n' | pamtester kwtest bob chauthtok > /dev/null
wait_until preferred bob && [ "$(boot_slot 'bob pass 2')" = "$(slot_of bob)" ] && echo yes > bob-rekeyed.ok

# primary_user = alice: bob's login leaves alice's slot first.
sed -i 's/^\[policy\]$/[policy]\nprimary_user = "alice"/' "$CFG"
grep -q '^primary_user' "$CFG" || printf '[policy]\nprimary_user = "alice"\n' >> "$CFG"
stop_helper; start_helper
printf 'bob pass 2\n' | pamtester kwtest bob authenticate > /dev/null
wait_until preferred alice && echo yes > primary-alice.ok
sleep 1
priority_of "$(slot_of bob)" > bob-under-primary.out
tried 'not a password' > wrong-tried-end.out
stop_helper

# A volume bootstrapped before the service slot was ignore: the helper's start makes it so.
cryptsetup config disk.img --key-slot "$svc" --priority normal
priority_of "$svc" > service-reset.out
start_helper
svc_ignored() { [ "$(priority_of "$svc")" = 0 ]; }
wait_until svc_ignored && echo yes > service-converged.ok
stop_helper

# The admin's way out, named in boot_order.rs and OPERATIONS.md: a new passphrase opened by
# the stored service secret, the service slot named.
free=$(cryptsetup luksDump --dump-json-metadata disk.img | python3 -c 'import json,sys; k=json.load(sys.stdin)["keyslots"]; print(min(n for n in range(32) if str(n) not in k))')
cryptsetup luksAddKey --batch-mode --pbkdf pbkdf2 --pbkdf-force-iterations 1000 --key-slot "$svc" --new-key-slot "$free" \
  --key-file "$secret" disk.img --new-keyfile <(printf 'admin way out') && echo yes > way-out-added.ok
[ "$(boot_slot 'admin way out')" = "$free" ] && echo yes > way-out-opens.ok
"#;

#[test]
fn the_user_who_logs_in_is_tried_first_at_boot() {
    let inst = Instance::prepare();
    run_namespace_script(&inst, &format!("{SHELL_PRELUDE}{SCRIPT}"));
    let read = |f: &str| script_output(&inst, f);
    let ctx = || script_context(&inst);
    let svc = read("service-slot.out");
    assert_eq!(
        read("service-priority.out"),
        "0",
        "the service slot is ignore"
    );
    assert_eq!(read("service-by-number.ok"), "yes", "--key-slot N opens it");
    assert_eq!(
        read("service-unnamed-refused.ok"),
        "yes",
        "a typed secret never tries it"
    );
    for f in ["wrong-tried.out", "wrong-tried-end.out"] {
        let tried: Vec<String> = read(f).split_whitespace().map(str::to_owned).collect();
        assert!(
            tried.len() >= 2,
            "{f}: the trace names the tried slots: {tried:?}"
        );
        assert!(
            !tried.contains(&svc),
            "{f}: a typed passphrase tried service slot {svc}: {tried:?}"
        );
    }
    assert_eq!(read("alice-preferred.ok"), "yes", "{}", ctx());
    assert_eq!(
        read("alice-boot.out"),
        read("alice-slot.out"),
        "boot path opens alice's slot"
    );
    assert_eq!(read("bob-preferred.ok"), "yes", "{}", ctx());
    assert_eq!(read("alice-after-bob.out"), "1", "only one preferred slot");
    assert_eq!(read("bob-rekeyed.ok"), "yes", "{}", ctx());
    assert_eq!(read("primary-alice.ok"), "yes", "{}", ctx());
    assert_eq!(read("bob-under-primary.out"), "1", "{}", ctx());
    assert_eq!(
        read("service-reset.out"),
        "1",
        "the test set it back to normal"
    );
    assert_eq!(read("service-converged.ok"), "yes", "{}", ctx());
    assert_eq!(read("way-out-added.ok"), "yes", "{}", ctx());
    assert_eq!(read("way-out-opens.ok"), "yes", "{}", ctx());
}
