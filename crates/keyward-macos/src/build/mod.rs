//! Typed builders for every command keyward runs on a Mac, and the three ways a secret reaches
//! a tool: answers to `-` prompts (one line each), an `-inputplist` property list, or a line
//! for `dscl`'s interactive mode. No builder takes a secret except to put it on stdin.

pub mod diskutil;
pub mod dscl;
pub mod fdesetup;
pub mod security;
pub mod sysadminctl;

use keyward_core::Secret;
use zeroize::Zeroizing;

use crate::error::MacError;

/// Answers to `-` prompts, in order, one line each. A secret containing a line break or NUL
/// cannot be answered this way (the tool would read a different password) and is refused.
pub(crate) fn prompt_answers(answers: &[&Secret]) -> Result<Secret, MacError> {
    let mut buf = Zeroizing::new(Vec::new());
    for a in answers {
        if a.expose().iter().any(|b| matches!(b, b'\n' | b'\r' | 0)) {
            return Err(MacError::PasswordNotRepresentable("a line break or NUL"));
        }
        buf.extend_from_slice(a.expose());
        buf.push(b'\n');
    }
    Ok(Secret::copy_from(&buf))
}

/// An `fdesetup -inputplist` property list: `{Password: secret}`. fdesetup ignores the
/// `Username` key for every verb but `enable`, so none is sent.
pub(crate) fn password_plist(secret: &Secret) -> Result<Secret, MacError> {
    let text = std::str::from_utf8(secret.expose())
        .map_err(|_| MacError::PasswordNotRepresentable("bytes that are not UTF-8"))?;
    if text.chars().any(|c| c.is_control()) {
        return Err(MacError::PasswordNotRepresentable("control characters"));
    }
    let mut dict = plist::Dictionary::new();
    dict.insert("Password".to_owned(), plist::Value::String(text.to_owned()));
    let mut value = plist::Value::Dictionary(dict);
    let mut out = Zeroizing::new(Vec::new());
    let written = value.to_writer_xml(&mut *out);
    // The dictionary held a copy of the password: wipe it whatever happened.
    if let plist::Value::Dictionary(d) = &mut value {
        for (_, v) in d.iter_mut() {
            if let plist::Value::String(s) = v {
                zeroize::Zeroize::zeroize(s);
            }
        }
    }
    written.map_err(|e| MacError::Plist(e.to_string()))?;
    Ok(Secret::copy_from(&out))
}

/// True if `secret` can be written as one whitespace-separated word on a `dscl` interactive
/// line without any quoting: printable ASCII other than quotes and backslash. keyward's own
/// service passwords are hex and always qualify; a user password that does not is refused
/// rather than quoted by rules keyward cannot test without a Mac.
pub(crate) fn is_plain_word(secret: &Secret) -> bool {
    !secret.is_empty()
        && secret
            .expose()
            .iter()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b'"' | b'\'' | b'\\'))
}
