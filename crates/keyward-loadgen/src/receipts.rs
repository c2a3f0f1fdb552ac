//! Receipts: each escrow's answer checked against its request, as the helper checks it (the
//! server's signature too, when the server's key is given: `keyward_core::escrow::Receipt::
//! verify`), and each accepted receipt appended to a file the moment it arrives, one line
//! `ESCROW_ID DEVICE VOLUME SHA256 KEY_SHA256|-`: the list of escrows the server promised to
//! keep, which `keyward-server escrow check --receipts` holds it to after a crash.

use std::fs::File;
use std::io::{LineWriter, Write};
use std::path::Path;
use std::sync::Mutex;

use base64::Engine;
use keyward_core::escrow::Receipt;
use keyward_core::VolumeName;

use crate::device::{b64, EscrowPut};
use crate::error::LoadError;

/// How receipts are checked and where they are written.
#[derive(Debug)]
pub struct Receipts {
    server_key: Option<String>,
    log: Option<Mutex<LineWriter<File>>>,
}

impl Receipts {
    /// Check signatures against `server_key` (base64) if given; append to `file` if given
    /// (created or appended to).
    pub fn new(server_key: Option<&str>, file: Option<&Path>) -> Result<Self, LoadError> {
        if let Some(k) = server_key {
            let ok = b64()
                .decode(k.trim())
                .ok()
                .and_then(|b| <[u8; 32]>::try_from(b).ok())
                .is_some_and(|b| ed25519_dalek::VerifyingKey::from_bytes(&b).is_ok());
            if !ok {
                return Err(LoadError::BadServerKey);
            }
        }
        let log = match file {
            None => None,
            Some(path) => {
                let f = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|source| LoadError::File {
                        path: path.display().to_string(),
                        source,
                    })?;
                Some(Mutex::new(LineWriter::new(f)))
            }
        };
        Ok(Receipts {
            server_key: server_key.map(|k| k.trim().to_owned()),
            log,
        })
    }

    /// Whether `receipt` answers `put` from `device` for `volume` (and is signed by the
    /// server, when its key is known). An accepted receipt is written to the file first;
    /// false if that write fails too.
    pub fn accept(
        &self,
        device: &str,
        volume: &VolumeName,
        put: &EscrowPut,
        receipt: &Receipt,
    ) -> bool {
        let ok = match &self.server_key {
            Some(key) => receipt
                .verify(key, device, volume, &put.rotation_id, &put.sha256)
                .is_ok(),
            None => {
                receipt.device == device
                    && &receipt.volume == volume
                    && receipt.rotation_id == put.rotation_id
                    && receipt.sha256 == put.sha256
                    && !receipt.escrow_id.is_empty()
            }
        };
        if !ok {
            return false;
        }
        let Some(log) = &self.log else { return true };
        let line = format!(
            "{} {device} {volume} {} {}\n",
            receipt.escrow_id,
            put.sha256,
            put.key_sha256.as_deref().unwrap_or("-")
        );
        log.lock()
            .is_ok_and(|mut f| f.write_all(line.as_bytes()).is_ok())
    }

    /// Flush the file.
    pub fn finish(&self) -> Result<(), std::io::Error> {
        match &self.log {
            Some(log) => log
                .lock()
                .map_err(|_| std::io::Error::other("a worker panicked while writing"))?
                .flush(),
            None => Ok(()),
        }
    }
}
