//! keyward's KDF policy (keyward_core::kdf) as libcryptsetup PBKDF settings, including the
//! boot budget (keyward_core::boot_budget): a budgeted passphrase slot is benchmarked here to
//! its share of the budget, lifted to the KDF floor if that share is too short, and then
//! written at exactly that cost, so no slot below the floor ever reaches the header.
//! [`budget_findings`] asks the same question of a volume as it is, for `keyward verify` and
//! `keyward status` (`boot-budget-impossible`).

use std::ffi::c_char;

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use keyward_core::boot_budget::{
    last_passphrase_slot, lift_to_floor, passphrase_slots, scale_to_share, CALIBRATION_MS,
};
use keyward_core::ipc::FindingReport;
use keyward_core::kdf::{KdfClass, KdfParams, KdfPolicy};
use keyward_core::kdf_floor::{Argon2Cost, KdfFloor};
use keyward_core::{HolderRole, VolumeState};
use libcryptsetup_rs::consts::flags::CryptPbkdf;
use libcryptsetup_rs::consts::vals::{CryptKdf, LuksType};
use libcryptsetup_rs::{CryptDevice, CryptPbkdfType, CryptSettingsHandle, LibcryptErr};

/// A budgeted slot whose share of the budget was too short for the floor: it was made at the
/// floor's cost instead, so the volume's passphrase slots together exceed the budget. Shown to
/// the admin (the helper's log), never silently dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BudgetShortfall {
    /// The share of the budget this slot was given, ms.
    pub share_ms: u32,
    /// The passphrase slots sharing the budget.
    pub slots: u32,
    /// What fits into the share on this machine (libcryptsetup's benchmark, scaled).
    pub benchmarked: Argon2Cost,
    /// What the slot got instead.
    pub written: Argon2Cost,
}

impl std::fmt::Display for BudgetShortfall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "[kdf] boot_budget_ms cannot be met: {} passphrase slots leave {} ms each, which on \
             this machine fits argon2id {} KiB × {} passes, below the KDF floor; the slot was \
             made at the floor ({} KiB × {} passes) and the volume's slots together take longer \
             than the budget (raise it, or hold fewer passphrase slots)",
            self.slots,
            self.share_ms,
            self.benchmarked.memory_kib,
            self.benchmarked.time,
            self.written.memory_kib,
            self.written.time
        )
    }
}

/// Set the PBKDF that the next keyslot added on `dev` will use; `passphrase_slots` is how many
/// passphrase slots the volume will hold once it is added (only a boot budget uses it).
pub fn apply(
    dev: &mut CryptDevice,
    policy: &KdfPolicy,
    class: KdfClass,
    passphrase_slots: u32,
) -> Result<Option<BudgetShortfall>, LibcryptErr> {
    let mut shortfall = None;
    let params = match policy.params(class, passphrase_slots) {
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
            floor,
        } => {
            let mut d = argon2id_defaults(time_ms, max_memory_kib)?;
            if let Some(floor) = floor {
                let key_size = usize::try_from(dev.status_handle().get_volume_key_size())
                    .map_err(|_| LibcryptErr::InvalidConversion)?;
                let (fixed, short) =
                    budgeted(&d, floor, key_size, passphrase_slots, benchmark_argon2id)?;
                d = fixed;
                shortfall = short;
            }
            d
        }
        _ => return Err(LibcryptErr::Other("unsupported KDF parameters".into())),
    };
    dev.settings_handle().set_pbkdf_type(&params)?;
    Ok(shortfall)
}

/// LUKS2's argon2id defaults (benchmarked), with the configured overrides.
fn argon2id_defaults(
    time_ms: Option<u32>,
    max_memory_kib: Option<u32>,
) -> Result<CryptPbkdfType, LibcryptErr> {
    let mut d = CryptSettingsHandle::get_pbkdf_default(&LuksType::Luks2)?;
    d.type_ = CryptKdf::Argon2Id;
    if let Some(t) = time_ms {
        d.time_ms = t;
    }
    if let Some(m) = max_memory_kib {
        d.max_memory_kb = m;
    }
    Ok(d)
}

