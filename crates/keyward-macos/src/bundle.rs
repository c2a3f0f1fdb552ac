//! The login-capture plug-in's bundle: its `Info.plist`, its layout
//! (`keyward.bundle/Contents/{Info.plist,MacOS/keyward}`), and the check `keyward install`
//! makes before it names the plug-in in `system.login.console` — a right that names a bundle
//! authorizationhost cannot load fails every login, and a bundle someone other than root can
//! write is code that runs as root at the login window.
//!
//! Every name comes from the plug-in crate's constants (`keyward_authplugin::PLUGIN_NAME` and
//! friends), the same ones the authorizationdb edit writes ([`crate::login_right::CAPTURE`]).
//! File I/O only; no commands run here (signing is `scripts/macos-bundle`'s, on a Mac).

use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use plist::{Dictionary, Value};

pub use keyward_authplugin::{
    BUNDLE_DIR_NAME, BUNDLE_EXECUTABLE, BUNDLE_IDENTIFIER, CAPTURE_RIGHT_ENTRY, PLUGIN_NAME,
};

/// Where macOS loads authorization plug-ins from.
pub const PLUGINS_DIR: &str = "/Library/Security/SecurityAgentPlugins";

/// `CFBundlePackageType` of a loadable bundle.
pub const PACKAGE_TYPE: &str = "BNDL";

/// The oldest macOS the arm64 plug-in can run on (the first for Apple silicon).
pub const MINIMUM_SYSTEM_VERSION: &str = "11.0";

/// Why a bundle could not be laid out, or is not fit to be named in the login right.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BundleError {
    /// A file or directory of the bundle is missing.
    #[error("{0} is missing: install the bundle first (docs/MACOS.md, \"Installing the bundle\")")]
    Missing(PathBuf),
    /// A symlink where a real file or directory belongs.
    #[error("{0} is a symlink; the bundle must be real files owned by root")]
    Symlink(PathBuf),
    /// Not a directory / not a regular file where one belongs.
    #[error("{0} is not a {1}")]
    WrongType(PathBuf, &'static str),
    /// Not owned by root: whoever owns it could put code into the login.
    #[error(
        "{path} is owned by uid {uid}, not root: its owner could run code at the login window"
    )]
    NotRootOwned {
        /// The path.
        path: PathBuf,
        /// Its owner.
        uid: u32,
    },
    /// Writable by group or others.
    #[error(
        "{path} has mode {mode:o}: group or others could change code that runs at the login window"
    )]
    Writable {
        /// The path.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The `Info.plist` is not the plug-in's.
    #[error("{path}: {reason}")]
    InfoPlist {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Laying out over an existing bundle.
    #[error("{0} exists already; remove it first")]
    Exists(PathBuf),
    /// A file operation failed.
    #[error("{path}: {reason}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The OS error.
        reason: String,
    },
}

fn io_error(path: &Path) -> impl Fn(io::Error) -> BundleError + '_ {
    move |e| BundleError::Io {
        path: path.to_owned(),
        reason: e.to_string(),
    }
}

/// The bundle's `Info.plist`, as XML.
pub fn info_plist(version: &str) -> Result<Vec<u8>, BundleError> {
    let mut d = Dictionary::new();
    let mut put = |k: &str, v: &str| {
        d.insert(k.to_owned(), Value::String(v.to_owned()));
    };
    put("CFBundleDevelopmentRegion", "en");
    put("CFBundleExecutable", BUNDLE_EXECUTABLE);
    put("CFBundleIdentifier", BUNDLE_IDENTIFIER);
    put("CFBundleInfoDictionaryVersion", "6.0");
    put("CFBundleName", PLUGIN_NAME);
    put("CFBundlePackageType", PACKAGE_TYPE);
    put("CFBundleShortVersionString", version);
    put("CFBundleVersion", version);
    put("LSMinimumSystemVersion", MINIMUM_SYSTEM_VERSION);
    let mut out = Vec::new();
    Value::Dictionary(d)
        .to_writer_xml(&mut out)
        .map_err(|e| BundleError::InfoPlist {
            path: PathBuf::from("Info.plist"),
            reason: e.to_string(),
        })?;
    out.push(b'\n');
    Ok(out)
}

