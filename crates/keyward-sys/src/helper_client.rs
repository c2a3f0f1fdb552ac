//! One request to the helper: connect, hello, request, response. Used by the CLI and the agent.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use keyward_core::ipc::{self, AgentReply, AgentRequest, AgentResponse, Reply, Request, Response};

/// A failed call: the CLI exit code that goes with it, and a message safe to print.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallError {
    /// Exit code per the CLI contract (5: helper unavailable).
    pub code: u8,
    /// What went wrong.
    pub message: String,
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

fn failure(code: u8, message: impl Into<String>) -> CallError {
    CallError {
        code,
        message: message.into(),
    }
}

/// Long enough for an argon2id grant at LUKS2 defaults on a slow machine.
const TIMEOUT: Duration = Duration::from_secs(300);

fn unavailable(e: impl std::fmt::Display) -> CallError {
    failure(5, format!("the keyward helper is unavailable: {e}"))
}

fn exchange(stream: &mut UnixStream, req: &Request) -> Result<Response, CallError> {
    let frame = ipc::encode_frame(req).map_err(|e| failure(2, e.to_string()))?;
    stream.write_all(&frame).map_err(unavailable)?;
    let mut prefix = [0u8; 4];
    stream.read_exact(&mut prefix).map_err(unavailable)?;
    let len = ipc::frame_len(prefix).map_err(unavailable)?;
    let mut payload = vec![0u8; len];
    stream.read_exact(&mut payload).map_err(unavailable)?;
    ipc::decode_response(&payload).map_err(unavailable)
}

/// Send `req` and return the reply, or the helper's error with its exit code.
pub fn call(socket: &Path, req: Request) -> Result<Reply, CallError> {
    call_within(socket, req, TIMEOUT)
}

/// Like [`call`], giving up when any single read or write takes longer than `timeout`.
pub fn call_within(socket: &Path, req: Request, timeout: Duration) -> Result<Reply, CallError> {
    let mut stream = UnixStream::connect(socket).map_err(unavailable)?;
    stream
        .set_read_timeout(Some(timeout))
        .map_err(unavailable)?;
    stream
        .set_write_timeout(Some(timeout))
        .map_err(unavailable)?;
    match exchange(
        &mut stream,
        &Request::Hello {
            version: ipc::PROTOCOL_VERSION,
        },
    )? {
        Response::Ok(Reply::Hello { .. }) => {}
        Response::Ok(other) => return Err(unexpected(&other)),
        Response::Error { code, message } => return Err(failure(code.exit_code(), message)),
    }
    match exchange(&mut stream, &req)? {
        Response::Ok(reply) => Ok(reply),
        Response::Error { code, message } => Err(failure(code.exit_code(), message)),
    }
}

/// A reply of the wrong kind (a helper of another version).
pub fn unexpected(r: &Reply) -> CallError {
    failure(1, format!("unexpected reply from the helper: {r:?}"))
}

/// One request to the agent's control socket (root only).
pub fn call_agent(socket: &Path, req: AgentRequest) -> Result<AgentReply, CallError> {
    let agent_down =
        |e: std::io::Error| failure(5, format!("the keyward agent is unavailable: {e}"));
    let mut stream = UnixStream::connect(socket).map_err(agent_down)?;
    stream.set_read_timeout(Some(TIMEOUT)).map_err(agent_down)?;
    let mut ask = |r: &AgentRequest| -> Result<AgentResponse, CallError> {
        let frame = ipc::encode_frame(r).map_err(|e| failure(2, e.to_string()))?;
        stream.write_all(&frame).map_err(agent_down)?;
        let mut prefix = [0u8; 4];
        stream.read_exact(&mut prefix).map_err(agent_down)?;
        let len = ipc::frame_len(prefix).map_err(|e| failure(5, e.to_string()))?;
        let mut payload = vec![0u8; len];
        stream.read_exact(&mut payload).map_err(agent_down)?;
        ipc::decode_agent_response(&payload).map_err(|e| failure(5, e.to_string()))
    };
    match ask(&AgentRequest::Hello {
        version: ipc::PROTOCOL_VERSION,
    })? {
        AgentResponse::Ok(AgentReply::Hello { .. }) => {}
        _ => return Err(failure(5, "the agent did not answer the hello")),
    }
    match ask(&req)? {
        AgentResponse::Ok(reply) => Ok(reply),
        AgentResponse::Error { code, message } => Err(failure(code.exit_code(), message)),
    }
}
