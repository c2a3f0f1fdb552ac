//! Newtypes for the names and numbers keyward passes around. Each one is parsed once, at the
//! edge, and is valid by construction afterwards ("parse, don't validate").

use std::fmt;

use crate::error::InputError;

/// LUKS2 headers hold at most 32 keyslots.
pub const MAX_SLOTS: u8 = 32;
/// LUKS2 headers hold at most 32 tokens.
pub const MAX_TOKENS: u8 = 32;

/// A keyslot number, `0..32`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SlotId(u8);

impl SlotId {
    /// A slot number, if it is below [`MAX_SLOTS`].
    pub fn new(n: u32) -> Result<Self, InputError> {
        u8::try_from(n)
            .ok()
            .filter(|n| *n < MAX_SLOTS)
            .map(SlotId)
            .ok_or(InputError::SlotOutOfRange(n))
    }

    /// Parse the decimal string form LUKS2 JSON uses (`"3"`); no sign, no leading zeros.
    pub fn parse(s: &str) -> Result<Self, InputError> {
        let canonical = !s.is_empty()
            && s.len() <= 2
            && s.bytes().all(|b| b.is_ascii_digit())
            && (s == "0" || !s.starts_with('0'));
        if !canonical {
            return Err(InputError::BadSlot(crate::quote(s)));
        }
        // Cannot fail: at most two ASCII digits.
        let n: u32 = s
            .parse()
            .map_err(|_| InputError::BadSlot(crate::quote(s)))?;
        Self::new(n)
    }

    /// The slot number.
    pub fn get(self) -> u32 {
        u32::from(self.0)
    }
}

impl fmt::Display for SlotId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// A LUKS2 token number, `0..32`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TokenId(u8);

impl TokenId {
    /// A token number, if it is below [`MAX_TOKENS`].
    pub fn new(n: u32) -> Result<Self, InputError> {
        u8::try_from(n)
            .ok()
            .filter(|n| *n < MAX_TOKENS)
            .map(TokenId)
            .ok_or(InputError::TokenOutOfRange(n))
    }

    /// The token number.
    pub fn get(self) -> u32 {
        u32::from(self.0)
    }
}

impl fmt::Display for TokenId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// A numeric user id. Never a bare `u32` in keyward's APIs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Uid(u32);

impl Uid {
    /// `(uid_t)-1` means "no change" to several syscalls and is never a real user.
    pub fn new(n: u32) -> Result<Self, InputError> {
        if n == u32::MAX {
            return Err(InputError::BadUid(n));
        }
        Ok(Uid(n))
    }

    /// The numeric id.
    pub fn get(self) -> u32 {
        self.0
    }
}

impl fmt::Display for Uid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// The name of a configured volume: `[a-z0-9_-]{1,32}`, not starting with `-`. The only way
/// a request names a volume; devices are resolved from the root-owned config.
#[derive(
    Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(try_from = "String", into = "String")]
pub struct VolumeName(String);

impl TryFrom<String> for VolumeName {
    type Error = InputError;
    fn try_from(s: String) -> Result<Self, InputError> {
        Self::parse(&s)
    }
}

impl From<VolumeName> for String {
    fn from(v: VolumeName) -> String {
        v.0
    }
}

impl VolumeName {
    /// Parse a volume name.
    pub fn parse(s: &str) -> Result<Self, InputError> {
        let ok = (1..=32).contains(&s.len())
            && !s.starts_with('-')
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        if ok {
            Ok(VolumeName(s.to_owned()))
        } else {
            Err(InputError::BadVolumeName(crate::quote(s)))
        }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for VolumeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&self.0)
    }
}

/// A login name as shadow-utils accepts it by default (`NAME_REGEX`): starts with a lowercase
/// letter or `_`, then lowercase letters, digits, `_`, `-`, optionally ending in `$`; at most
/// 32 bytes. Anything else (paths, options, spaces, control characters) is refused.
#[derive(
    Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(try_from = "String", into = "String")]
pub struct UserName(String);

impl TryFrom<String> for UserName {
    type Error = InputError;
    fn try_from(s: String) -> Result<Self, InputError> {
        Self::parse(&s)
    }
}

impl From<UserName> for String {
    fn from(v: UserName) -> String {
        v.0
    }
}

impl UserName {
    /// Parse a user name.
    pub fn parse(s: &str) -> Result<Self, InputError> {
        let bytes = s.as_bytes();
        let body = bytes.strip_suffix(b"$").unwrap_or(bytes);
        let ok = (1..=32).contains(&bytes.len())
            && body
                .first()
                .is_some_and(|b| b.is_ascii_lowercase() || *b == b'_')
            && body
                .iter()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'_' || *b == b'-');
        if ok {
            Ok(UserName(s.to_owned()))
        } else {
            Err(InputError::BadUserName(crate::quote(s)))
        }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for UserName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_ids_are_canonical_and_bounded() {
        assert_eq!(SlotId::parse("0").map(SlotId::get), Ok(0));
        assert_eq!(SlotId::parse("31").map(SlotId::get), Ok(31));
        for bad in ["", "32", "-1", "01", "+1", " 1", "1 ", "100", "a", "٣"] {
            assert!(SlotId::parse(bad).is_err(), "{bad:?}");
        }
        assert!(TokenId::new(32).is_err());
    }

    #[test]
    fn uid_minus_one_is_refused() {
        assert!(Uid::new(u32::MAX).is_err());
        assert_eq!(Uid::new(1001).map(Uid::get), Ok(1001));
    }

    #[test]
    fn hostile_names_are_refused() {
        let long = "a".repeat(4096);
        for bad in [
            "", "../etc", "-rf", "--", "a b", "a\nb", "a\0b", "Root", "ä", &long, "a/b", "$",
        ] {
            assert!(UserName::parse(bad).is_err(), "{bad:?}");
            assert!(VolumeName::parse(bad).is_err(), "{bad:?}");
        }
        for good in ["alice", "_keyward", "bob-2", "svc$", "a_b"] {
            assert!(UserName::parse(good).is_ok(), "{good:?}");
        }
        for good in ["root", "data-1", "a_b", "0"] {
            assert!(VolumeName::parse(good).is_ok(), "{good:?}");
        }
    }
}
