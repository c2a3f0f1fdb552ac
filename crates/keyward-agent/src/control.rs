//! The agent's control socket (`agent_state_dir/agent.sock`, 0600): root's CLI hands the agent
//! an enrollment token, asks for a rotation or wakes the escrow round here — secrets never travel through a file. Only
//! root may talk to it (checked by `SO_PEERCRED`, besides the socket's mode).

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::Duration;

use keyward_core::config::Config;
use keyward_core::ipc::{self, AgentReply, AgentRequest, AgentResponse, ErrorCode};

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

fn read_frame(s: &mut UnixStream) -> Option<Vec<u8>> {
    let mut prefix = [0u8; 4];
    s.read_exact(&mut prefix).ok()?;
    let mut body = vec![0u8; ipc::frame_len(prefix).ok()?];
    s.read_exact(&mut body).ok()?;
    Some(body)
}

fn handle(mut s: UnixStream, config: &Config, wake: &tokio::sync::Notify) {
    // Enrollment and rotation talk to the network; give them time.
    let _ = s.set_read_timeout(Some(Duration::from_secs(120)));
    while let Some(frame) = read_frame(&mut s) {
        let reply = match ipc::decode_agent_request(&frame) {
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
        let Ok(bytes) = ipc::encode_frame(&reply) else {
            return;
        };
        if s.write_all(&bytes).is_err() {
            return;
        }
    }
}
