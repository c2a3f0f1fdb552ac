//! Crash points for the crash tests, the one mechanism for every crate: a test build (this
//! crate's `failpoints` feature, which keyward-luks's and keyward-helper's `failpoints` turn
//! on) dies at a named step as a power cut would ([`die_like_power_loss`]) when
//! `KEYWARD_FAILPOINT` names it. A shipped build compiles every call here to nothing.
//!
//! Two forms. [`failpoint`]: a step named `STEP` by the test. [`counted`]: a step an
//! operation reaches more than once (a FileVault grant saves its registry before and after the
//! token), which a test names `STEP` (the first time this process reaches it) or `STEP#N` (the
//! Nth time); with `KEYWARD_FAILPOINT_TRACE` set, each reach is named on stderr
//! (`<who>: crash point STEP#N`), so a test can list an operation's steps by running it once.
//!
//! [`die_like_power_loss`]: crate::hardening::die_like_power_loss

/// The variable naming the step to die at.
#[cfg(feature = "failpoints")]
const POINT: &str = "KEYWARD_FAILPOINT";

/// Die like a power loss if `KEYWARD_FAILPOINT` is `name` (test builds only).
pub fn failpoint(name: &str) {
    #[cfg(feature = "failpoints")]
    if fires(std::env::var_os(POINT).as_deref(), name, None) {
        crate::hardening::die_like_power_loss();
    }
    let _ = name;
}

/// The step `name` is done, once more in this process: a test build names the reach on stderr
/// (as `who`) if `KEYWARD_FAILPOINT_TRACE` is set, and dies like a power loss when
/// `KEYWARD_FAILPOINT` is `name` and this is the first reach, or `name#N` and this is the Nth.
pub fn counted(who: &str, name: &'static str) {
    #[cfg(feature = "failpoints")]
    {
        use std::collections::BTreeMap;
        use std::sync::{Mutex, PoisonError};
        static REACHED: Mutex<BTreeMap<&'static str, u32>> = Mutex::new(BTreeMap::new());
        let n = {
            let mut reached = REACHED.lock().unwrap_or_else(PoisonError::into_inner);
            let n = reached.entry(name).or_insert(0);
            *n += 1;
            *n
        };
        if std::env::var_os("KEYWARD_FAILPOINT_TRACE").is_some() {
            eprintln!("{who}: crash point {name}#{n}");
        }
        if fires(std::env::var_os(POINT).as_deref(), name, Some(n)) {
            crate::hardening::die_like_power_loss();
        }
    }
    let _ = (who, name);
}

/// Whether `wanted` (`KEYWARD_FAILPOINT`'s value, if set) names this reach of `name`: the
/// plain form's only reach (`nth` None), or the `nth` reach of a counted one (`name` for the
/// first, `name#N` for the Nth).
#[cfg(any(test, feature = "failpoints"))]
fn fires(wanted: Option<&std::ffi::OsStr>, name: &str, nth: Option<u32>) -> bool {
    let Some(wanted) = wanted else {
        return false;
    };
    match nth {
        None => wanted == name,
        Some(n) => (n == 1 && wanted == name) || wanted == format!("{name}#{n}").as_str(),
    }
}

#[cfg(test)]
mod tests {
    use std::ffi::OsStr;
    use std::os::unix::process::ExitStatusExt;
    use std::process::Command;

    use super::*;

    #[test]
    fn a_point_fires_only_when_named_whole() {
        let w = |s: &'static str| Some(OsStr::new(s));
        assert!(fires(w("grant.verified"), "grant.verified", None));
        assert!(!fires(None, "grant.verified", None));
        assert!(!fires(w("grant.verified"), "grant.verifie", None));
        assert!(!fires(w("grant.verifie"), "grant.verified", None));
        assert!(!fires(w("grant.verified#1"), "grant.verified", None));
        assert!(!fires(w(""), "grant.verified", None));
    }

    #[test]
    fn a_counted_point_fires_at_its_first_reach_by_name_and_at_the_nth_by_name_n() {
        let w = |s: &'static str| Some(OsStr::new(s));
        assert!(fires(w("saved"), "saved", Some(1)));
        assert!(!fires(w("saved"), "saved", Some(2)));
        assert!(fires(w("saved#1"), "saved", Some(1)));
        assert!(fires(w("saved#2"), "saved", Some(2)));
        assert!(!fires(w("saved#2"), "saved", Some(1)));
        assert!(!fires(w("saved#2"), "saved", Some(3)));
        assert!(!fires(w("saved#12"), "saved", Some(1)));
        assert!(!fires(w("saved#02"), "saved", Some(2)));
        assert!(!fires(w("other#1"), "saved", Some(1)));
        assert!(!fires(None, "saved", Some(1)));
    }

    /// Run [`child_reaches_points`] alone in a child of this test binary, with `point` set.
    fn child(point: &str) -> std::process::Output {
        Command::new(std::env::current_exe().expect("test binary"))
            .args(["--exact", "failpoint::tests::child_reaches_points"])
            .args(["--nocapture", "--test-threads=1"])
            .env("KEYWARD_SYS_FAILPOINT_CHILD", "1")
            .env("KEYWARD_FAILPOINT", point)
            .env("KEYWARD_FAILPOINT_TRACE", "1")
            .output()
            .expect("run the child")
    }

    /// Only in [`child`]'s process: reach `a` three times, then `b`, saying each reach is done.
    #[test]
    fn child_reaches_points() {
        if std::env::var_os("KEYWARD_SYS_FAILPOINT_CHILD").is_none() {
            return;
        }
        for n in 1..=3 {
            counted("keyward-test", "a");
            println!("passed a#{n}");
        }
        failpoint("b");
        println!("passed b");
    }

    #[test]
    fn a_test_build_dies_by_sigkill_at_the_named_reach_and_a_shipped_build_never() {
        let armed = cfg!(feature = "failpoints");
        for (point, last) in [
            ("a", None),
            ("a#2", Some("passed a#1")),
            ("a#3", Some("passed a#2")),
            ("b", Some("passed a#3")),
            ("c", Some("passed b")),
        ] {
            let out = child(point);
            let stdout = String::from_utf8_lossy(&out.stdout);
            let stderr = String::from_utf8_lossy(&out.stderr);
            // (The harness's "test … ... " may precede the first line on its line.)
            let passed = stdout
                .lines()
                .filter_map(|l| Some(&l[l.find("passed ")?..]))
                .next_back();
            let dies = armed && point != "c";
            let want = if armed { last } else { Some("passed b") };
            assert_eq!(passed, want, "{point}: {stdout}");
            if dies {
                assert_eq!(out.status.signal(), Some(9), "{point}: {stdout}{stderr}");
            } else {
                assert!(out.status.success(), "{point}: {stdout}{stderr}");
            }
            // The trace names every reach, in a test build only.
            let traced = stderr.contains("keyward-test: crash point a#1\n");
            assert_eq!(traced, armed, "{point}: {stderr}");
        }
    }
}
