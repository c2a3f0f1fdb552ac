//! [`SlotBackend`] over libcryptsetup: one header change per call, each on a freshly loaded
//! context so it always acts on the current header, each retried a bounded number of times when
//! another writer got there first.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use keyward_core::kdf::{KdfClass, KdfParams, KdfPolicy};
use keyward_core::orderings::SlotBackend;
use keyward_core::{KeywardToken, Secret, SlotId, StoreError, TokenId, VolumeState};
use libcryptsetup_rs::consts::flags::{CryptActivate, CryptPbkdf};
use libcryptsetup_rs::consts::vals::{CryptKdf, EncryptionFormat, LuksType};
use libcryptsetup_rs::{
    CryptDevice, CryptInit, CryptPbkdfType, CryptSettingsHandle, LibcryptErr, TokenInput,
};

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
}

impl LuksBackend {
    /// Check that `device` is a loadable LUKS2 volume and prepare to manage it. `lock_path`
    /// is the per-volume advisory lock file (created if absent).
    pub fn open(device: &Path, lock_path: &Path, kdf: KdfPolicy) -> Result<Self, StoreError> {
        let backend = LuksBackend {
            device: device.to_owned(),
            lock_path: lock_path.to_owned(),
            kdf,
        };
        backend.context()?;
        Ok(backend)
    }

    /// The device path.
    pub fn device(&self) -> &Path {
        &self.device
    }

    fn context(&self) -> Result<CryptDevice, StoreError> {
        match probe(&self.device)? {
            Format::Luks2 { .. } => {}
            Format::Luks1 => {
                return Err(StoreError::UnsupportedFormat {
                    device: shown(&self.device),
                    found: "LUKS1",
                })
            }
            Format::Other => return Err(StoreError::NotLuks(shown(&self.device))),
        }
        let mut dev = CryptInit::init(&self.device).map_err(|e| self.error("open", &e))?;
        dev.context_handle()
            .load::<()>(Some(EncryptionFormat::Luks2), None)
            .map_err(|_| StoreError::CorruptHeader(shown(&self.device)))?;
        Ok(dev)
    }

    fn seqid(&self) -> Option<u64> {
        crate::probe::seqid(&self.device)
    }

    /// Run one header change on a fresh context; retry when the header moved under us
    /// (libcryptsetup refuses a "concurrent LUKS2 metadata update" with EINVAL) or the
    /// device is busy.
    fn write<T>(
        &self,
        what: &str,
        mut op: impl FnMut(&mut CryptDevice) -> Result<T, LibcryptErr>,
    ) -> Result<T, StoreError> {
        let mut delay = Duration::from_millis(5);
        for attempt in 1..=ATTEMPTS {
            let before = self.seqid();
            let mut dev = self.context()?;
            match op(&mut dev) {
                Ok(v) => return Ok(v),
                Err(e) => {
                    let errno = errno(&e);
                    let moved = errno == Some(libc::EINVAL) && self.seqid() != before;
                    let busy = matches!(errno, Some(libc::EBUSY | libc::EAGAIN));
                    if !(moved || busy) || attempt == ATTEMPTS {
                        return Err(if moved || busy {
                            StoreError::Busy
                        } else {
                            self.error(what, &e)
                        });
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

    fn keyward_token_at(&self, dev: &mut CryptDevice, id: TokenId) -> Result<(), LibcryptErr> {
        let v = dev.token_handle().json_get(id.get())?;
        if KeywardToken::is_keyward_type(&v) {
            Ok(())
        } else {
            Err(LibcryptErr::Other(format!(
                "token {id} is not a keyward token"
            )))
        }
    }

    fn set_pbkdf(
        &self,
        settings: &mut CryptSettingsHandle<'_>,
        class: KdfClass,
    ) -> Result<(), LibcryptErr> {
        let params = match self.kdf.params(class) {
            KdfParams::Pbkdf2Sha512 { iterations } => CryptPbkdfType {
                type_: CryptKdf::Pbkdf2,
                hash: Some("sha512".to_owned()),
                time_ms: 0,
                iterations,
                max_memory_kb: 0,
                parallel_threads: 0,
                flags: CryptPbkdf::NO_BENCHMARK,
            },
            KdfParams::Argon2id {
                time_ms,
                max_memory_kib,
            } => {
                let mut d = CryptSettingsHandle::get_pbkdf_default(&LuksType::Luks2)?;
                d.type_ = CryptKdf::Argon2Id;
                if let Some(t) = time_ms {
                    d.time_ms = t;
                }
                if let Some(m) = max_memory_kib {
                    d.max_memory_kb = m;
                }
                d
            }
            _ => return Err(LibcryptErr::Other("unsupported KDF parameters".into())),
        };
        settings.set_pbkdf_type(&params)
    }
}

fn errno(e: &LibcryptErr) -> Option<i32> {
    match e {
        LibcryptErr::IOError(io) => io.raw_os_error(),
        _ => None,
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
        let mut dev = self.context()?;
        let meta = dev
            .status_handle()
            .dump_json()
            .map_err(|_| StoreError::CorruptHeader(shown(&self.device)))?;
        VolumeState::from_luks2_json(&meta).map_err(|e| StoreError::Backend(e.to_string()))
    }

    fn add_slot(
        &mut self,
        slot: SlotId,
        authority: &Secret,
        secret: &Secret,
        kdf: KdfClass,
    ) -> Result<(), StoreError> {
        self.write("add keyslot", |dev| {
            self.set_pbkdf(&mut dev.settings_handle(), kdf)?;
            dev.keyslot_handle()
                .add_by_passphrase(Some(slot.get()), authority.expose(), secret.expose())
                .map(drop)
        })
    }

    fn test_slot(&mut self, slot: SlotId, secret: &Secret) -> Result<bool, StoreError> {
        let mut dev = self.context()?;
        let r = dev.activate_handle().activate_by_passphrase(
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
        self.write("destroy keyslot", |dev| {
            dev.keyslot_handle().destroy(slot.get())
        })
    }

    fn add_token(&mut self, token: &KeywardToken) -> Result<TokenId, StoreError> {
        let json = token.to_json();
        let id = self
            .write("add token", |dev| {
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
        self.write("replace token", |dev| {
            self.keyward_token_at(dev, id)?;
            dev.token_handle()
                .json_set(TokenInput::ReplaceToken(id.get(), &json))
                .map(drop)
        })
    }

    fn remove_token(&mut self, id: TokenId) -> Result<(), StoreError> {
        self.write("remove token", |dev| {
            self.keyward_token_at(dev, id)?;
            dev.token_handle()
                .json_set(TokenInput::RemoveToken(id.get()))
                .map(drop)
        })
    }

    fn failpoint(&mut self, name: &'static str) -> Result<(), StoreError> {
        #[cfg(feature = "failpoints")]
        if std::env::var_os("KEYWARD_FAILPOINT").is_some_and(|v| v == name) {
            // SAFETY: raise(2) with a valid signal number; SIGKILL ends the process at once,
            // exactly like a power cut from the header's point of view.
            unsafe {
                libc::raise(libc::SIGKILL);
            }
        }
        let _ = name;
        Ok(())
    }
}
