//! `keyward install` and `keyward uninstall` on a Mac: the login capture. Install checks that
//! the plug-in's bundle is in place and safe, then puts `keyward:capture,privileged` into
//! `system.login.console` right after `builtin:authenticate,privileged`
//! (`keyward_macos::authdb`: `security authorizationdb read`, the text edit, `write` with the
//! right on stdin, read back); uninstall takes exactly that entry out again, before keyward's
//! rights are released. There is no account, unit or PAM step on a Mac: the helper (a
//! LaunchDaemon) makes its own directories, and the service account at the first `keyward
//! bootstrap`.
//!
//! [`install_login_capture`] and [`uninstall_login_capture`], generic over the `Runner`, are
//! the whole macOS decision path. The macOS-only `install`/`uninstall` below only choose the
//! real runner and the real plug-in directory; Linux test builds compile this module and
//! drive the same two functions through the simulated Mac.

use std::path::Path;

use keyward_macos::authdb::{self, LoginRightChange};
use keyward_macos::bundle;
use keyward_macos::login_right::{AUTHENTICATE, CAPTURE, RIGHT};
use keyward_macos::runner::Runner;
use keyward_macos::MacError;

use crate::Failure;

/// Name the plug-in in the login right, once the bundle under `plugins_dir` is fit to be
/// loaded at the login window. Returns the lines to print. Exit 4 when a safety rule refuses
/// (no bundle, an unsafe bundle, a right keyward does not understand), 1 when `security`
/// fails; in every error case nothing was written (or the message says what the right now is).
pub fn install_login_capture(
    runner: &mut impl Runner,
    plugins_dir: &Path,
) -> Result<Vec<String>, Failure> {
    bundle::check_installed(plugins_dir).map_err(|e| {
        Failure::new(
            4,
            format!("not adding {CAPTURE} to {RIGHT}: {e}. A login right that names a plug-in macOS cannot load stops every login"),
        )
    })?;
    match authdb::install_login_capture(runner).map_err(failure)? {
        LoginRightChange::Unchanged => Ok(vec![format!(
            "{RIGHT} already runs {CAPTURE} right after {AUTHENTICATE}; nothing changed"
        )]),
        LoginRightChange::Written { kept_after } => Ok(vec![format!(
            "added {CAPTURE} to {RIGHT} right after {AUTHENTICATE}{}",
            kept_after
                .map(|m| format!(" (before {})", keyward_core::quote(&m)))
                .unwrap_or_default()
        )]),
    }
}

/// Take keyward's entry out of the login right (and nothing else). Returns the lines to print.
pub fn uninstall_login_capture(runner: &mut impl Runner) -> Result<Vec<String>, Failure> {
    match authdb::uninstall_login_capture(runner).map_err(failure)? {
        LoginRightChange::Unchanged => Ok(vec![format!(
            "{RIGHT} does not run {CAPTURE}; nothing to remove"
        )]),
        LoginRightChange::Written { .. } => Ok(vec![format!("removed {CAPTURE} from {RIGHT}")]),
    }
}

/// A right keyward does not understand is a safety refusal (4); anything else (security
/// failed, could not run, wrote nothing) an error (1).
fn failure(e: MacError) -> Failure {
    let code = match e {
        MacError::LoginRight(_) => 4,
        _ => 1,
    };
    let advice = match e {
        MacError::LoginRight(_) => {
            " — nothing was written; compare the right with docs/MACOS.md and edit it by hand if it is meant to be this way"
        }
        _ => "",
    };
    Failure::new(code, format!("{e}{advice}"))
}

/// How long one `security` command may take (an authorization prompt nobody answers).
#[cfg(target_os = "macos")]
const DEADLINE: std::time::Duration = std::time::Duration::from_secs(30);

/// `keyward install` on a Mac.
#[cfg(target_os = "macos")]
pub fn install() -> Result<(), Failure> {
    let mut runner = keyward_macos::process::ProcessRunner::in_admin_shell(DEADLINE);
    for line in install_login_capture(&mut runner, Path::new(bundle::PLUGINS_DIR))? {
        println!("{line}");
    }
    println!("next: load the LaunchDaemons (dist/macos/README.md), then `keyward bootstrap VOLUME --holder ADMIN`");
    Ok(())
}

