//! A process that is not root listening at the helper's socket path is not the helper, and is
//! sent nothing (issue 17): not by `keyward` handing over a passphrase, not by a real login
//! through the PAM stack (pam_unix, then pam_keyward.so). The stand-in listener counts every
//! byte it receives; the same listener run by root is the control that shows it does count.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::BufRead;
use std::process::{Child, Command, Stdio};

use common::*;

/// Bind `argv[1]`, print `ready <euid>`, then for each of `argv[2]` connections answer the
/// first bytes with `argv[3]` (hex: the helper's hello reply, so a client that went on would
/// send its request, password and all) and print how many bytes arrived before the client
/// closed (5 s at most each).
const LISTENER: &str = include_str!("../../../tests/impostor/listener.py");

/// The frame a helper answers a hello with, in hex.
fn hello_reply_hex() -> String {
    let reply = keyward_core::ipc::encode_frame(&keyward_core::ipc::Response::Ok(
        keyward_core::ipc::Reply::Hello {
            version: keyward_core::ipc::PROTOCOL_VERSION,
        },
    ))
    .unwrap();
    reply.iter().map(|b| format!("{b:02x}")).collect()
}

struct Listener {
    child: Child,
    lines: std::io::Lines<std::io::BufReader<std::process::ChildStdout>>,
}

impl Listener {
    /// Run the listener as `nobody` at `socket`, for `conns` connections.
    fn as_nobody(socket: &std::path::Path, conns: usize) -> Self {
        let mut child = Command::new("setpriv")
            .args([
                format!("--reuid={NOBODY}"),
                format!("--regid={NOBODY}"),
                "--clear-groups".into(),
                // Debian's, by path: root's PATH may lead to a python `nobody` cannot run.
                "/usr/bin/python3".into(),
                "-c".into(),
                LISTENER.into(),
            ])
            .arg(socket)
            .arg(conns.to_string())
            .arg(hello_reply_hex())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
        assert_eq!(
            lines.next().unwrap().unwrap(),
            format!("ready {NOBODY}"),
            "the listener did not start as nobody"
        );
        Listener { child, lines }
    }

    fn bytes_received(&mut self) -> usize {
        self.lines.next().unwrap().unwrap().parse().unwrap()
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn keyward_hands_no_passphrase_to_a_helper_socket_that_is_not_root() {
    let inst = Instance::prepare();
    // The helper's runtime directory, taken by nobody (as a stale or misconfigured path could
    // be) and its socket with it.
    let run = inst.path("run");
    std::fs::create_dir(&run).unwrap();
    std::os::unix::fs::chown(&run, Some(NOBODY), Some(NOBODY)).unwrap();
    let mut impostor = Listener::as_nobody(&inst.socket(), 2);
    for args in [
        &["grant", "data", "daemon", "--passphrase-stdin"][..],
        &["bootstrap", "data", "--passphrase-stdin"][..],
    ] {
        let out = inst.keyward(args, b"a passphrase for nobody\n");
        let err = stderr(&out);
        assert_eq!(code(&out), Some(5), "{args:?}: {err}");
        assert!(
            err.contains(&format!("uid {NOBODY}, not root")) && err.contains("nothing was sent"),
            "{args:?}: {err}"
        );
        assert_eq!(impostor.bytes_received(), 0, "{args:?}");
    }
}

const PAM_SCRIPT: &str = r#"
set -euo pipefail
cd "$T"
cp -a /etc etc-work
mount --bind etc-work /etc
useradd --no-create-home alice
printf 'alice:alice pass\n' | chpasswd
mkdir nobody root
chown 65534:65534 nobody
for who in nobody root; do
  printf 'auth requisite pam_unix.so\nauth optional %s socket=%s\naccount required pam_permit.so\n' \
    "$SO" "$T/$who/helper.sock" > /etc/pam.d/kw-$who
done
setpriv --reuid=65534 --regid=65534 --clear-groups /usr/bin/python3 -c "$LISTENER" "$T/nobody/helper.sock" 1 "$HELLO" > nobody.count &
/usr/bin/python3 -c "$LISTENER" "$T/root/helper.sock" 1 "$HELLO" > root.count &
for f in nobody root; do
  for _ in $(seq 100); do [ -s $f.count ] && break; sleep 0.05; done
done
for who in nobody root; do
  set +e
  printf 'alice pass\n' | timeout 30 pamtester kw-$who alice authenticate > login-$who.out 2>&1
  echo $? > login-$who.rc
  set -e
done
wait
"#;

#[test]
fn a_login_hands_no_password_to_a_helper_socket_that_is_not_root() {
    let run = PamScript::run(
        PAM_SCRIPT,
        &[
            ("LISTENER", LISTENER.to_owned()),
            ("HELLO", hello_reply_hex()),
        ],
    );
    let read = |f: &str| run.read(f);
    for who in ["nobody", "root"] {
        assert_eq!(
            read(&format!("login-{who}.rc")),
            "0",
            "{who}: the login failed: {}",
            read(&format!("login-{who}.out"))
        );
    }
    let counts = |who: &str| -> Vec<String> {
        read(&format!("{who}.count"))
            .lines()
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(counts("nobody"), [format!("ready {NOBODY}"), "0".into()]);
    // The control: the module did talk to the listener run by root (its hello, then nothing
    // more came back within the login budget).
    let root = counts("root");
    assert_eq!(
        root.first().map(String::as_str),
        Some("ready 0"),
        "{root:?}"
    );
    let sent: usize = root.get(1).unwrap().parse().unwrap();
    assert!(sent > 0, "{root:?}");
}
