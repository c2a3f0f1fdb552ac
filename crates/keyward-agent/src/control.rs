//! The agent's control socket (`agent_state_dir/agent.sock`, 0600): root's CLI hands the agent
//! an enrollment token, asks for a rotation or wakes the escrow round here — secrets never travel through a file. Only
//! root may talk to it (checked by `SO_PEERCRED`, besides the socket's mode). Frames are read
//! and written by `keyward_sys::frame_io`, zeroized like the helper's (a token is a secret).

use std::os::unix::net::{UnixListener, UnixStream};
use std::time::{Duration, Instant};

use keyward_core::config::Config;
use keyward_core::ipc::{self, AgentReply, AgentRequest, AgentResponse, ErrorCode};
use keyward_sys::frame_io;

/// A whole request frame must arrive within this of starting to wait for it, and a reply be
/// written within it. Only root's CLI talks here, one request at a time; enrollment and
/// rotation talk to the network between frames, which this does not bound.
const FRAME_DEADLINE: Duration = Duration::from_secs(120);

/// Serve forever (on its own thread).
pub fn serve(listener: UnixListener, config: Config, wake: &tokio::sync::Notify) {
    for stream in listener.incoming().flatten() {
        let is_root = keyward_sys::peer::credentials(&stream).is_ok_and(|p| p.uid.get() == 0);
        if !is_root {
            continue;
        }
        handle(stream, &config, wake);
    }
}

/// Answer one connection's requests until it closes, errs or stalls. A frame that is cut,
/// late, oversized or undecodable ends the connection (a malformed one is answered first).
fn handle(s: UnixStream, config: &Config, wake: &tokio::sync::Notify) {
    loop {
        let deadline = Instant::now() + FRAME_DEADLINE;
        let request = match frame_io::read_frame(&s, deadline) {
            Ok(payload) => ipc::decode_agent_request(&payload),
            Err(frame_io::FrameFault::Closed) => return,
            Err(e) => {
                eprintln!("keywardd: control socket: {e}");
                return;
            }
        };
        let reply = match request {
            Ok(AgentRequest::Hello { .. }) => AgentResponse::Ok(AgentReply::Hello {
                version: ipc::PROTOCOL_VERSION,
            }),
            Ok(AgentRequest::Enroll { url, token }) => {
                match crate::escrow::enroll(config, &url, &token.into_secret()) {
                    Ok(device_id) => AgentResponse::Ok(AgentReply::Enrolled { device_id }),
                    Err((code, message)) => AgentResponse::Error { code, message },
                }
            }
            Ok(AgentRequest::RotateRecovery { volume }) => {
                match crate::escrow::rotate(config, &volume) {
                    Ok((slot, escrow_id)) => {
                        AgentResponse::Ok(AgentReply::Rotated { slot, escrow_id })
                    }
                    Err((code, message)) => AgentResponse::Error { code, message },
                }
            }
            Ok(AgentRequest::CheckInNow) => {
                wake.notify_one();
                AgentResponse::Ok(AgentReply::Scheduled)
            }
            Ok(_) | Err(_) => AgentResponse::Error {
                code: ErrorCode::Usage,
                message: "malformed request".into(),
            },
        };
        if let Err(e) = frame_io::write_message(&s, &reply, Instant::now() + FRAME_DEADLINE) {
            eprintln!("keywardd: control socket: {e}");
            return;
        }
    }
}
