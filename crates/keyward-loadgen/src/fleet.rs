//! The simulated fleet: one device enrolled per token, many at a time and spread over the
//! servers given, and the enrolled devices kept in a file (device id and secret key, one a
//! line, 0600) so later runs against the same database skip enrolling 100,000 devices again.
//! The keys are throw-away test keys; the file is still written owner-only.

use std::io::{BufRead, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use base64::Engine;
use ed25519_dalek::SigningKey;

use crate::device::{b64, Device};
use crate::error::LoadError;
use crate::http::Conn;
use crate::stats::Tally;

/// Enroll one device per token with `concurrency` threads, token `i` at `bases[i % len]`.
/// Returns the devices in token order and the enrollments' latencies.
pub fn enroll(
    bases: &[String],
    tokens: &[String],
    concurrency: usize,
) -> Result<(Vec<Device>, Tally), LoadError> {
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let first_error: Mutex<Option<LoadError>> = Mutex::new(None);
    let threads = concurrency.clamp(1, tokens.len().max(1));
    let results: Vec<(Vec<(usize, Device)>, Tally)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut conns: Vec<Conn> = bases.iter().map(|b| Conn::new(b)).collect();
                    let mut mine = Vec::new();
                    let mut tally = Tally::default();
                    while !stop.load(Ordering::Relaxed) {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(token) = tokens.get(i) else { break };
                        let started = Instant::now();
                        let conn = &mut conns[i % bases.len()];
                        let enrolled =
                            Device::generate().and_then(|key| Device::enroll(conn, i, token, key));
                        match enrolled {
                            Ok(d) => {
                                tally.answered(started.elapsed(), None);
                                mine.push((i, d));
                            }
                            Err(e) => {
                                stop.store(true, Ordering::Relaxed);
                                if let Ok(mut slot) = first_error.lock() {
                                    slot.get_or_insert(e);
                                }
                            }
                        }
                    }
                    (mine, tally)
                })
            })
            .collect();
        workers.into_iter().filter_map(|w| w.join().ok()).collect()
    });
    if let Some(e) = first_error.into_inner().ok().flatten() {
        return Err(e);
    }
    let mut all = Vec::with_capacity(tokens.len());
    let mut tally = Tally::default();
    for (devices, t) in results {
        all.extend(devices);
        tally.merge(t);
    }
    all.sort_unstable_by_key(|(i, _)| *i);
    Ok((all.into_iter().map(|(_, d)| d).collect(), tally))
}

fn file_error(path: &Path) -> impl Fn(std::io::Error) -> LoadError + '_ {
    move |source| LoadError::File {
        path: path.display().to_string(),
        source,
    }
}

/// Write `devices` to `path` (created or replaced, 0600): `DEVICE_ID SECRET_KEY_BASE64` lines.
pub fn save(path: &Path, devices: &[Device]) -> Result<(), LoadError> {
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(file_error(path))?;
    let mut out = std::io::BufWriter::new(file);
    for d in devices {
        writeln!(out, "{} {}", d.id, b64().encode(d.secret())).map_err(file_error(path))?;
    }
    out.flush().map_err(file_error(path))
}

/// Read devices written by [`save`], at most `max`.
pub fn load(path: &Path, max: usize) -> Result<Vec<Device>, LoadError> {
    let file = std::fs::File::open(path).map_err(file_error(path))?;
    let mut devices = Vec::new();
    for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.map_err(file_error(path))?;
        if line.trim().is_empty() {
            continue;
        }
        let bad = || LoadError::BadDeviceLine {
            path: path.display().to_string(),
            line: n + 1,
        };
        let (id, key) = line.trim().split_once(' ').ok_or_else(bad)?;
        let seed: [u8; 32] = b64()
            .decode(key.trim())
            .ok()
            .and_then(|k| k.try_into().ok())
            .ok_or_else(bad)?;
        if devices.len() == max {
            return Err(LoadError::TooManyDevices(max));
        }
        devices.push(Device::known(id.to_owned(), SigningKey::from_bytes(&seed)));
    }
    if devices.is_empty() {
        return Err(LoadError::NoTokens);
    }
    Ok(devices)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_saved_fleet_loads_back_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("devices");
        let devices = vec![
            Device::known("dev-a".into(), SigningKey::from_bytes(&[1; 32])),
            Device::known("dev-b".into(), SigningKey::from_bytes(&[2; 32])),
        ];
        save(&path, &devices).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let back = load(&path, 10).unwrap();
        assert_eq!(back.len(), 2);
        assert_eq!(back[1].id, "dev-b");
        assert_eq!(back[1].secret(), [2; 32]);
        assert!(matches!(load(&path, 1), Err(LoadError::TooManyDevices(1))));
        std::fs::write(&path, "dev-a notbase64!\n").unwrap();
        assert!(matches!(
            load(&path, 10),
            Err(LoadError::BadDeviceLine { line: 1, .. })
        ));
    }
}