/// The key size the check benchmarks with (AES-XTS-512, LUKS2's default); the benchmark's
/// result hardly depends on it.
const CHECK_KEY_SIZE: usize = 64;

/// `[kdf] boot_budget_ms` against `state` as it is: would a passphrase slot sharing the budget
/// with the passphrase slots a typed password tries now have to be lifted to the KDF floor?
/// Then one `boot-budget-impossible` finding, on the passphrase slot tried last (the slots
/// together take longer than the budget). Nothing without a budget or when the share meets
/// the floor. The benchmark runs once per helper process and settings (a verify or status
/// must not take a second each); a benchmark that fails is a `boot-budget-unchecked` finding.
pub fn budget_findings(policy: &KdfPolicy, state: &VolumeState) -> Vec<FindingReport> {
    let slots = passphrase_slots(state).max(1);
    let KdfParams::Argon2id {
        time_ms,
        max_memory_kib,
        floor: Some(floor),
    } = policy.params(KdfClass::Passphrase, slots)
    else {
        return Vec::new();
    };
    let checked = argon2id_defaults(time_ms, max_memory_kib)
        .and_then(|d| budgeted(&d, floor, CHECK_KEY_SIZE, slots, benchmark_once));
    let (finding, detail) = match checked {
        Ok((_, None)) => return Vec::new(),
        Ok((_, Some(short))) => ("boot-budget-impossible", short.to_string()),
        Err(e) => (
            "boot-budget-unchecked",
            format!("[kdf] boot_budget_ms: the argon2id benchmark failed: {e}"),
        ),
    };
    let slot = last_passphrase_slot(state);
    let role = slot.and_then(|s| state.holders().into_iter().find(|h| h.slot == s));
    let user = role.as_ref().and_then(|h| match &h.role {
        HolderRole::User { name, .. } => Some(name.to_string()),
        _ => None,
    });
    vec![FindingReport::about(
        finding,
        slot.map_or(0, |s| s.get()),
        role.as_ref().map_or("unmanaged", |h| h.role.label()),
        user,
        "argon2id",
        detail,
    )]
}

/// An argon2id benchmark: `(time_ms, max_memory_kb, threads, key_size)` → the cost that fits
/// and the lanes.
type Benchmark = fn(u32, u32, u32, usize) -> Result<(Argon2Cost, u32), LibcryptErr>;

/// [`benchmark_argon2id`], remembered per settings for the life of the process.
fn benchmark_once(
    time_ms: u32,
    max_memory_kb: u32,
    threads: u32,
    key_size: usize,
) -> Result<(Argon2Cost, u32), LibcryptErr> {
    type Results = HashMap<(u32, u32, u32, usize), (Argon2Cost, u32)>;
    static RESULTS: OnceLock<Mutex<Results>> = OnceLock::new();
    let results = RESULTS.get_or_init(|| Mutex::new(HashMap::new()));
    let key = (time_ms, max_memory_kb, threads, key_size);
    let known = match results.lock() {
        Ok(g) => g.get(&key).copied(),
        Err(poisoned) => poisoned.into_inner().get(&key).copied(),
    };
    if let Some(r) = known {
        return Ok(r);
    }
    let r = benchmark_argon2id(time_ms, max_memory_kb, threads, key_size)?;
    match results.lock() {
        Ok(mut g) => g.insert(key, r),
        Err(poisoned) => poisoned.into_inner().insert(key, r),
    };
    Ok(r)
}

