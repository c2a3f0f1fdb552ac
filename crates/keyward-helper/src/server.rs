//! The edge: accepting connections, classifying each caller once by its kernel credentials,
//! framing, the allow-list check, and the wire `Response` (an `OpError` becomes its error code
//! and so the CLI's exit code here, and nowhere else). Every request answered or refused is
//! recorded through `edge_audit`; what a request does is `dispatch`'s.

use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use keyward_core::access::{permits, CallerClass};
use keyward_core::ipc::{self, ErrorCode, Reply, Request, Response};
use keyward_sys::frame_io::{self, FrameFault};
use keyward_sys::peer::{self, Peer};

use crate::ctx::Ctx;
use crate::edge_audit::{audit, audit_answer, error, refuse, room_for_change, Subject};

/// At most this many root connections (the CLI, the PAM module) are served at once.
const MAX_ADMIN_CONNECTIONS: usize = 16;
/// At most this many of the agent's at once: a budget of its own, so the agent class (anyone
/// in the service user's shoes) can never take the connections root's CLI and logins need.
const MAX_AGENT_CONNECTIONS: usize = 4;
/// A whole request frame must arrive within this, however it is trickled; a client idle this
/// long between frames is dropped too.
const FRAME_DEADLINE: Duration = Duration::from_secs(5);
/// Writing a reply may take no longer.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// Connections in service, per class.
#[derive(Debug, Default)]
struct InService {
    admin: AtomicUsize,
    agent: AtomicUsize,
}

impl InService {
    fn of(&self, class: CallerClass) -> &AtomicUsize {
        match class {
            CallerClass::Agent => &self.agent,
            CallerClass::Admin => &self.admin,
        }
    }
}

/// Accept forever. Each caller is classified once, here, by its kernel credentials, and
/// counted against its class's budget; anyone else, or a caller over budget, is closed before
/// a byte is read, and recorded (refusals of one kind are folded into one record a minute).
pub fn serve(listener: &UnixListener, ctx: &Arc<Ctx>) {
    let in_service = Arc::new(InService::default());
    for stream in listener.incoming() {
        let stream = match stream {
            Ok(s) => s,
            Err(e) => {
                eprintln!("keyward-helper: accept: {e}");
                continue;
            }
        };
        let peer = match peer::credentials(&stream) {
            Ok(p) => p,
            Err(e) => {
                refuse(
                    ctx,
                    Subject::default(),
                    &format!("no peer credentials: {e}"),
                );
                continue;
            }
        };
        let Some(class) = CallerClass::of(peer.uid, Some(ctx.service_uid)) else {
            let unknown = Subject {
                peer: Some(peer),
                ..Subject::default()
            };
            refuse(ctx, unknown, "caller is neither root nor the service user");
            continue;
        };
        let max = match class {
            CallerClass::Agent => MAX_AGENT_CONNECTIONS,
            CallerClass::Admin => MAX_ADMIN_CONNECTIONS,
        };
        if in_service.of(class).fetch_add(1, Ordering::SeqCst) >= max {
            in_service.of(class).fetch_sub(1, Ordering::SeqCst);
            refuse(ctx, Subject::of(class, peer, None), "too many connections");
            continue;
        }
        let (ctx, in_service) = (Arc::clone(ctx), Arc::clone(&in_service));
        let spawned = std::thread::Builder::new()
            .name("conn".into())
            .spawn(move || {
                handle(stream, &ctx, peer, class);
                in_service.of(class).fetch_sub(1, Ordering::SeqCst);
            });
        if let Err(e) = spawned {
            eprintln!("keyward-helper: cannot start a connection thread: {e}");
        }
    }
}

/// Write `r` whole within [`WRITE_TIMEOUT`].
fn send(stream: &UnixStream, r: &Response) -> Result<(), FrameFault> {
    frame_io::write_message(stream, r, Instant::now() + WRITE_TIMEOUT)
}

fn handle(stream: UnixStream, ctx: &Arc<Ctx>, peer: Peer, class: CallerClass) {
    // A refusal or a bad frame: recorded, answered, and the connection closed (by returning).
    let refuse = |op: &str, request: Option<&Request>, code: ErrorCode, msg: String| {
        let result = format!("error:{code:?}: {msg}");
        audit(ctx, Subject::of(class, peer, request), op, &result);
        let _ = send(&stream, &error(code, msg));
    };
    let mut greeted = false;
    loop {
        // Frames carry passwords (a login capture, a grant): `frame_io` reads each into one
        // buffer of its final size, wiped when dropped, whole within the deadline however it
        // is trickled.
        let payload = match frame_io::read_frame(&stream, Instant::now() + FRAME_DEADLINE) {
            Ok(p) => p,
            Err(FrameFault::Closed) => return,
            Err(fault) => {
                let why = match fault {
                    FrameFault::Frame(e) => e.to_string(),
                    FrameFault::TooSlow => "client too slow".to_owned(),
                    FrameFault::Cut => "read: unexpected end of file".to_owned(),
                    FrameFault::Io(e) => format!("read: {e}"),
                    FrameFault::Closed => String::new(),
                };
                return refuse("frame", None, ErrorCode::Usage, why);
            }
        };
        let request = match ipc::decode_request(&payload) {
            Ok(r) => r,
            Err(e) => return refuse("frame", None, ErrorCode::Usage, e.to_string()),
        };
        match request.greeting(greeted) {
            Ok(Some(hello)) => {
                greeted = true;
                if send(&stream, &Response::Ok(hello)).is_err() {
                    return;
                }
                continue;
            }
            Ok(None) => {}
            Err(msg) => return refuse("hello", Some(&request), ErrorCode::Usage, msg),
        }
        let Some(op) = request.operation() else {
            return;
        };
        if !permits(class, op) {
            let msg = format!(
                "{} is not allowed for the {} class",
                op.name(),
                class.label()
            );
            return refuse(op.name(), Some(&request), ErrorCode::Refused, msg);
        }
        if op.changes_state() {
            if let Err(e) = room_for_change(ctx) {
                let msg = format!("nothing was changed: {e}");
                eprintln!("keyward-helper: {}: {msg}", op.name());
                return refuse(op.name(), Some(&request), ErrorCode::Refused, msg);
            }
        }
        let (volume, user) = (request.volume().cloned(), request.user().cloned());
        let response = match crate::dispatch::run(ctx, request, peer) {
            Ok(reply) => Response::Ok(reply),
            Err(e) => error(e.code(), e.to_string()),
        };
        let subject = Subject {
            volume: volume.as_ref(),
            user: user.as_ref(),
            ..Subject::of(class, peer, None)
        };
        // A queued PAM event is audited once, by its job, with its outcome.
        let response = if response == Response::Ok(Reply::Queued) {
            response
        } else {
            audit_answer(ctx, subject, op, response)
        };
        if send(&stream, &response).is_err() {
            return;
        }
    }
}
