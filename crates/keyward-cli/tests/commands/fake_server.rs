//! A stand-in escrow server for the agent's side of signed commands: plain HTTP/1.1 on
//! loopback, answering check-ins with the commands a test queued (each delivered once) and
//! escrow uploads with receipts signed by the test's server key. It records every check-in
//! body. Request signatures are not checked: the real server's tests cover those.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

use ed25519_dalek::{Signer, SigningKey};
use keyward_core::command::SignedCommand;
use keyward_core::escrow::Receipt;
use keyward_core::VolumeName;

#[derive(Default)]
struct State {
    queue: Vec<SignedCommand>,
    checkins: Vec<serde_json::Value>,
    escrows: u32,
}

pub struct FakeServer {
    pub url: String,
    state: Arc<Mutex<State>>,
}

impl FakeServer {
    /// Serve on a free loopback port, signing receipts for `device` with `key`.
    pub fn start(key: SigningKey, device: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(Mutex::new(State::default()));
        let (shared, device) = (Arc::clone(&state), device.to_owned());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let _ = answer(stream, &shared, &key, &device);
            }
        });
        FakeServer { url, state }
    }

    /// Deliver `commands` in the next check-in answer.
    pub fn queue(&self, commands: Vec<SignedCommand>) {
        self.state.lock().unwrap().queue.extend(commands);
    }

    /// Every check-in body received so far.
    pub fn checkins(&self) -> Vec<serde_json::Value> {
        self.state.lock().unwrap().checkins.clone()
    }

    /// Every command report the agent sent, in order: (id, status, detail).
    pub fn reports(&self) -> Vec<(String, String, String)> {
        let s = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_owned();
        self.checkins()
            .iter()
            .flat_map(|c| c["commands"].as_array().cloned().unwrap_or_default())
            .map(|r| (s(&r["id"]), s(&r["status"]), s(&r["detail"])))
            .collect()
    }
}

fn answer(
    stream: TcpStream,
    state: &Mutex<State>,
    key: &SigningKey,
    device: &str,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body)?;
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let path = request_line.split_whitespace().nth(1).unwrap_or("");
    let reply = if path.ends_with("/checkin") {
        let mut s = state.lock().unwrap();
        s.checkins.push(body);
        let commands = std::mem::take(&mut s.queue);
        serde_json::json!({ "rotate": [], "commands": commands })
    } else if let Some(volume) = path.split("/escrow/").nth(1) {
        let mut s = state.lock().unwrap();
        s.escrows += 1;
        let volume = VolumeName::parse(volume).unwrap();
        let rotation = body["rotation_id"].as_str().unwrap_or_default();
        let sha = body["sha256"].as_str().unwrap_or_default();
        let escrow_id = format!("e-{}", s.escrows);
        let msg = Receipt::message(device, &volume, rotation, sha, &escrow_id);
        serde_json::to_value(Receipt {
            device: device.into(),
            volume,
            rotation_id: rotation.into(),
            sha256: sha.into(),
            escrow_id,
            signature: key.sign(&msg).to_bytes().to_vec(),
        })
        .unwrap()
    } else {
        serde_json::json!({})
    };
    let text = reply.to_string();
    let mut out = stream;
    write!(
        out,
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{text}",
        text.len()
    )?;
    out.flush()
}
