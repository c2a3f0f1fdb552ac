//! keyward's KDF policy (keyward_core::kdf) as libcryptsetup PBKDF settings.

use keyward_core::kdf::{KdfClass, KdfParams, KdfPolicy};
use libcryptsetup_rs::consts::flags::CryptPbkdf;
use libcryptsetup_rs::consts::vals::{CryptKdf, LuksType};
use libcryptsetup_rs::{CryptDevice, CryptPbkdfType, CryptSettingsHandle, LibcryptErr};

/// Set the PBKDF that the next keyslot added on `dev` will use.
pub fn apply(
    dev: &mut CryptDevice,
    policy: &KdfPolicy,
    class: KdfClass,
) -> Result<(), LibcryptErr> {
    let params = match policy.params(class) {
        KdfParams::Pbkdf2Sha512 { iterations } => CryptPbkdfType {
            type_: CryptKdf::Pbkdf2,
            hash: Some("sha512".to_owned()),
            time_ms: 0,
            iterations,
            max_memory_kb: 0,
            parallel_threads: 0,
            // A fixed iteration count: no benchmark, the same cost on every machine.
            flags: CryptPbkdf::NO_BENCHMARK,
        },
        KdfParams::Argon2id {
            time_ms,
            max_memory_kib,
        } => {
            // LUKS2 defaults (benchmarked), with the configured overrides.
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
    dev.settings_handle().set_pbkdf_type(&params)
}
