//! Test fixtures that use only stock tools: images are formatted by `cryptsetup luksFormat`,
//! secrets are checked with `cryptsetup open --test-passphrase --key-slot N`, metadata is read
//! with `cryptsetup luksDump --dump-json-metadata`. Secrets go to those tools on stdin.
#![allow(dead_code, clippy::unwrap_used)]

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use keyward_core::kdf::KdfPolicy;
use keyward_core::{Secret, SlotId};
use keyward_luks::LuksStore;
use serde_json::Value;

pub const INSTALL_PASS: &str = "install passphrase";
pub const FAST: KdfPolicy = KdfPolicy {
    danger_fast_kdf: true,
    argon2_time_ms: None,
    argon2_max_memory_kib: None,
    boot_budget_ms: None,
};

pub fn secret(s: &str) -> Secret {
    Secret::copy_from(s.as_bytes())
}

/// Run a command with `stdin` bytes; return its output.
pub fn run_with_stdin(cmd: &mut Command, stdin: &[u8]) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

pub struct Image {
    pub dir: tempfile::TempDir,
    pub path: PathBuf,
    pub lock: PathBuf,
}

impl Image {
    /// A fresh LUKS2 image whose slot 0 holds [`INSTALL_PASS`] (pbkdf2, so tests stay fast).
    pub fn luks2() -> Self {
        Self::format(&["--type", "luks2"])
    }

    pub fn format(extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk.img");
        let f = std::fs::File::create(&path).unwrap();
        f.set_len(24 << 20).unwrap();
        let out = run_with_stdin(
            Command::new("cryptsetup")
                .args([
                    "luksFormat",
                    "--batch-mode",
                    "--pbkdf",
                    "pbkdf2",
                    "--pbkdf-force-iterations",
                    "1000",
                ])
                .args(extra)
                .arg(&path)
                .args(["--key-file", "-"]),
            INSTALL_PASS.as_bytes(),
        );
        assert!(
            out.status.success(),
            "luksFormat: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let lock = dir.path().join("disk.lock");
        Image { dir, path, lock }
    }

    pub fn store(&self) -> LuksStore {
        keyward_luks::open(&self.path, &self.lock, FAST).unwrap()
    }

    /// `cryptsetup open --test-passphrase --key-slot N` with `pass` on stdin.
    pub fn opens(&self, slot: SlotId, pass: &[u8]) -> bool {
        let out = run_with_stdin(
            Command::new("cryptsetup")
                .args(["open", "--test-passphrase", "--key-slot", &slot.to_string()])
                .arg(&self.path)
                .args(["--key-file", "-"]),
            pass,
        );
        out.status.success()
    }

    /// `cryptsetup luksAddKey` of `new`, unlocked by the install passphrase; returns the slot.
    pub fn add_key_with_cryptsetup(&self, new: &str) -> SlotId {
        self.try_add_key_with_cryptsetup(new)
            .unwrap_or_else(|e| panic!("luksAddKey: {e}"))
    }

    /// Like [`Self::add_key_with_cryptsetup`], but returns cryptsetup's complaint on failure.
    pub fn try_add_key_with_cryptsetup(&self, new: &str) -> Result<SlotId, String> {
        let before = self.slot_ids();
        let keyfile = self.dir.path().join("install.key");
        std::fs::write(&keyfile, INSTALL_PASS).unwrap();
        let out = run_with_stdin(
            Command::new("cryptsetup")
                .args([
                    "luksAddKey",
                    "--batch-mode",
                    "--pbkdf",
                    "pbkdf2",
                    "--pbkdf-force-iterations",
                    "1000",
                    "--key-file",
                ])
                .arg(&keyfile)
                .arg(&self.path)
                .arg("-"),
            new.as_bytes(),
        );
        std::fs::remove_file(&keyfile).unwrap();
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        // The slot that opens with `new` (other writers may have added slots meanwhile).
        let after = self.slot_ids();
        after
            .into_iter()
            .filter(|s| !before.contains(s))
            .find(|s| self.opens(*s, new.as_bytes()))
            .ok_or_else(|| "no new slot opens with the new key".to_owned())
    }

    /// `systemd-cryptenroll --recovery-key`, unlocked by the install passphrase (given through
    /// `$PASSWORD`, systemd's own interface for it); returns the slot and the printed key.
    pub fn enroll_systemd_recovery(&self) -> (SlotId, String) {
        let before = self.slot_ids();
        let out = Command::new("systemd-cryptenroll")
            .arg("--recovery-key")
            .arg(&self.path)
            .env("PASSWORD", INSTALL_PASS)
            .env("SYSTEMD_LOG_LEVEL", "err")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "systemd-cryptenroll: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        let key = text
            .split_whitespace()
            .find(|w| w.len() == 71 && w.matches('-').count() == 7)
            .unwrap_or_else(|| panic!("no recovery key in output: {text}"))
            .to_owned();
        (self.new_slot(&before), key)
    }

    pub fn metadata(&self) -> Value {
        let out = Command::new("cryptsetup")
            .args(["luksDump", "--dump-json-metadata"])
            .arg(&self.path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "luksDump: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    pub fn slot_ids(&self) -> Vec<SlotId> {
        let meta = self.metadata();
        let mut v: Vec<SlotId> = meta["keyslots"]
            .as_object()
            .unwrap()
            .keys()
            .map(|k| SlotId::parse(k).unwrap())
            .collect();
        v.sort();
        v
    }

    fn new_slot(&self, before: &[SlotId]) -> SlotId {
        let after = self.slot_ids();
        let new: Vec<_> = after.iter().filter(|s| !before.contains(s)).collect();
        assert_eq!(new.len(), 1, "expected one new slot");
        *new[0]
    }

    /// Everything in the header keyward must never change: metadata minus keyward's own slots
    /// and tokens and the digest's slot list, plus the raw key material of every other slot.
    pub fn unmanaged_snapshot(&self) -> (Value, Vec<(String, Vec<u8>)>) {
        let mut meta = self.metadata();
        let keyward_slots: Vec<String> = meta["tokens"]
            .as_object()
            .unwrap()
            .values()
            .filter(|t| t["type"] == "keyward")
            .flat_map(|t| t["keyslots"].as_array().cloned().unwrap_or_default())
            .filter_map(|s| s.as_str().map(str::to_owned))
            .collect();
        let tokens = meta["tokens"].as_object_mut().unwrap();
        tokens.retain(|_, t| t["type"] != "keyward");
        let slots = meta["keyslots"].as_object_mut().unwrap();
        slots.retain(|k, _| !keyward_slots.contains(k));
        for d in meta["digests"].as_object_mut().unwrap().values_mut() {
            d.as_object_mut().unwrap().remove("keyslots");
        }
        let mut areas = Vec::new();
        let mut f = std::fs::File::open(&self.path).unwrap();
        for (k, s) in meta["keyslots"].as_object().unwrap() {
            let off: u64 = s["area"]["offset"].as_str().unwrap().parse().unwrap();
            let size: usize = s["area"]["size"].as_str().unwrap().parse().unwrap();
            let mut buf = vec![0u8; size];
            f.seek(SeekFrom::Start(off)).unwrap();
            f.read_exact(&mut buf).unwrap();
            areas.push((k.clone(), buf));
        }
        (meta, areas)
    }

    pub fn file_bytes(&self) -> Vec<u8> {
        std::fs::read(&self.path).unwrap()
    }
}

pub fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}