/// Lay out `out_dir/keyward.bundle` around `executable` (the cdylib, copied and renamed):
/// directories 0755, the executable 0755, `Info.plist` 0644. Returns the bundle's path.
pub fn lay_out(out_dir: &Path, executable: &Path, version: &str) -> Result<PathBuf, BundleError> {
    let bundle = out_dir.join(BUNDLE_DIR_NAME);
    if fs::symlink_metadata(&bundle).is_ok() {
        return Err(BundleError::Exists(bundle));
    }
    let macos = bundle.join("Contents").join("MacOS");
    fs::create_dir_all(&macos).map_err(io_error(&macos))?;
    for dir in [&bundle, &bundle.join("Contents"), &macos] {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).map_err(io_error(dir))?;
    }
    let exe = macos.join(BUNDLE_EXECUTABLE);
    fs::copy(executable, &exe).map_err(io_error(executable))?;
    fs::set_permissions(&exe, fs::Permissions::from_mode(0o755)).map_err(io_error(&exe))?;
    let info = bundle.join("Contents").join("Info.plist");
    fs::write(&info, info_plist(version)?).map_err(io_error(&info))?;
    fs::set_permissions(&info, fs::Permissions::from_mode(0o644)).map_err(io_error(&info))?;
    Ok(bundle)
}

/// Is the plug-in installed under `plugins_dir` so that naming it in the login right is safe:
/// every directory from `plugins_dir` down and both files real (no symlink), owned by root,
/// writable by nobody else; the executable a regular file; `Info.plist` naming it.
pub fn check_installed(plugins_dir: &Path) -> Result<(), BundleError> {
    let bundle = plugins_dir.join(BUNDLE_DIR_NAME);
    let contents = bundle.join("Contents");
    let macos = contents.join("MacOS");
    for dir in [plugins_dir, &bundle, &contents, &macos] {
        owned_by_root(dir, true)?;
    }
    let exe = macos.join(BUNDLE_EXECUTABLE);
    let info = contents.join("Info.plist");
    owned_by_root(&exe, false)?;
    owned_by_root(&info, false)?;
    let bad = |reason: String| BundleError::InfoPlist {
        path: info.clone(),
        reason,
    };
    let value = Value::from_file(&info).map_err(|e| bad(format!("not a property list: {e}")))?;
    let dict = value
        .as_dictionary()
        .ok_or_else(|| bad("not a dictionary".into()))?;
    for (key, want) in [
        ("CFBundleExecutable", BUNDLE_EXECUTABLE),
        ("CFBundleIdentifier", BUNDLE_IDENTIFIER),
        ("CFBundlePackageType", PACKAGE_TYPE),
    ] {
        let got = dict.get(key).and_then(Value::as_string);
        if got != Some(want) {
            return Err(bad(format!("{key} is {got:?}, not {want:?}")));
        }
    }
    Ok(())
}

fn owned_by_root(path: &Path, dir: bool) -> Result<(), BundleError> {
    let m = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(BundleError::Missing(path.to_owned()))
        }
        Err(e) => return Err(io_error(path)(e)),
    };
    if m.file_type().is_symlink() {
        return Err(BundleError::Symlink(path.to_owned()));
    }
    if dir && !m.is_dir() {
        return Err(BundleError::WrongType(path.to_owned(), "directory"));
    }
    if !dir && !m.is_file() {
        return Err(BundleError::WrongType(path.to_owned(), "regular file"));
    }
    if m.uid() != 0 {
        return Err(BundleError::NotRootOwned {
            path: path.to_owned(),
            uid: m.uid(),
        });
    }
    if m.mode() & 0o022 != 0 {
        return Err(BundleError::Writable {
            path: path.to_owned(),
            mode: m.mode() & 0o7777,
        });
    }
    Ok(())
}
