//! Identify what a device holds before libcryptsetup touches it, so a non-LUKS file, a LUKS1
//! volume and a damaged LUKS2 header each get their own clear error, and a damaged header is
//! never written to.
//!
//! libcryptsetup's `crypt_load` silently rewrites a LUKS2 header whose primary or secondary
//! copy is damaged (or older than the other). keyward refuses such a header instead: it checks
//! both copies' magic, checksum and sequence id itself, and leaves the repair to an admin
//! running `cryptsetup repair`, who can see what is being restored.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use keyward_core::StoreError;
use sha2::{Digest, Sha256};

/// LUKS magic at offset 0 (both versions).
const MAGIC: &[u8; 6] = b"LUKS\xba\xbe";
/// Magic of the LUKS2 secondary header.
const MAGIC_2ND: &[u8; 6] = b"SKUL\xba\xbe";
/// Offsets in the LUKS2 binary header.
const CSUM_ALG: std::ops::Range<usize> = 72..104;
const CSUM: std::ops::Range<usize> = 448..512;
/// Valid LUKS2 metadata sizes: 16 KiB to 4 MiB, powers of two.
const MAX_HDR: u64 = 4 << 20;

/// What the first bytes of a device say it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// LUKS version 2, with its header sequence id.
    Luks2 {
        /// Incremented by every metadata write; used to detect concurrent writers.
        seqid: u64,
    },
    /// LUKS version 1.
    Luks1,
    /// Anything else.
    Other,
}

/// Identify the device; for LUKS2, also require both header copies intact and in step.
pub fn probe(device: &Path) -> Result<Format, StoreError> {
    let mut f = open(device)?;
    let mut head = [0u8; 24];
    let filled = read_up_to(&mut f, &mut head, device)?;
    let format = classify(&head[..filled]);
    if let Format::Luks2 { .. } = format {
        // A writer updates the two copies one after the other, so a reader can catch them out
        // of step for a moment: only a mismatch that persists is damage.
        let mut delay = std::time::Duration::from_millis(10);
        let mut attempt = 0;
        loop {
            let mut head = [0u8; 24];
            f.seek(SeekFrom::Start(0))
                .map_err(|e| StoreError::Backend(e.to_string()))?;
            let n = read_up_to(&mut f, &mut head, device)?;
            let result = match classify(&head[..n]) {
                Format::Luks2 { seqid } => check_both_copies(&mut f, &head, seqid),
                Format::Luks1 | Format::Other => Err("header changed while reading".to_owned()),
            };
            match result {
                Ok(()) => return Ok(classify(&head)),
                Err(_) if attempt < 5 => {
                    attempt += 1;
                    std::thread::sleep(delay);
                    delay *= 2;
                }
                Err(why) => {
                    return Err(StoreError::CorruptHeader(format!(
                        "{} ({why})",
                        shown(device)
                    )))
                }
            }
        }
    }
    Ok(format)
}

/// What identifies a LUKS2 header's whole content: the checksums stored in its two copies (each
/// the SHA-256 of its copy, metadata JSON included), after [`probe`] has verified both. Any
/// metadata write, by keyward or by stock cryptsetup, changes them: a report computed from the
/// header stays true while the fingerprint does (the helper's status cache, issue 18).
pub fn fingerprint(device: &Path) -> Result<[u8; 64], StoreError> {
    if !matches!(probe(device)?, Format::Luks2 { .. }) {
        return Err(StoreError::Backend(format!(
            "{} is not a LUKS2 volume",
            shown(device)
        )));
    }
    let mut f = open(device)?;
    let mut primary = [0u8; 512];
    if read_up_to(&mut f, &mut primary, device)? < primary.len() {
        return Err(StoreError::CorruptHeader(shown(device)));
    }
    let mut size = [0u8; 8];
    size.copy_from_slice(&primary[8..16]);
    let mut secondary = [0u8; 512];
    f.seek(SeekFrom::Start(u64::from_be_bytes(size)))
        .map_err(|e| StoreError::Backend(e.to_string()))?;
    if read_up_to(&mut f, &mut secondary, device)? < secondary.len() {
        return Err(StoreError::CorruptHeader(shown(device)));
    }
    let mut out = [0u8; 64];
    out[..32].copy_from_slice(&primary[CSUM][..32]);
    out[32..].copy_from_slice(&secondary[CSUM][..32]);
    Ok(out)
}

