//! Test doubles: a fake authorization engine and a fake helper that speaks the real frame
//! protocol (keyward-core's `encode_frame`/`frame_len`/`decode_request`), so what the mechanism
//! sends is decoded exactly as the helper would decode it.
#![allow(dead_code, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use keyward_authplugin::engine::{ContextKey, Engine, EngineError};
use keyward_core::ipc::{self, ErrorCode, Reply, Request, Response};
use zeroize::Zeroizing;

/// What the fake engine answers for one key.
#[derive(Clone, Debug)]
pub enum Value {
    /// These bytes.
    Bytes(Vec<u8>),
    /// The engine fails (a non-zero OSStatus).
    Fails(i32),
    /// The engine's value accessor panics (a bug on our side of the adapter).
    Panics,
}

/// A fake engine: context values by key, and every result set.
#[derive(Default, Debug)]
pub struct FakeEngine {
    pub context: BTreeMap<&'static str, Value>,
    pub allowed: u32,
    pub allow_fails: bool,
}

impl FakeEngine {
    pub fn with(user: &[u8], password: &[u8]) -> Self {
        let mut e = FakeEngine::default();
        e.context.insert("username", Value::Bytes(user.to_vec()));
        e.context
            .insert("password", Value::Bytes(password.to_vec()));
        e
    }
}

impl Engine for FakeEngine {
    fn context_value(&self, key: ContextKey) -> Result<Option<Zeroizing<Vec<u8>>>, EngineError> {
        match self.context.get(key.name()) {
            None => Ok(None),
            Some(Value::Bytes(b)) => Ok(Some(Zeroizing::new(b.clone()))),
            Some(Value::Fails(status)) => Err(EngineError::Status {
                callback: "GetContextValue",
                status: *status,
            }),
            Some(Value::Panics) => panic!("fake engine: a bug while reading {}", key.name()),
        }
    }

    fn set_result_allow(&mut self) -> Result<(), EngineError> {
        self.allowed += 1;
        if self.allow_fails {
            return Err(EngineError::Status {
                callback: "SetResult",
                status: -60008,
            });
        }
        Ok(())
    }
}

/// How the fake helper behaves after accepting.
#[derive(Clone, Copy, Debug)]
pub enum Helper {
    /// Answers the hello and queues the request, as keyward-helper does for a LoginCapture.
    Queues,
    /// Answers the hello, then refuses the request.
    Refuses,
    /// Accepts and never says a word.
    Mute,
}

/// A helper on a socket in a temporary directory; every request it decodes is sent on.
pub struct FakeHelper {
    pub dir: tempfile::TempDir,
    pub requests: mpsc::Receiver<Request>,
}

impl FakeHelper {
    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("helper.sock")
    }
}

fn read_frame(s: &mut UnixStream) -> Option<Request> {
    let mut prefix = [0u8; 4];
    s.read_exact(&mut prefix).ok()?;
    let len = ipc::frame_len(prefix).ok()?;
    let mut payload = vec![0u8; len];
    s.read_exact(&mut payload).ok()?;
    ipc::decode_request(&payload).ok()
}

fn answer(s: &mut UnixStream, r: &Response) {
    let _ = s.write_all(&ipc::encode_frame(r).unwrap());
}

pub fn spawn_helper(mode: Helper) -> FakeHelper {
    let dir = tempfile::tempdir().unwrap();
    let listener = UnixListener::bind(dir.path().join("helper.sock")).unwrap();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { return };
            if let Helper::Mute = mode {
                held.push(s);
                continue;
            }
            let Some(hello) = read_frame(&mut s) else {
                continue;
            };
            let _ = tx.send(hello);
            answer(
                &mut s,
                &Response::Ok(Reply::Hello {
                    version: ipc::PROTOCOL_VERSION,
                }),
            );
            let Some(req) = read_frame(&mut s) else {
                continue;
            };
            let _ = tx.send(req);
            match mode {
                Helper::Queues => answer(&mut s, &Response::Ok(Reply::Queued)),
                _ => answer(
                    &mut s,
                    &Response::Error {
                        code: ErrorCode::Refused,
                        message: "refused: not managed".into(),
                    },
                ),
            }
        }
    });
    FakeHelper { dir, requests: rx }
}

/// Every request the helper received within a short wait.
pub fn received(h: &FakeHelper) -> Vec<Request> {
    let mut out = Vec::new();
    while let Ok(r) = h.requests.recv_timeout(Duration::from_millis(300)) {
        out.push(r);
    }
    out
}

/// A socket path where nothing listens.
pub fn absent_socket(dir: &Path) -> PathBuf {
    dir.join("nobody-home.sock")
}
