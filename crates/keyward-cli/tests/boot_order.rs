//! Boot order through the real PAM stack (issue 18): whoever logs in gets the one LUKS2 slot
//! a passphrase typed at boot tries first (priority `prefer`, read with stock cryptsetup), and
//! stock `cryptsetup open --test-passphrase` with no slot named opens that slot; a password
//! change keeps it; with `[policy] primary_user` the primary user keeps it whoever logs in.
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

# alice logs in: her slot is preferred, and the boot path opens it first.
printf 'alice pass 1\n' | pamtester kwtest alice authenticate > /dev/null
wait_until preferred alice && echo yes > alice-preferred.ok
boot_slot 'alice pass 1' > alice-boot.out; slot_of alice > alice-slot.out

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
stop_helper
"#;

#[test]
fn the_user_who_logs_in_is_tried_first_at_boot() {
    let inst = Instance::prepare();
    run_namespace_script(&inst, &format!("{SHELL_PRELUDE}{SCRIPT}"));
    let read = |f: &str| script_output(&inst, f);
    let ctx = || script_context(&inst);
    assert_eq!(
        read("service-priority.out"),
        "1",
        "the service slot keeps the default order"
    );
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
}
