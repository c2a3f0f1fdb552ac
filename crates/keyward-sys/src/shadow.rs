//! Checking a password against the user's `/etc/shadow` hash with libcrypt (libxcrypt on
//! Debian: yescrypt, sha512-crypt and the rest), so the helper never enrols a password the
//! system itself would not accept.

use std::ffi::{c_char, c_int, c_void, CStr};
use std::path::Path;

use keyward_core::{Secret, UserName};
use zeroize::Zeroizing;

use crate::safe_fs::{self, Expect};

/// `sizeof(struct crypt_data)` in libxcrypt.
const CRYPT_DATA_SIZE: usize = 32768;

#[link(name = "crypt")]
unsafe extern "C" {
    /// libxcrypt's reentrant `crypt`: returns a pointer into `data`, or NULL on failure.
    fn crypt_rn(
        phrase: *const c_char,
        setting: *const c_char,
        data: *mut c_void,
        size: c_int,
    ) -> *mut c_char;
}

/// The user's hash field from a shadow file; `Ok(None)` if the user has no entry.
pub fn hash_of(shadow: &Path, user: &UserName) -> std::io::Result<Option<String>> {
    Ok(entry(shadow, user)?.map(|(hash, _)| hash))
}

/// The user's hash and account-expiry fields (2nd and 8th) from a shadow file; `Ok(None)` if
/// the user has no entry (a directory user, say).
pub fn entry(shadow: &Path, user: &UserName) -> std::io::Result<Option<(String, String)>> {
    let bytes = safe_fs::read_checked(
        shadow,
        Expect {
            uid: 0,
            forbidden_mode: 0o027,
        },
        16 << 20,
    )?
    .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "no shadow file"))?;
    let text = String::from_utf8_lossy(&bytes);
    Ok(text.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.first() == Some(&user.as_str())).then(|| {
            (
                f.get(1).copied().unwrap_or("").to_owned(),
                f.get(7).copied().unwrap_or("").to_owned(),
            )
        })
    }))
}

/// Does `password` match `hash`? Locked (`!…`), disabled (`*`) and empty hashes never match.
pub fn matches(password: &Secret, hash: &str) -> bool {
    if hash.is_empty() || hash.starts_with('!') || hash.starts_with('*') {
        return false;
    }
    if password.expose().contains(&0) || hash.as_bytes().contains(&0) {
        return false;
    }
    let mut phrase = Zeroizing::new(password.expose().to_vec());
    phrase.push(0);
    let mut setting = hash.as_bytes().to_vec();
    setting.push(0);
    let mut data = Zeroizing::new(vec![0u8; CRYPT_DATA_SIZE]);
    let size = c_int::try_from(data.len()).unwrap_or(c_int::MAX);
    // SAFETY: `phrase` and `setting` are NUL-terminated buffers that outlive the call; `data`
    // is a writable buffer of `size` bytes, as crypt_rn(3) requires; crypt_rn is reentrant.
    let out = unsafe {
        crypt_rn(
            phrase.as_ptr().cast(),
            setting.as_ptr().cast(),
            data.as_mut_ptr().cast(),
            size,
        )
    };
    if out.is_null() {
        return false;
    }
    // SAFETY: on success crypt_rn returns a NUL-terminated string inside `data`, which is
    // still alive here.
    let computed = unsafe { CStr::from_ptr(out) }.to_bytes();
    let expected = hash.as_bytes();
    computed.len() == expected.len()
        && computed
            .iter()
            .zip(expected)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_hashes() {
        // Made with `mkpasswd -m sha-512 -S saltsalt hunter2`-style settings via openssl.
        // The password goes to openssl on stdin, as every secret does.
        let out = std::process::Command::new("openssl")
            .args(["passwd", "-6", "-salt", "saltsalt", "-stdin"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut child| {
                use std::io::Write;
                child
                    .stdin
                    .take()
                    .map(|mut i| i.write_all(b"hunter2\n"))
                    .transpose()?;
                child.wait_with_output()
            });
        if let Some(out) = out.ok().filter(|o| o.status.success()) {
            let hash = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            assert!(matches(&Secret::copy_from(b"hunter2"), &hash));
            assert!(!matches(&Secret::copy_from(b"hunter3"), &hash));
        }
        assert!(!matches(&Secret::copy_from(b""), ""));
        assert!(!matches(&Secret::copy_from(b"x"), "!$6$abc$def"));
        assert!(!matches(&Secret::copy_from(b"x"), "*"));
        assert!(!matches(&Secret::copy_from(b"a\0b"), "$6$saltsalt$x"));
    }
}