/// Read the first bytes of the header only (cheap; used to notice a concurrent writer).
pub fn seqid(device: &Path) -> Option<u64> {
    let mut f = open(device).ok()?;
    let mut head = [0u8; 24];
    let n = read_up_to(&mut f, &mut head, device).ok()?;
    match classify(&head[..n]) {
        Format::Luks2 { seqid } => Some(seqid),
        Format::Luks1 | Format::Other => None,
    }
}

/// The primary header copy's JSON text (after the 4 KiB binary header, up to its NUL), as
/// libcryptsetup wrote it: unlike the parsed JSON, it keeps the keyslots' order. `None` if it
/// cannot be read; call after [`probe`] has checked both copies.
pub fn metadata_text(device: &Path) -> Option<String> {
    let mut f = open(device).ok()?;
    let mut head = [0u8; 24];
    if read_up_to(&mut f, &mut head, device).ok()? < head.len() {
        return None;
    }
    let mut size = [0u8; 8];
    size.copy_from_slice(&head[8..16]);
    let hdr_size = u64::from_be_bytes(size);
    if !(16384..=MAX_HDR).contains(&hdr_size) {
        return None;
    }
    let mut area = vec![0u8; usize::try_from(hdr_size - BINARY_HDR).ok()?];
    f.seek(SeekFrom::Start(BINARY_HDR)).ok()?;
    f.read_exact(&mut area).ok()?;
    let end = area.iter().position(|b| *b == 0).unwrap_or(area.len());
    area.truncate(end);
    String::from_utf8(area).ok()
}

/// The LUKS2 binary header's size: the JSON area follows it.
const BINARY_HDR: u64 = 4096;

fn open(device: &Path) -> Result<File, StoreError> {
    File::options()
        .read(true)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOCTTY)
        .open(device)
        .map_err(|e| StoreError::Backend(format!("cannot open {}: {e}", shown(device))))
}

fn read_up_to(f: &mut File, buf: &mut [u8], device: &Path) -> Result<usize, StoreError> {
    let mut filled = 0;
    while filled < buf.len() {
        match f.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                return Err(StoreError::Backend(format!(
                    "cannot read {}: {e}",
                    shown(device)
                )))
            }
        }
    }
    Ok(filled)
}

/// One header copy as found on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Copy {
    /// Magic and checksum good; its sequence id.
    Intact(u64),
    /// Why it cannot be used.
    Damaged(String),
}

/// Both copies, primary first (the secondary sits at the metadata size the primary names).
fn examine(f: &mut File, head: &[u8; 24]) -> Result<[(&'static str, Copy); 2], String> {
    let mut size = [0u8; 8];
    size.copy_from_slice(&head[8..16]);
    let hdr_size = u64::from_be_bytes(size);
    if !(16384..=MAX_HDR).contains(&hdr_size) || !hdr_size.is_power_of_two() {
        return Err(format!("implausible metadata size {hdr_size}"));
    }
    let len = usize::try_from(hdr_size).map_err(|_| "metadata size overflows".to_owned())?;
    let mut read = |copy: &'static str, offset: u64, magic: &[u8; 6]| -> Copy {
        let mut area = vec![0u8; len];
        if f.seek(SeekFrom::Start(offset)).is_err() || f.read_exact(&mut area).is_err() {
            return Copy::Damaged(format!("{copy} header copy is truncated"));
        }
        if &area[..6] != magic {
            return Copy::Damaged(format!("{copy} header copy has no LUKS2 magic"));
        }
        let Format::Luks2 { seqid } = classify(&[MAGIC.as_slice(), &area[6..24]].concat()) else {
            return Copy::Damaged(format!("{copy} header copy is not LUKS2"));
        };
        let alg = &area[CSUM_ALG];
        let alg = &alg[..alg.iter().position(|b| *b == 0).unwrap_or(alg.len())];
        if alg != b"sha256" {
            return Copy::Damaged("unsupported header checksum algorithm".to_owned());
        }
        let stored: Vec<u8> = area[CSUM][..32].to_vec();
        area[CSUM].fill(0);
        if Sha256::digest(&area).as_slice() != stored.as_slice() {
            return Copy::Damaged(format!("{copy} header copy fails its checksum"));
        }
        Copy::Intact(seqid)
    };
    Ok([
        ("primary", read("primary", 0, MAGIC)),
        ("secondary", read("secondary", hdr_size, MAGIC_2ND)),
    ])
}

