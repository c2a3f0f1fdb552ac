//! The server's config file, `server.toml` (`serve --config FILE`; by default
//! `/etc/keyward/server.toml` when it exists; no file means every default). TOML, parsed
//! strictly: an unknown table or key is an error, so a typo never silently means the default.
//! One table per concern — `[reveal]` today; `[oidc]` and `[notify]` are further fields of
//! [`ServerConfig`] with their own tables. Pure: the caller reads the file.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The file `serve` reads when `--config` is not given, if it exists.
pub const DEFAULT_PATH: &str = "/etc/keyward/server.toml";

/// The longest approval window (30 days): an approval is a short-lived permission.
pub const MAX_APPROVAL_HOURS: u32 = 720;

/// The whole file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct ServerConfig {
    /// `[reveal]`: how a recovery key is revealed to a person.
    pub reveal: RevealConfig,
}

/// `[reveal]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct RevealConfig {
    /// A reveal needs a request approved by a second person (approver or admin).
    pub require_approval: bool,
    /// How long an approval (and a request waiting for one) lasts, in hours.
    pub approval_hours: u32,
}

impl Default for RevealConfig {
    fn default() -> Self {
        RevealConfig {
            require_approval: true,
            approval_hours: 24,
        }
    }
}

impl RevealConfig {
    /// The approval window in seconds.
    pub fn approval_secs(&self) -> i64 {
        i64::from(self.approval_hours) * 3600
    }
}

/// Why the config file was not used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// Which file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Not TOML, an unknown key, or a value of the wrong type.
    #[error("{path}: {message}")]
    Parse {
        /// Which file.
        path: PathBuf,
        /// The parser's words (with the line).
        message: String,
    },
    /// A value out of its range.
    #[error("{path}: {message}")]
    Invalid {
        /// Which file.
        path: PathBuf,
        /// What is wrong and what is allowed.
        message: String,
    },
}

impl ServerConfig {
    /// Parse the text of `path`.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let config: ServerConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        let hours = config.reveal.approval_hours;
        if !(1..=MAX_APPROVAL_HOURS).contains(&hours) {
            return Err(ConfigError::Invalid {
                path: path.to_owned(),
                message: format!(
                    "[reveal] approval_hours must be 1 to {MAX_APPROVAL_HOURS}, not {hours}"
                ),
            });
        }
        Ok(config)
    }

    /// `--config FILE` (which must exist), else [`DEFAULT_PATH`] if it exists, else every
    /// default. Also says which file was read, for the log.
    pub fn load(explicit: Option<&Path>) -> Result<(Self, Option<PathBuf>), ConfigError> {
        let path = match explicit {
            Some(p) => p.to_owned(),
            None if Path::new(DEFAULT_PATH).exists() => PathBuf::from(DEFAULT_PATH),
            None => return Ok((ServerConfig::default(), None)),
        };
        let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
            path: path.clone(),
            source,
        })?;
        Ok((Self::parse(&text, &path)?, Some(path)))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// The file the Debian package installs as /etc/keyward/server.toml.
    const SHIPPED: &str = include_str!("../../../dist/debian/server.toml");

    fn parse(text: &str) -> Result<ServerConfig, ConfigError> {
        ServerConfig::parse(text, Path::new("server.toml"))
    }

    /// The shipped file with every option line (`#key = value`, `#[table]`) uncommented.
    fn uncommented() -> String {
        SHIPPED
            .lines()
            .map(|l| match l.strip_prefix('#') {
                Some(rest)
                    if rest.starts_with('[')
                        || rest.starts_with(|c: char| c.is_ascii_lowercase()) =>
                {
                    rest
                }
                _ => l,
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn no_file_and_the_shipped_file_mean_the_defaults() {
        let defaults = ServerConfig::default();
        assert!(defaults.reveal.require_approval);
        assert_eq!(defaults.reveal.approval_hours, 24);
        assert_eq!(parse("").unwrap(), defaults);
        assert_eq!(
            parse(SHIPPED).unwrap(),
            defaults,
            "as shipped, all commented"
        );
    }

    #[test]
    fn every_option_in_the_shipped_file_parses_and_shows_its_default() {
        let text = uncommented();
        assert_eq!(parse(&text).unwrap(), ServerConfig::default(), "{text}");
        for option in ["[reveal]", "require_approval = true", "approval_hours = 24"] {
            assert!(
                text.lines().any(|l| l.trim() == option),
                "{option} is not in the shipped file"
            );
        }
    }

    #[test]
    fn unknown_keys_and_bad_values_are_errors() {
        for bad in [
            "[reveal]\nrequire_aproval = false\n",
            "[revael]\n",
            "typo = 1\n",
            "[reveal]\nrequire_approval = \"no\"\n",
            "[reveal]\napproval_hours = -1\n",
            "[reveal]\napproval_hours = 0\n",
            "[reveal]\napproval_hours = 721\n",
            "not toml",
        ] {
            let e = parse(bad).unwrap_err().to_string();
            assert!(e.starts_with("server.toml: "), "{bad}: {e}");
        }
        let c = parse("[reveal]\nrequire_approval = false\napproval_hours = 2\n").unwrap();
        assert!(!c.reveal.require_approval);
        assert_eq!(c.reveal.approval_secs(), 7200);
    }

    #[test]
    fn an_explicit_file_must_exist() {
        let e = ServerConfig::load(Some(Path::new("/nonexistent/server.toml"))).unwrap_err();
        assert!(matches!(e, ConfigError::Read { .. }), "{e}");
    }
}
