//! What both daemons do first: find and load the configuration.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use keyward_core::config::{Config, DEFAULT_PATH};

use crate::safe_fs;

/// `PROG [--config FILE]`, else `$KEYWARD_CONFIG`, else the default path.
pub fn config_path(
    prog: &str,
    mut args: impl Iterator<Item = String>,
    env: Option<OsString>,
) -> Result<PathBuf, String> {
    match (args.next().as_deref(), args.next(), args.next()) {
        (None, ..) => Ok(env
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_PATH))),
        (Some("--config"), Some(p), None) => Ok(PathBuf::from(p)),
        _ => Err(format!("usage: {prog} [--config FILE]")),
    }
}

/// Read the config (root-owned, not group/world-writable, or refused) and parse it.
pub fn load_config(path: &Path) -> Result<Config, String> {
    let text = safe_fs::read_trusted_config(path).map_err(|e| format!("config: {e}"))?;
    Config::parse(&text).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_path_forms() {
        let args = |v: &[&str]| {
            v.iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>()
                .into_iter()
        };
        assert_eq!(
            config_path("d", args(&[]), None),
            Ok(PathBuf::from(DEFAULT_PATH))
        );
        assert_eq!(
            config_path("d", args(&[]), Some("/x".into())),
            Ok(PathBuf::from("/x"))
        );
        assert_eq!(
            config_path("d", args(&["--config", "/y"]), Some("/x".into())),
            Ok(PathBuf::from("/y"))
        );
        assert!(config_path("d", args(&["--config"]), None).is_err());
        assert!(config_path("d", args(&["--bogus", "a"]), None).is_err());
    }
}