/// `keyward uninstall --yes` on a Mac: the same refusals as on Linux first, then the login
/// capture out of the right (so no login reaches a helper that is going away), then keyward's
/// rights released (the helper deletes the service account) and its directories removed.
#[cfg(target_os = "macos")]
pub fn uninstall(config: &keyward_core::config::Config) -> Result<(), Failure> {
    crate::install::check_release(config)?;
    // The agent's directory is the service user's; the helper deletes that account when it
    // releases keyward's rights, so its uid is looked up first.
    let service_uid = keyward_sys::users::user_for_creation(&config.service_user)
        .map_err(|e| Failure::new(1, format!("user lookup: {e}")))?
        .map(|a| a.uid.get());
    let mut runner = keyward_macos::process::ProcessRunner::in_admin_shell(DEADLINE);
    for line in uninstall_login_capture(&mut runner)? {
        println!("{line}");
    }
    crate::install::release(config)?;
    crate::install::remove_dirs(config, service_uid)?;
    println!(
        "the bundle {}/{} can now be deleted",
        bundle::PLUGINS_DIR,
        bundle::BUNDLE_DIR_NAME
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    //! The macOS install path through the simulated Mac, whose authorization database starts
    //! with `system.login.console` as transcribed from public dumps (keyward-macos's
    //! fixtures/authdb/, never recorded on a Mac) and answers `security` with outputs
    //! transcribed from Apple's SecurityTool source (fixtures/security-authdb-*.out).
    #![allow(clippy::unwrap_used)]
    use super::*;
    use keyward_macos::command::Purpose;
    use keyward_macos::fake::FakeMac;
    use keyward_macos::login_right::mechanisms;
    use std::os::unix::fs::PermissionsExt;

    fn right(name: &str) -> Vec<u8> {
        keyward_macos::fixture::login_right(name).unwrap().to_vec()
    }

    fn mac_with(right: Vec<u8>) -> FakeMac {
        let mut mac = FakeMac::default();
        mac.login_right = Some(right);
        mac
    }

    /// A plug-in directory holding the bundle, laid out around a placeholder executable.
    fn plugins() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let exe = dir.path().join("placeholder.dylib");
        std::fs::write(&exe, b"placeholder, not a Mach-O").unwrap();
        bundle::lay_out(dir.path(), &exe, "0.0.0").unwrap();
        std::fs::remove_file(&exe).unwrap();
        dir
    }

    fn writes(mac: &FakeMac) -> usize {
        mac.calls_for(Purpose::WriteLoginRight).count()
    }

    #[test]
    fn install_adds_one_line_and_reinstall_adds_nothing() {
        let plugins = plugins();
        let original = right("login-console-macos14.plist");
        let mut mac = mac_with(original.clone());
        let said = install_login_capture(&mut mac, plugins.path()).unwrap();
        assert_eq!(
            said,
            [format!("added {CAPTURE} to {RIGHT} right after {AUTHENTICATE} (before \"PKINITMechanism:auth,privileged\")")]
        );
        // Exactly one line more, indented like its neighbours, right after authenticate.
        let now = mac.login_right.clone().unwrap();
        let (before, after) = (
            String::from_utf8(original).unwrap(),
            String::from_utf8(now.clone()).unwrap(),
        );
        let mut expected: Vec<&str> = before.lines().collect();
        let at = expected
            .iter()
            .position(|l| l.trim() == format!("<string>{AUTHENTICATE}</string>"))
            .unwrap();
        let ours = format!("\t\t<string>{CAPTURE}</string>");
        expected.insert(at + 1, &ours);
        assert_eq!(after.lines().collect::<Vec<_>>(), expected);
        assert_eq!(writes(&mac), 1);

        let again = install_login_capture(&mut mac, plugins.path()).unwrap();
        assert_eq!(
            again,
            [format!(
                "{RIGHT} already runs {CAPTURE} right after {AUTHENTICATE}; nothing changed"
            )]
        );
        assert_eq!(writes(&mac), 1, "a reinstall writes nothing");
        assert_eq!(mac.login_right.as_deref(), Some(&now[..]));
        let m = mechanisms(&now).unwrap();
        assert_eq!(m.iter().filter(|x| *x == CAPTURE).count(), 1);
    }

    #[test]
    fn uninstall_gives_back_the_original_bytes() {
        let plugins = plugins();
        for (name, original) in keyward_macos::fixture::LOGIN_RIGHTS {
            let original = original.to_vec();
            let mut mac = mac_with(original.clone());
            install_login_capture(&mut mac, plugins.path()).unwrap();
            assert_ne!(mac.login_right.as_deref(), Some(&original[..]), "{name}");
            assert_eq!(
                uninstall_login_capture(&mut mac).unwrap(),
                [format!("removed {CAPTURE} from {RIGHT}")]
            );
            assert_eq!(
                mac.login_right.as_deref().map(String::from_utf8_lossy),
                Some(String::from_utf8_lossy(&original)),
                "{name}: byte for byte"
            );
            let again = uninstall_login_capture(&mut mac).unwrap();
            assert_eq!(
                again,
                [format!("{RIGHT} does not run {CAPTURE}; nothing to remove")]
            );
            assert_eq!(
                writes(&mac),
                2,
                "{name}: the second uninstall writes nothing"
            );
        }
    }

    #[test]
    fn a_right_changed_beyond_recognition_is_refused_and_nothing_written() {
        let plugins = plugins();
        let stock = String::from_utf8(right("login-console-macos14.plist")).unwrap();
        let authenticate = format!("<string>{AUTHENTICATE}</string>");
        let changed = [
            // macOS's own password check gone: keyward will not guess where to go.
            stock.replace(&format!("\t\t{authenticate}\n"), ""),
            // keyward's mechanism moved before the password check.
            stock.replace(
                "<string>loginwindow:login</string>",
                &format!("<string>loginwindow:login</string>\n\t\t<string>{CAPTURE}</string>"),
            ),
            // The check spelled twice in the text (a comment quoting it): not edited by guess.
            stock.replace(
                "<plist version=\"1.0\">",
                &format!("<plist version=\"1.0\">\n<!-- {authenticate} -->"),
            ),
        ];
        for text in changed {
            let mut mac = mac_with(text.clone().into_bytes());
            let f = install_login_capture(&mut mac, plugins.path()).unwrap_err();
            assert_eq!(f.code, 4, "{}", f.message);
            assert!(f.message.contains("nothing was written"), "{}", f.message);
            assert_eq!(writes(&mac), 0);
            assert_eq!(mac.login_right.as_deref(), Some(text.as_bytes()));
        }
    }

    #[test]
    fn security_failing_is_reported_and_nothing_is_half_written() {
        let plugins = plugins();
        let original = right("login-console-macos14.plist");
        let mut mac = mac_with(original.clone());
        mac.script(
            Purpose::WriteLoginRight,
            "security-authdb-write-denied",
            false,
        );
        let f = install_login_capture(&mut mac, plugins.path()).unwrap_err();
        assert_eq!(f.code, 1);
        assert!(f.message.contains("NO (-60005)"), "{}", f.message);
        assert!(f.message.contains("exit status 255"), "{}", f.message);
        assert!(
            f.message.contains("the right is unchanged"),
            "{}",
            f.message
        );
        assert_eq!(mac.login_right.as_deref(), Some(&original[..]));

        // A failure without the NO verdict: the exit status alone says so.
        mac.script(
            Purpose::WriteLoginRight,
            "security-authdb-write-unreadable",
            false,
        );
        let f = install_login_capture(&mut mac, plugins.path()).unwrap_err();
        assert_eq!(f.code, 1);
        assert!(
            f.message.contains("Unable to read the right definition"),
            "{}",
            f.message
        );
        assert!(
            f.message.contains("the right is unchanged"),
            "{}",
            f.message
        );
        assert_eq!(mac.login_right.as_deref(), Some(&original[..]));

        // The same for uninstall: the installed right stays as it was.
        install_login_capture(&mut mac, plugins.path()).unwrap();
        let installed = mac.login_right.clone().unwrap();
        mac.script(
            Purpose::WriteLoginRight,
            "security-authdb-write-denied",
            false,
        );
        let f = uninstall_login_capture(&mut mac).unwrap_err();
        assert_eq!(f.code, 1);
        assert!(
            f.message.contains("the right is unchanged"),
            "{}",
            f.message
        );
        assert_eq!(mac.login_right.as_deref(), Some(&installed[..]));
    }

    #[test]
    fn no_safe_bundle_no_edit() {
        let empty = tempfile::tempdir().unwrap();
        let writable = plugins();
        let writable_exe = writable
            .path()
            .join(bundle::BUNDLE_DIR_NAME)
            .join("Contents/MacOS")
            .join(bundle::BUNDLE_EXECUTABLE);
        std::fs::set_permissions(&writable_exe, std::fs::Permissions::from_mode(0o775)).unwrap();
        let foreign = plugins();
        let foreign_info = foreign
            .path()
            .join(bundle::BUNDLE_DIR_NAME)
            .join("Contents/Info.plist");
        std::os::unix::fs::chown(&foreign_info, Some(65534), None).unwrap();
        for (dir, why) in [
            (empty.path(), "is missing"),
            (writable.path(), "has mode 775"),
            (foreign.path(), "is owned by uid 65534"),
        ] {
            let mut mac = mac_with(right("login-console-macos14.plist"));
            let f = install_login_capture(&mut mac, dir).unwrap_err();
            assert_eq!(f.code, 4, "{}", f.message);
            assert!(f.message.contains(why), "{why}: {}", f.message);
            assert!(mac.calls.is_empty(), "the right is not even read");
        }
    }
}
