//! `keyward-macos-bundle`: lays out the login-capture plug-in's bundle around a built dylib
//! (`scripts/macos-bundle` runs it), or prints one of its names, so that the script, its check
//! and the authorizationdb edit share the plug-in crate's constants instead of spelling them.
//!
//!     keyward-macos-bundle --executable DYLIB --out DIR   lays out DIR/keyward.bundle, prints its path
//!     keyward-macos-bundle --print NAME                   bundle | executable | identifier | right-entry
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use keyward_macos::bundle;
use keyward_macos::login_right;

const USAGE: &str = "usage: keyward-macos-bundle --executable DYLIB --out DIR | --print bundle|executable|identifier|right-entry";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err((code, message)) => {
            eprintln!("keyward-macos-bundle: {message}");
            ExitCode::from(code)
        }
    }
}

fn run(args: &[String]) -> Result<String, (u8, String)> {
    let usage = || (2, USAGE.to_owned());
    match args {
        [flag, name] if flag == "--print" => match name.as_str() {
            "bundle" => Ok(bundle::BUNDLE_DIR_NAME.to_owned()),
            "executable" => Ok(bundle::BUNDLE_EXECUTABLE.to_owned()),
            "identifier" => Ok(bundle::BUNDLE_IDENTIFIER.to_owned()),
            // What `keyward install` writes into system.login.console.
            "right-entry" => Ok(login_right::CAPTURE.to_owned()),
            _ => Err(usage()),
        },
        [a, x, b, y] => {
            let (exe, out) = match (a.as_str(), b.as_str()) {
                ("--executable", "--out") => (x, y),
                ("--out", "--executable") => (y, x),
                _ => return Err(usage()),
            };
            let made = bundle::lay_out(
                &PathBuf::from(out),
                &PathBuf::from(exe),
                env!("CARGO_PKG_VERSION"),
            )
            .map_err(|e| (1, e.to_string()))?;
            Ok(made.display().to_string())
        }
        _ => Err(usage()),
    }
}