fn check_both_copies(f: &mut File, head: &[u8; 24], seqid: u64) -> Result<(), String> {
    for (copy, state) in examine(f, head)? {
        match state {
            Copy::Intact(s) if s == seqid => {}
            Copy::Intact(_) => {
                return Err(format!("{copy} header copy is out of step with the other"))
            }
            Copy::Damaged(why) => return Err(why),
        }
    }
    Ok(())
}

/// How a LUKS2 header's two copies stand.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Damage {
    /// Both intact and in step.
    None,
    /// What a write interrupted between the two copies leaves: one copy intact and the other
    /// damaged, or both intact with one a write behind. The intact (newer) copy is a whole,
    /// consistent header — from just before or just after the write — so restoring the other
    /// from it loses nothing keyward's reconcile does not already handle.
    Interrupted {
        /// What is wrong.
        why: String,
        /// The copy the header is restored from.
        from: &'static str,
        /// Its sequence id.
        seqid: u64,
    },
    /// Anything worse (both copies damaged, no LUKS2 at all): left to an admin.
    Unrecoverable(String),
}

/// Judge the header's two copies (after the same grace period `probe` gives a writer).
pub fn damage(device: &Path) -> Result<Damage, StoreError> {
    let mut f = open(device)?;
    let mut delay = std::time::Duration::from_millis(10);
    let mut attempt = 0;
    loop {
        let mut head = [0u8; 24];
        f.seek(SeekFrom::Start(0))
            .map_err(|e| StoreError::Backend(e.to_string()))?;
        let n = read_up_to(&mut f, &mut head, device)?;
        if n < head.len() || &head[..6] != MAGIC {
            return Ok(Damage::Unrecoverable("no LUKS2 header magic".into()));
        }
        let found = match examine(&mut f, &head) {
            Err(why) => Damage::Unrecoverable(why),
            Ok([(_, Copy::Intact(a)), (_, Copy::Intact(b))]) if a == b => Damage::None,
            Ok([(p, Copy::Intact(a)), (s, Copy::Intact(b))]) => {
                let (from, behind, seqid) = if a > b { (p, s, a) } else { (s, p, b) };
                Damage::Interrupted {
                    why: format!("{behind} header copy is out of step with the other"),
                    from,
                    seqid,
                }
            }
            Ok([(from, Copy::Intact(seqid)), (_, Copy::Damaged(why))])
            | Ok([(_, Copy::Damaged(why)), (from, Copy::Intact(seqid))]) => {
                Damage::Interrupted { why, from, seqid }
            }
            Ok([(_, Copy::Damaged(a)), (_, Copy::Damaged(b))]) => {
                Damage::Unrecoverable(format!("{a}; {b}"))
            }
        };
        if found == Damage::None || attempt >= 5 {
            return Ok(found);
        }
        attempt += 1;
        std::thread::sleep(delay);
        delay *= 2;
    }
}

/// Pure classification of a header prefix.
pub fn classify(head: &[u8]) -> Format {
    if head.len() < 8 || &head[..6] != MAGIC {
        return Format::Other;
    }
    match u16::from_be_bytes([head[6], head[7]]) {
        1 => Format::Luks1,
        2 if head.len() >= 24 => {
            let mut seq = [0u8; 8];
            seq.copy_from_slice(&head[16..24]);
            Format::Luks2 {
                seqid: u64::from_be_bytes(seq),
            }
        }
        _ => Format::Other,
    }
}

/// A device path quoted for messages.
pub fn shown(device: &Path) -> String {
    keyward_core::quote(&device.to_string_lossy())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies() {
        assert_eq!(classify(b""), Format::Other);
        assert_eq!(classify(b"LUKS\xba\xbe\x00\x01"), Format::Luks1);
        let mut h = b"LUKS\xba\xbe\x00\x02".to_vec();
        h.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0x40, 0]);
        h.extend_from_slice(&7u64.to_be_bytes());
        assert_eq!(classify(&h), Format::Luks2 { seqid: 7 });
        assert_eq!(classify(b"LUKS\xba\xbe\x00\x03"), Format::Other);
        assert_eq!(classify(&[0u8; 4096]), Format::Other);
    }
}
