//! The plug-in's bundle: laid out around a placeholder executable (a real one is linked only
//! on a Mac), its Info.plist names the executable the layout holds, and the check
//! `keyward install` makes refuses a bundle that is missing, unsafe or not keyward's.
#![allow(clippy::unwrap_used)]

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use keyward_macos::bundle::{
    check_installed, lay_out, BundleError, BUNDLE_DIR_NAME, BUNDLE_EXECUTABLE, BUNDLE_IDENTIFIER,
    PLUGIN_NAME,
};
use keyward_macos::login_right::CAPTURE;
use plist::Value;

fn laid_out() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let exe = dir.path().join("libkeyward_authplugin.dylib");
    std::fs::write(&exe, b"placeholder").unwrap();
    lay_out(dir.path(), &exe, "1.2.3").unwrap();
    std::fs::remove_file(&exe).unwrap();
    dir
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().mode() & 0o7777
}

#[test]
fn the_layout_and_its_info_plist_name_the_same_executable() {
    let dir = laid_out();
    let bundle = dir.path().join(BUNDLE_DIR_NAME);
    let exe = bundle.join("Contents/MacOS").join(BUNDLE_EXECUTABLE);
    assert_eq!(std::fs::read(&exe).unwrap(), b"placeholder");
    assert_eq!(mode(&exe), 0o755);
    assert_eq!(mode(&bundle.join("Contents/Info.plist")), 0o644);
    for d in [
        &bundle,
        &bundle.join("Contents"),
        &bundle.join("Contents/MacOS"),
    ] {
        assert_eq!(mode(d), 0o755, "{}", d.display());
    }
    let info = Value::from_file(bundle.join("Contents/Info.plist")).unwrap();
    let d = info.as_dictionary().unwrap();
    let get = |k: &str| d.get(k).and_then(Value::as_string).unwrap();
    assert_eq!(get("CFBundleExecutable"), BUNDLE_EXECUTABLE);
    assert_eq!(get("CFBundleIdentifier"), BUNDLE_IDENTIFIER);
    assert_eq!(get("CFBundlePackageType"), "BNDL");
    assert_eq!(get("CFBundleVersion"), "1.2.3");
    // The engine loads `NAME.bundle` for a `NAME:mechanism` entry.
    assert_eq!(
        CAPTURE.split(':').next().unwrap(),
        BUNDLE_DIR_NAME.strip_suffix(".bundle").unwrap()
    );
    assert_eq!(get("CFBundleName"), PLUGIN_NAME);
    check_installed(dir.path()).unwrap();
    // Never over an existing bundle.
    let again = lay_out(dir.path(), &exe, "1.2.3").unwrap_err();
    assert!(matches!(again, BundleError::Exists(_)), "{again}");
}

#[test]
fn a_bundle_that_is_not_keyward_s_or_not_safe_is_refused() {
    let dir = laid_out();
    let contents = dir.path().join(BUNDLE_DIR_NAME).join("Contents");
    let info = contents.join("Info.plist");
    let text = std::fs::read_to_string(&info).unwrap();
    std::fs::write(
        &info,
        text.replace(
            &format!("<string>{BUNDLE_EXECUTABLE}</string>"),
            "<string>other</string>",
        ),
    )
    .unwrap();
    let e = check_installed(dir.path()).unwrap_err();
    assert!(
        matches!(&e, BundleError::InfoPlist { reason, .. } if reason.contains("CFBundleExecutable")),
        "{e}"
    );
    std::fs::write(&info, text).unwrap();
    check_installed(dir.path()).unwrap();

    let macos = contents.join("MacOS");
    std::fs::rename(macos.join(BUNDLE_EXECUTABLE), macos.join("real")).unwrap();
    std::os::unix::fs::symlink("real", macos.join(BUNDLE_EXECUTABLE)).unwrap();
    let e = check_installed(dir.path()).unwrap_err();
    assert!(matches!(e, BundleError::Symlink(_)), "{e}");

    let e = check_installed(&dir.path().join("elsewhere")).unwrap_err();
    assert!(matches!(e, BundleError::Missing(_)), "{e}");
}
