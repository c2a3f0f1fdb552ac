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
    let fill = log_dir.join("fill");
    // Leave 1 MiB + 96 KiB free: above the reserve, so changes are allowed.
    in_helper_ns(
        &inst,
        &format!(
            "dd if=/dev/zero of={0} bs=64k 2>/dev/null; truncate -s -1120K {0}",
            fill.display()
        ),
    );
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
