//! Newtypes for what keyward hands to Apple's tools as operands: account short names, numeric
//! ids, GeneratedUIDs, volume operands. Each is parsed once, and its grammar excludes a leading
//! `-`: `sysadminctl` and `dscl` do not honour `--`, so an operand that could be read as an
//! option must be impossible by construction rather than escaped.

use std::fmt;

use keyward_core::{quote, UserName};

use crate::error::MacError;

/// A local account's short name (`RecordName`), as macOS accepts it: ASCII letters, digits,
/// `_`, `.` and `-`, starting with a letter, digit or `_`, at most 64 bytes. Wider than
/// keyward's [`UserName`] (macOS allows `John.Smith`), never wider than what is safe in argv.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ShortName(String);

impl ShortName {
    /// Parse a short name.
    pub fn parse(s: &str) -> Result<Self, MacError> {
        let b = s.as_bytes();
        let ok = (1..=64).contains(&b.len())
            && b.first()
                .is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'_')
            && b.iter()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'));
        if ok {
            Ok(ShortName(s.to_owned()))
        } else {
            Err(MacError::BadName(quote(s)))
        }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The directory path `dscl` uses for the account: `/Users/NAME`.
    pub fn user_path(&self) -> String {
        format!("/Users/{}", self.0)
    }

    /// The same name as keyward's [`UserName`], if it fits that stricter grammar.
    pub fn to_user_name(&self) -> Option<UserName> {
        UserName::parse(&self.0).ok()
    }
}

impl From<&UserName> for ShortName {
    fn from(u: &UserName) -> Self {
        // UserName's grammar ([a-z_][a-z0-9_-]*$?) is a subset, except for a trailing `$`,
        // which macOS does not use for local accounts; it is kept verbatim and can never start
        // an option.
        ShortName(u.as_str().to_owned())
    }
}

impl fmt::Display for ShortName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&self.0)
    }
}

/// An account's numeric `UniqueID`. Negative ids (`nobody` is -2) exist in the directory and
/// are kept as they are; they are never scanned for tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AccountId(i64);

impl AccountId {
    /// Parse the decimal form `dscl` prints.
    pub fn parse(s: &str) -> Result<Self, MacError> {
        let digits = s.strip_prefix('-').unwrap_or(s);
        if digits.is_empty() || digits.len() > 10 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(MacError::BadName(quote(s)));
        }
        s.parse()
            .map(AccountId)
            .map_err(|_| MacError::BadName(quote(s)))
    }

    /// The id.
    pub fn get(self) -> i64 {
        self.0
    }
}

/// The uid of keyward's hidden service account: below 500, so the login window does not list
/// it and it sorts with Apple's own service accounts, and above 400, clear of Apple's role
/// accounts (200–400).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServiceUid(u32);

impl ServiceUid {
    /// The range keyward picks from.
    pub const RANGE: std::ops::RangeInclusive<u32> = 401..=499;

    /// A service uid, if it is in [`Self::RANGE`].
    pub fn new(n: u32) -> Result<Self, MacError> {
        if Self::RANGE.contains(&n) {
            Ok(ServiceUid(n))
        } else {
            Err(MacError::BadName(n.to_string()))
        }
    }

    /// The highest uid in [`Self::RANGE`] no account uses.
    pub fn pick_free(used: impl Iterator<Item = AccountId> + Clone) -> Option<Self> {
        Self::RANGE
            .rev()
            .find(|n| !used.clone().any(|u| u.get() == i64::from(*n)))
            .map(ServiceUid)
    }

    /// The id.
    pub fn get(self) -> u32 {
        self.0
    }
}

/// An account's `GeneratedUID` (for local accounts also its APFS crypto user UUID):
/// canonical upper-case 8-4-4-4-12 hex.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GeneratedUid(String);

impl GeneratedUid {
    /// Parse a UUID as `dscl` and `fdesetup list` print it.
    pub fn parse(s: &str) -> Result<Self, MacError> {
        let groups: Vec<&str> = s.split('-').collect();
        let lens = [8, 4, 4, 4, 12];
        let ok = groups.len() == 5
            && groups.iter().zip(lens).all(|(g, n)| {
                g.len() == n
                    && g.bytes()
                        .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b))
            });
        if ok {
            Ok(GeneratedUid(s.to_owned()))
        } else {
            Err(MacError::BadName(quote(s)))
        }
    }

    /// The UUID.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The volume `diskutil apfs unlockVolume -verify` tests: an absolute mount point or a
/// `diskNsM` identifier. Defaults to `/`, which diskutil resolves to the booted volume group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VolumeOperand(String);

impl VolumeOperand {
    /// Parse a mount point (`/…`, printable ASCII without spaces) or a device identifier.
    pub fn parse(s: &str) -> Result<Self, MacError> {
        let path = s.starts_with('/')
            && s.len() <= 255
            && s.bytes().all(|b| b.is_ascii_graphic())
            && !s.split('/').any(|c| c == "..");
        let dev = s.len() <= 32
            && s.strip_prefix("disk").is_some_and(|r| {
                !r.is_empty() && r.bytes().all(|b| b.is_ascii_digit() || b == b's')
            });
        if path || dev {
            Ok(VolumeOperand(s.to_owned()))
        } else {
            Err(MacError::BadName(quote(s)))
        }
    }

    /// The operand.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for VolumeOperand {
    fn default() -> Self {
        VolumeOperand("/".to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_never_look_like_options() {
        for good in ["alice", "_keyward", "John.Smith", "a-b", "0day"] {
            assert!(ShortName::parse(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "-x",
            "--",
            ".hidden",
            "a b",
            "a/b",
            "ä",
            "a\nb",
            &"a".repeat(65),
        ] {
            assert!(ShortName::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn uuids_and_ids() {
        assert!(GeneratedUid::parse("9DB1DCA0-9B6A-464F-94A3-32853C5E2987").is_ok());
        assert!(GeneratedUid::parse("9db1dca0-9b6a-464f-94a3-32853c5e2987").is_err());
        assert!(GeneratedUid::parse("-DB1DCA0-9B6A-464F-94A3-32853C5E2987").is_err());
        assert_eq!(AccountId::parse("-2").map(AccountId::get).ok(), Some(-2));
        assert!(AccountId::parse("5x").is_err());
        assert!(ServiceUid::new(500).is_err());
        let used = [AccountId(499), AccountId(498)];
        assert_eq!(
            ServiceUid::pick_free(used.iter().copied()).map(ServiceUid::get),
            Some(497)
        );
    }

    #[test]
    fn volume_operands() {
        for good in ["/", "/System/Volumes/Data", "disk3s5"] {
            assert!(VolumeOperand::parse(good).is_ok(), "{good}");
        }
        for bad in ["-verify", "disk", "/a b", "/../x", "diskX"] {
            assert!(VolumeOperand::parse(bad).is_err(), "{bad}");
        }
    }
}
