//! [`SlotBackend`] over libcryptsetup: one header change per call, each on a context that
//! matches the header on disk (reloaded and re-checked whenever its sequence id moved), each
//! retried a bounded number of times when another writer got there first.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use keyward_core::kdf::{KdfClass, KdfPolicy};
use keyward_core::orderings::SlotBackend;
use keyward_core::{KeywardToken, Secret, SlotId, SlotPriority, StoreError, TokenId, VolumeState};
use libcryptsetup_rs::consts::flags::{CryptActivate, CryptVolumeKey};
use libcryptsetup_rs::consts::vals::{EncryptionFormat, KeyslotPriority};
use libcryptsetup_rs::{CryptDevice, CryptInit, Either, LibcryptErr, TokenInput};
use zeroize::Zeroizing;

use crate::lock::VolumeLock;
use crate::probe::{probe, shown, Format};

/// Attempts per header write before reporting [`StoreError::Busy`].
const ATTEMPTS: u32 = 6;

/// One LUKS2 device or image file.
#[derive(Debug)]
pub struct LuksBackend {
    device: PathBuf,
    lock_path: PathBuf,
    kdf: KdfPolicy,
    cache: Option<Loaded>,
}

/// A loaded context and the on-disk sequence id it matches. Reused while the header's
/// sequence id is unchanged, so one operation loads and checks the header once rather than at
/// every step; any other writer bumps the id and forces a fresh, fully checked load.
struct Loaded {
    seqid: u64,
    dev: CryptDevice,
}

impl std::fmt::Debug for Loaded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loaded")
            .field("seqid", &self.seqid)
            .finish_non_exhaustive()
    }
}

impl LuksBackend {
    /// Check that `device` is a loadable LUKS2 volume and prepare to manage it. `lock_path`
    /// is the per-volume advisory lock file (created if absent).
    pub fn open(device: &Path, lock_path: &Path, kdf: KdfPolicy) -> Result<Self, StoreError> {
        let mut backend = LuksBackend {
            device: device.to_owned(),
            lock_path: lock_path.to_owned(),
            kdf,
            cache: None,
        };
        backend.ctx()?;
        Ok(backend)
    }

    /// The device path.
    pub fn device(&self) -> &Path {
        &self.device
    }

    fn seqid(&self) -> Option<u64> {
        crate::probe::seqid(&self.device)
    }

    /// The loaded context, reloaded (and re-checked) if the header changed on disk.
    fn ctx(&mut self) -> Result<&mut CryptDevice, StoreError> {
        let on_disk = self.seqid();
        let stale = on_disk.is_none() || self.cache.as_ref().map(|c| c.seqid) != on_disk;
        if stale {
            self.cache = None;
            self.cache = Some(self.load()?);
        }
        match &mut self.cache {
            Some(c) => Ok(&mut c.dev),
            None => Err(StoreError::Backend("no loaded header".into())),
        }
    }

    /// Check both header copies, then load the header with libcryptsetup.
    fn load(&self) -> Result<Loaded, StoreError> {
        let seqid = match probe(&self.device)? {
            Format::Luks2 { seqid } => seqid,
            Format::Luks1 => {
                return Err(StoreError::UnsupportedFormat {
                    device: shown(&self.device),
                    found: "LUKS1",
                })
            }
            Format::Other => return Err(StoreError::NotLuks(shown(&self.device))),
        };
        let mut dev = CryptInit::init(&self.device).map_err(|e| self.error("open", &e))?;
        dev.context_handle()
            .load::<()>(Some(EncryptionFormat::Luks2), None)
            .map_err(|_| StoreError::CorruptHeader(shown(&self.device)))?;
        Ok(Loaded { seqid, dev })
    }

    /// Run one header change; retry on a fresh load when the header moved under us
    /// (libcryptsetup refuses a "concurrent LUKS2 metadata update" with EINVAL) or the device
    /// is busy.
    fn write<T>(
        &mut self,
        what: &str,
        mut op: impl FnMut(&mut CryptDevice, &KdfPolicy) -> Result<T, LibcryptErr>,
    ) -> Result<T, StoreError> {
        let mut delay = Duration::from_millis(5);
        let policy = self.kdf;
        for attempt in 1..=ATTEMPTS {
            let before = self.seqid();
            let result = op(self.ctx()?, &policy);
            let after = self.seqid();
            match result {
                Ok(v) => {
                    // The context now holds what we wrote; remember the id it wrote.
                    if let (Some(c), Some(seqid)) = (&mut self.cache, after) {
                        c.seqid = seqid;
                    }
                    return Ok(v);
                }
                Err(e) => {
                    self.cache = None;
                    let errno = errno(&e);
                    let moved = errno == Some(libc::EINVAL) && after != before;
                    let busy = matches!(errno, Some(libc::EBUSY | libc::EAGAIN));
                    if !(moved || busy) {
                        return Err(self.error(what, &e));
                    }
                    if attempt == ATTEMPTS {
                        return Err(StoreError::Busy);
                    }
                }
            }
            std::thread::sleep(delay);
            delay *= 2;
        }
        Err(StoreError::Busy)
    }

    fn error(&self, what: &str, e: &LibcryptErr) -> StoreError {
        match errno(e) {
            Some(libc::EPERM) => StoreError::AuthenticationFailed,
            Some(libc::EBUSY | libc::EAGAIN) => StoreError::Busy,
            _ => StoreError::Backend(format!("{what} on {}: {e}", shown(&self.device))),
        }
    }
}

fn errno(e: &LibcryptErr) -> Option<i32> {
    match e {
        LibcryptErr::IOError(io) => io.raw_os_error(),
        _ => None,
    }
}

