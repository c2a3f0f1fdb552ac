//! Attacks on keyward's local side by a hostile user or a compromised agent, each with the
//! real helper and a real LUKS2 image. Each test's comment says what the attack was and what it
//! did on the code it was found on; the test guards the fix.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;

use common::*;
use keyward_core::command::{Action, Command as SignedBody, SignedCommand};
use keyward_core::ipc::{self, Request};
use keyward_core::VolumeName;

/// Speaks the helper's frames as whoever runs it: a hello, then the frame in `$2` `$3` times,
/// reading each answer. Prints how many answers came back.
const REPEAT_FRAME: &str = r#"
import socket, struct, sys
sock, hello, frame, n = sys.argv[1], open(sys.argv[2], 'rb').read(), open(sys.argv[3], 'rb').read(), int(sys.argv[4])
def answer(s):
    head = b''
    while len(head) < 4:
        got = s.recv(4 - len(head))
        if not got: return None
        head += got
    (size,) = struct.unpack('>I', head)
    body = b''
    while len(body) < size:
        got = s.recv(size - len(body))
        if not got: return None
        body += got
    return body
answers, s, last = 0, None, b''
for _ in range(n):
    try:
        if s is None:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(sock)
            s.sendall(hello)
            if answer(s) is None: s.close(); s = None; continue
        s.sendall(frame)
        got = answer(s)
    except OSError:
        got = None
    if got is None:
        s.close(); s = None; continue
    answers, last = answers + 1, got
print(answers)
sys.stderr.write(last.decode(errors='replace'))
"#;