/// Size a budgeted slot: benchmark argon2id on this machine at `d`'s memory ceiling and a
/// target libcryptsetup can resolve (the share, or [`CALIBRATION_MS`] if the share is shorter),
/// scale that to the share, lift it to `floor`, and return settings that write exactly that
/// cost without benchmarking again.
fn budgeted(
    d: &CryptPbkdfType,
    floor: &KdfFloor,
    key_size: usize,
    slots: u32,
    benchmark: Benchmark,
) -> Result<(CryptPbkdfType, Option<BudgetShortfall>), LibcryptErr> {
    let calibrate_ms = d.time_ms.max(CALIBRATION_MS);
    let (calibrated, threads) = match test_calibration() {
        Some(fixed) => (fixed, d.parallel_threads),
        None => benchmark(calibrate_ms, d.max_memory_kb, d.parallel_threads, key_size)?,
    };
    let benchmarked = scale_to_share(calibrated, calibrate_ms, d.time_ms);
    let ceiling = (d.max_memory_kb > 0).then_some(u64::from(d.max_memory_kb));
    let written = lift_to_floor(benchmarked, floor, ceiling).ok_or_else(|| {
        LibcryptErr::Other("no argon2id cost under the memory ceiling meets the KDF floor".into())
    })?;
    let short = (written != benchmarked).then_some(BudgetShortfall {
        share_ms: d.time_ms,
        slots,
        benchmarked,
        written,
    });
    let as_u32 = |v: u64| u32::try_from(v).map_err(|_| LibcryptErr::InvalidConversion);
    Ok((
        CryptPbkdfType {
            type_: CryptKdf::Argon2Id,
            hash: d.hash.clone(),
            time_ms: 0,
            iterations: as_u32(written.time)?,
            max_memory_kb: as_u32(written.memory_kib)?,
            parallel_threads: threads,
            flags: CryptPbkdf::NO_BENCHMARK,
        },
        short,
    ))
}

/// Test builds only: `KEYWARD_TEST_ARGON2_CALIBRATION=MEMORYxPASSES` stands for what the
/// benchmark measured, so an end-to-end test can check the budget's arithmetic on real slots
/// without depending on how busy the machine is (tests/boot_budget.rs). Slot writing and
/// everything after it stay real.
#[cfg(feature = "failpoints")]
fn test_calibration() -> Option<Argon2Cost> {
    let v = std::env::var("KEYWARD_TEST_ARGON2_CALIBRATION").ok()?;
    let (m, t) = v.split_once('x')?;
    Some(Argon2Cost {
        memory_kib: m.parse().ok()?,
        time: t.parse().ok()?,
    })
}

#[cfg(not(feature = "failpoints"))]
fn test_calibration() -> Option<Argon2Cost> {
    None
}

/// libcryptsetup's own argon2id benchmark (what `cryptsetup luksAddKey --iter-time` runs): the
/// passes and memory that take `time_ms` here, and the lanes it settled on. It derives from a
/// fixed, public input, as `cryptsetup benchmark` does: no secret is involved.
fn benchmark_argon2id(
    time_ms: u32,
    max_memory_kb: u32,
    threads: u32,
    key_size: usize,
) -> Result<(Argon2Cost, u32), LibcryptErr> {
    const INPUT: &[u8] = b"keyward boot budget benchmark";
    const SALT: [u8; 32] = [0x6b; 32];
    let kind = libcryptsetup_rs_sys::CRYPT_KDF_ARGON2ID;
    let mut p = libcryptsetup_rs_sys::crypt_pbkdf_type {
        type_: kind.as_ptr().cast::<c_char>(),
        hash: std::ptr::null(),
        time_ms,
        iterations: 0,
        max_memory_kb,
        parallel_threads: threads,
        flags: 0,
    };
    // SAFETY: `p` is a valid crypt_pbkdf_type whose `type_` points at a NUL-terminated static
    // string; INPUT and SALT are valid for the lengths given; a NULL device and a NULL
    // progress callback are accepted (cryptsetup's own `benchmark` passes both). libcryptsetup
    // writes only into `p` and keeps no pointer after returning.
    let rc = unsafe {
        libcryptsetup_rs_sys::crypt_benchmark_pbkdf(
            std::ptr::null_mut(),
            &mut p,
            INPUT.as_ptr().cast::<c_char>(),
            INPUT.len(),
            SALT.as_ptr().cast::<c_char>(),
            SALT.len(),
            key_size,
            None,
            std::ptr::null_mut(),
        )
    };
    if rc < 0 {
        return Err(LibcryptErr::IOError(std::io::Error::from_raw_os_error(-rc)));
    }
    Ok((
        Argon2Cost {
            memory_kib: u64::from(p.max_memory_kb),
            time: u64::from(p.iterations),
        },
        p.parallel_threads,
    ))
}
