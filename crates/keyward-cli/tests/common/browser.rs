//! The browser suites' shared ground: `tests/ui` (node scripts driving Debian's headless
//! Chromium through playwright-core, and the OpenID Connect provider the single sign-on test
//! signs in at), its npm packages, and where screenshots go.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::escrow::Backend;
use super::{skip_or_fail, stderr};

const CHROMIUM: &str = "/usr/bin/chromium";

/// The npm packages the suites need (tests/ui/package.json).
const PACKAGES: [&str; 2] = ["playwright-core", "oidc-provider"];

/// `tests/ui` in the source tree.
pub fn ui_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/ui")
}

/// Where a suite's screenshots go: `target/ui-artifacts/<backend>/`.
pub fn artifacts(backend: &Backend) -> PathBuf {
    // target/debug/deps/<test>-… → target/
    let exe = std::env::current_exe().unwrap();
    let target = exe.ancestors().nth(3).unwrap();
    let name = match backend {
        Backend::Sqlite => "sqlite",
        Backend::Postgres(_) => "postgres",
    };
    target.join("ui-artifacts").join(name)
}

/// Node, Chromium and the npm packages (installed from the lock file when missing), or a
/// reason to skip (never in CI: scripts/deps installs node and Chromium).
pub fn browser_ready() -> bool {
    let node = Command::new("node").arg("--version").output();
    let missing = if node.is_err() {
        Some("node")
    } else if !Path::new(CHROMIUM).exists() {
        Some(CHROMIUM)
    } else {
        None
    };
    if let Some(what) = missing {
        skip_or_fail(&format!(
            "the browser test: {what} is not installed (bash scripts/deps installs it)"
        ));
        return false;
    }
    let modules = ui_dir().join("node_modules");
    if PACKAGES.iter().any(|p| !modules.join(p).exists()) {
        let out = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(ui_dir())
            .output()
            .unwrap();
        assert!(out.status.success(), "npm ci: {}", stderr(&out));
    }
    true
}