/// Send `request` `n` times from the agent's uid (`nobody` here), on as few connections as the
/// helper allows; returns how many were answered.
fn as_agent_repeat(inst: &Instance, request: &Request, n: usize) -> usize {
    let hello = ipc::encode_frame(&Request::Hello {
        version: ipc::PROTOCOL_VERSION,
    })
    .unwrap();
    let frame = ipc::encode_frame(request).unwrap();
    let (hello_path, frame_path) = (inst.path("hello.frame"), inst.path("request.frame"));
    std::fs::write(&hello_path, hello.as_slice()).unwrap();
    std::fs::write(&frame_path, frame.as_slice()).unwrap();
    for p in [&hello_path, &frame_path] {
        chmod(p, 0o644);
    }
    let out = Command::new("setpriv")
        .args([
            &format!("--reuid={NOBODY}"),
            &format!("--regid={NOBODY}"),
            "--clear-groups",
            "/usr/bin/python3",
            "-c",
            REPEAT_FRAME,
        ])
        .arg(inst.socket())
        .arg(&hello_path)
        .arg(&frame_path)
        .arg(n.to_string())
        .output()
        .unwrap();
    assert!(out.status.success(), "agent script: {}", stderr(&out));
    eprintln!("the helper's last answer to the agent: {}", stderr(&out));
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

/// The agent class may relay signed commands, and a relayed command's record is never folded
/// (each refusal names the command: evidence of a forgery) and counts as a change record —
/// so, unlike every other record of the agent's, it was written into the space kept for change
/// records. The agent sends forged commands (no key signed them; this device has no escrow
/// server at all), each refused with nothing changed, until the log's file system is down to
/// that reserve; from then on the helper refused every admin change (here `service rotate`,
/// exit 4 "nothing was changed: … free"), as it would every grant and every rekey at a
/// password change: the agent had switched keyward off, which attack_review.rs's
/// `the_agent_cannot_eat_the_space_kept_for_change_records` says it cannot.
#[test]
fn the_agent_cannot_eat_the_change_reserve_with_forged_commands() {
    let mut inst = Instance::prepare();
    let log_dir = log_dir_on_tmpfs(&mut inst, "2m");
    let inst = inst.start();
    inst.bootstrap();
    // Leave 1 MiB + 96 KiB free: above the reserve, so changes are allowed.
    fill_log_dir_leaving(&inst, &log_dir, "1120K");
    let out = inst.keyward(&["service", "rotate", "data"], b"");
    assert_eq!(code(&out), Some(0), "room for a change: {}", stderr(&out));

    let forged = SignedCommand {
        command: SignedBody {
            id: "forged-".repeat(9),
            device: "dev-1".into(),
            issued: 0,
            expires: u64::MAX / 2,
            action: Action::RotateService {
                volume: VolumeName::parse("data").unwrap(),
            },
        },
        signature: vec![0; 64],
    };
    let answered = as_agent_repeat(&inst, &Request::Command { signed: forged }, 1000);
    assert!(
        answered > 0,
        "the helper answered none of the agent's commands"
    );

    let out = inst.keyward(&["service", "rotate", "data"], b"");
    assert_eq!(
        code(&out),
        Some(0),
        "the agent's {answered} forged commands made the helper refuse an admin's change: {}",
        stderr(&out)
    );
}

const CASE_SCRIPT: &str = r#"
source "$DIRENV"
trap 'kill "$(cat "$T/helper.pid" 2>/dev/null)" 2>/dev/null || true; dir_stop' EXIT
DIR_SSSD_EXTRA='case_sensitive = false' dir_start
# The helper's check: the directory decides. A login service: pam_sss, then keyward's capture.
printf 'auth required pam_sss.so\naccount required pam_permit.so\n' > /etc/pam.d/keyward
printf 'auth [success=1 default=ignore] pam_sss.so forward_pass\nauth requisite pam_deny.so\nauth required pam_permit.so\nauth optional %s socket=%s\naccount required pam_permit.so\n' \
  "$SO" "$T/run/helper.sock" > /etc/pam.d/kwlogin
printf 'auth required pam_sss.so\naccount required pam_permit.so\n' > /etc/pam.d/kwprobe
start_helper
trap 'kill "$(cat "$T/helper.pid")" 2>/dev/null || true; dir_stop' EXIT
printf '%s\n' "$INSTALL_PASS" | kw bootstrap data --passphrase-stdin > /dev/null
getent passwd DAVE > getent-DAVE.out || true
# sssd's PAM responder answers a moment after its NSS one.
probe() { printf '%s\n' "$DIR_PW_dave" | pamtester kwprobe dave authenticate > probe.out 2>&1; }
dir_wait probe || true
n=0
for name in dave DAVE Dave dAve daVe davE; do
  printf '%s\n' "$DIR_PW_dave" | pamtester kwlogin "$name" authenticate >> logins.out 2>&1 && n=$((n + 1))
done
echo "$n" > logins-ok.out
# Let the helper's jobs finish (each checks the password with the directory first).
for _ in $(seq 100); do grep -q '"op":"login-capture"' log/audit.jsonl && break; sleep 0.1; done
sleep 5
kw status data --json > status.json
"#;

/// A directory whose names are case-insensitive (sssd's `case_sensitive = false`, the usual
/// setting for Active Directory) takes `DAVE`, `Dave` and `dave` as one account, and PAM hands
/// keyward the name as typed at the login prompt, while the helper matches an existing right by
/// the exact name. Were every spelling a holder of its own, a directory user could fill the
/// volume's 32 keyslots by logging in under spellings of their own name (then no one else is
/// granted a right and no recovery key can be rotated). The attack fails: a user name keyward
/// takes is lower case, so only `dave` is captured (seen failing, six slots for one uid, with
/// upper case allowed in `UserName::parse`).
#[test]
fn one_account_under_many_spellings_holds_one_slot() {
    let inst = Instance::prepare();
    let cfg = std::fs::read_to_string(&inst.config)
        .unwrap()
        .replace("uid_min = 1\n", "");
    std::fs::write(&inst.config, cfg).unwrap();
    set_policy(&inst, "managed_group = \"kwdir\"");
    let manifest = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = namespace_script(&inst, &format!("{SHELL_PRELUDE}{CASE_SCRIPT}"))
        .env("DIRENV", manifest.join("tests/directory/env.sh"))
        .output()
        .unwrap();
    let read = |f: &str| script_output(&inst, f);
    assert!(
        out.status.success(),
        "script: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        script_context(&inst)
    );
    // The control: the directory does take every spelling.
    assert!(
        read("getent-DAVE.out").starts_with("dave:"),
        "sssd folds case: {}",
        read("getent-DAVE.out")
    );
    assert_eq!(
        read("logins-ok.out"),
        "6",
        "{}\nprobe: {}",
        read("logins.out"),
        read("probe.out")
    );
    let status: serde_json::Value = serde_json::from_str(&read("status.json")).unwrap();
    let users: Vec<&serde_json::Value> = status["volumes"][0]["holders"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["role"] == "user")
        .collect();
    assert_eq!(
        users.len(),
        1,
        "one account, one slot: {users:?}\n{}",
        script_context(&inst)
    );
}
