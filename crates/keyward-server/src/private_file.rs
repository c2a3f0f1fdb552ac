//! One-line secrets the server reads from files (a database URL with its password, the
//! `/metrics` bearer token): the file must be a regular file (not a symlink) owned by the user
//! the server runs as, with no permission for group or others, or it is refused — a secret
//! others can read is no longer one.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// The one line of `path`, trimmed, after checking who may read it.
pub fn read_line(path: &Path) -> Result<String, String> {
    let shown = path.display();
    let meta = std::fs::symlink_metadata(path).map_err(|e| format!("{shown}: {e}"))?;
    if !meta.file_type().is_file() {
        return Err(format!("{shown}: not a regular file"));
    }
    if meta.uid() != nix::unistd::geteuid().as_raw() {
        return Err(format!("{shown}: not owned by this user"));
    }
    if meta.mode() & 0o077 != 0 {
        return Err(format!(
            "{shown}: mode {:o} lets others read it; chmod 600",
            meta.mode() & 0o777
        ));
    }
    let text = std::fs::read_to_string(path).map_err(|e| format!("{shown}: {e}"))?;
    let line = text.trim();
    if line.is_empty() || line.contains('\n') {
        return Err(format!("{shown}: expected one line"));
    }
    Ok(line.to_owned())
}
