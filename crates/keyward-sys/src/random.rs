//! Fresh secrets from the kernel's CSPRNG (`getrandom(2)`).

use keyward_core::{recovery_key, Secret, StoreError};
use zeroize::Zeroizing;

fn entropy() -> Result<Zeroizing<[u8; 32]>, StoreError> {
    let mut buf = Zeroizing::new([0u8; 32]);
    getrandom::fill(buf.as_mut_slice())
        .map_err(|e| StoreError::Backend(format!("getrandom: {e}")))?;
    Ok(buf)
}

/// A 256-bit service secret, as 64 lowercase hex characters (text, so it can be handed to
/// `cryptsetup --key-file` and typed in an emergency).
pub fn service_secret() -> Result<Secret, StoreError> {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let e = entropy()?;
    let mut out = Vec::with_capacity(64);
    for b in e.iter() {
        out.push(HEX[usize::from(b >> 4)]);
        out.push(HEX[usize::from(b & 0x0f)]);
    }
    Ok(Secret::from_vec(out))
}

/// A 256-bit recovery key in systemd's modhex form.
pub fn recovery_key() -> Result<Secret, StoreError> {
    let e = entropy()?;
    Ok(recovery_key::format(&e))
}
