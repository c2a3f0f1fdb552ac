//! `keyward-server escrow check --receipts FILE` (hidden): after a crash, are the escrows the
//! server gave receipts for all still there and recoverable? Each line of FILE is one receipt,
//! `ESCROW_ID DEVICE VOLUME SHA256 [KEY_SHA256]` (what `keyward-loadgen --receipts` writes);
//! each escrow is read, its ciphertext checked against the receipt's digest and decrypted with
//! the server's identity, and the key's digest compared when the line names one. Prints only
//! counts and ids, never a key; keys are wiped as soon as they are hashed. Not audited, since
//! nothing is revealed: a key leaves this module as nothing but "matches" or "does not".

use std::io::BufRead;
use std::path::Path;

use sqlx::Row;
use zeroize::Zeroizing;

use crate::identity::Identity;
use crate::store::Store;

/// What the check found.
#[derive(Debug, Default)]
pub struct Tally {
    /// Receipts read.
    pub receipts: u64,
    /// Stored, matching the receipt, and decrypted (to the key named, if one was).
    pub recovered: u64,
    /// No escrow with the receipt's id.
    pub missing: u64,
    /// Stored under that id, but for another device, volume or ciphertext, or decrypting to
    /// another key than the line names.
    pub mismatched: u64,
    /// Stored and matching, but the identity does not decrypt it.
    pub undecryptable: u64,
}

impl Tally {
    /// Whether every receipt's escrow is recoverable.
    pub fn all_recovered(&self) -> bool {
        self.recovered == self.receipts
    }
}

/// One receipt's fate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Recovered,
    Missing,
    Mismatched,
    Undecryptable,
}

/// Check every receipt in `file`; ids of failures go to stderr (at most 20).
pub async fn check(store: &Store, identity: &Identity, file: &Path) -> Result<Tally, String> {
    let input = std::fs::File::open(file).map_err(|e| format!("{}: {e}", file.display()))?;
    let mut tally = Tally::default();
    let mut shown = 0;
    for (n, line) in std::io::BufReader::new(input).lines().enumerate() {
        let line = line.map_err(|e| format!("{}: {e}", file.display()))?;
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (id, device, volume, sha256, key_sha256) = match fields.as_slice() {
            [] => continue,
            [id, device, volume, sha] => (*id, *device, *volume, *sha, None),
            [id, device, volume, sha, key] => (*id, *device, *volume, *sha, Some(*key)),
            _ => return Err(format!("{}:{}: not a receipt line", file.display(), n + 1)),
        };
        tally.receipts += 1;
        let row =
            sqlx::query("SELECT device, volume, sha256, ciphertext FROM escrows WHERE id = $1")
                .bind(id)
                .fetch_optional(store.pool())
                .await
                .map_err(|e| e.to_string())?;
        let verdict = match row {
            None => Verdict::Missing,
            Some(r) => {
                let get = |c: &str| r.try_get::<String, _>(c).map_err(|e| e.to_string());
                let ciphertext: Vec<u8> = r.try_get("ciphertext").map_err(|e| e.to_string())?;
                if get("device")? != device
                    || get("volume")? != volume
                    || get("sha256")? != sha256
                    || keyward_core::hex::sha256(&ciphertext) != sha256
                {
                    Verdict::Mismatched
                } else {
                    match age::decrypt(&identity.age, &ciphertext) {
                        Err(_) => Verdict::Undecryptable,
                        Ok(key) => {
                            let key = Zeroizing::new(key);
                            let digest = keyward_core::hex::sha256(key.as_slice());
                            if key_sha256.is_some_and(|want| want != "-" && want != digest) {
                                Verdict::Mismatched
                            } else {
                                Verdict::Recovered
                            }
                        }
                    }
                }
            }
        };
        match verdict {
            Verdict::Recovered => tally.recovered += 1,
            Verdict::Missing => tally.missing += 1,
            Verdict::Mismatched => tally.mismatched += 1,
            Verdict::Undecryptable => tally.undecryptable += 1,
        }
        if verdict != Verdict::Recovered && shown < 20 {
            shown += 1;
            eprintln!(
                "keyward-server: escrow {}: {verdict:?}",
                keyward_core::quote(id)
            );
        }
    }
    Ok(tally)
}