/// Refuse to rewrite or remove a token that is not keyward's (I2, defence in depth).
fn ensure_keyward_token(dev: &mut CryptDevice, id: TokenId) -> Result<(), LibcryptErr> {
    let v = dev.token_handle().json_get(id.get())?;
    if KeywardToken::is_keyward_type(&v) {
        Ok(())
    } else {
        Err(LibcryptErr::Other(format!(
            "token {id} is not a keyward token"
        )))
    }
}

impl SlotBackend for LuksBackend {
    type Guard = VolumeLock;

    fn lock(&mut self) -> Result<VolumeLock, StoreError> {
        VolumeLock::acquire(&self.lock_path)
    }

    fn now(&self) -> SystemTime {
        SystemTime::now()
    }

    fn read(&mut self) -> Result<VolumeState, StoreError> {
        let meta = self.ctx()?.status_handle().dump_json();
        let meta = meta.map_err(|_| StoreError::CorruptHeader(shown(&self.device)))?;
        let mut state =
            VolumeState::from_luks2_json(&meta).map_err(|e| StoreError::Backend(e.to_string()))?;
        // The order a typed passphrase tries slots in (`keyward status`'s boot unlock cost);
        // unknown (by number) if the text cannot be read.
        state.slot_order = crate::probe::metadata_text(&self.device)
            .and_then(|t| keyward_core::unlock_cost::header_slot_order(&t))
            .unwrap_or_default();
        Ok(state)
    }

    fn add_slot(
        &mut self,
        slot: SlotId,
        authority: &Secret,
        authority_slot: Option<SlotId>,
        secret: &Secret,
        kdf: KdfClass,
    ) -> Result<(), StoreError> {
        // A boot budget shares its time among the passphrase slots the volume will hold.
        let slots = keyward_core::boot_budget::passphrase_slots_after_add(&self.read()?, slot);
        let mut shortfall = None;
        let added = self.write("add keyslot", |dev, policy| {
            shortfall = crate::kdf::apply(dev, policy, kdf, slots)?;
            let Some(from) = authority_slot else {
                return dev
                    .keyslot_handle()
                    .add_by_passphrase(Some(slot.get()), authority.expose(), secret.expose())
                    .map(drop);
            };
            // One KDF run on the named slot instead of trying every slot in turn (each may be
            // a seconds-long argon2id). The volume key lives only in this zeroized buffer.
            let size = usize::try_from(dev.status_handle().get_volume_key_size())
                .map_err(|_| LibcryptErr::InvalidConversion)?;
            let mut vk = Zeroizing::new(vec![0u8; size]);
            let (_, len) =
                dev.volume_key_handle()
                    .get(Some(from.get()), &mut vk, Some(authority.expose()))?;
            vk.truncate(len);
            dev.keyslot_handle()
                .add_by_key(
                    Some(slot.get()),
                    Some(Either::Left(&vk)),
                    secret.expose(),
                    CryptVolumeKey::empty(),
                )
                .map(drop)
        });
        if let (Ok(()), Some(short)) = (&added, shortfall) {
            // The helper's stderr is its log (journald); the slot itself is sound.
            eprintln!("keyward: {}: slot {slot}: {short}", shown(&self.device));
        }
        added
    }

    fn test_slot(&mut self, slot: SlotId, secret: &Secret) -> Result<bool, StoreError> {
        let r = self.ctx()?.activate_handle().activate_by_passphrase(
            None,
            Some(slot.get()),
            secret.expose(),
            CryptActivate::empty(),
        );
        match r {
            Ok(_) => Ok(true),
            Err(e) if matches!(errno(&e), Some(libc::EPERM | libc::ENOENT)) => Ok(false),
            Err(e) => Err(self.error("test keyslot", &e)),
        }
    }

    fn destroy_slot(&mut self, slot: SlotId) -> Result<(), StoreError> {
        self.write("destroy keyslot", |dev, _| {
            dev.keyslot_handle().destroy(slot.get())
        })
    }

    fn add_token(&mut self, token: &KeywardToken) -> Result<TokenId, StoreError> {
        let json = token.to_json();
        let id = self
            .write("add token", |dev, _| {
                dev.token_handle().json_set(TokenInput::AddToken(&json))
            })
            .map_err(|e| match e {
                // libcryptsetup reports a full token table or JSON area as EINVAL.
                StoreError::Backend(_) => StoreError::TokenAreaFull,
                other => other,
            })?;
        TokenId::new(id).map_err(|e| StoreError::Backend(e.to_string()))
    }

    fn replace_token(&mut self, id: TokenId, token: &KeywardToken) -> Result<(), StoreError> {
        let json = token.to_json();
        self.write("replace token", |dev, _| {
            ensure_keyward_token(dev, id)?;
            dev.token_handle()
                .json_set(TokenInput::ReplaceToken(id.get(), &json))
                .map(drop)
        })
    }

    fn remove_token(&mut self, id: TokenId) -> Result<(), StoreError> {
        self.write("remove token", |dev, _| {
            ensure_keyward_token(dev, id)?;
            dev.token_handle()
                .json_set(TokenInput::RemoveToken(id.get()))
                .map(drop)
        })
    }

    fn set_priority(&mut self, slot: SlotId, priority: SlotPriority) -> Result<(), StoreError> {
        let p = match priority {
            SlotPriority::Ignore => KeyslotPriority::Ignore,
            SlotPriority::Prefer => KeyslotPriority::Prefer,
            // A priority this build does not know: the default order.
            _ => KeyslotPriority::Normal,
        };
        self.write("set keyslot priority", |dev, _| {
            dev.keyslot_handle().set_priority(slot.get(), p)
        })
    }

    fn failpoint(&mut self, name: &'static str) -> Result<(), StoreError> {
        keyward_sys::failpoint::failpoint(name);
        Ok(())
    }
}
