//! Files and directories opened the way a root process must: never following a symlink
//! (`O_NOFOLLOW`), never blocking on a FIFO planted in a file's place (`O_NONBLOCK` until the
//! type is checked), never inheriting into children (`O_CLOEXEC`), and checked after opening
//! (`fstat` on the open descriptor, so there is no window between check and use) for type,
//! link count, owner and mode. Secrets are written atomically: temp file, fsync, rename, fsync
//! of the directory. The daemons' small JSON state files are read and written the same way
//! (`read_json`, `write_json`).

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use keyward_core::Secret;

/// What an opened file must look like.
#[derive(Debug, Clone, Copy)]
pub struct Expect {
    /// Required owner.
    pub uid: u32,
    /// Mode bits that must be clear (e.g. `0o077` for root-only, `0o022` for not writable by
    /// group or others).
    pub forbidden_mode: u32,
}

impl Expect {
    /// Owned by `uid`, readable and writable by nobody else.
    pub fn private(uid: u32) -> Self {
        Expect {
            uid,
            forbidden_mode: 0o077,
        }
    }

    /// Owned by root, writable by nobody else.
    pub fn root_trusted() -> Self {
        Expect {
            uid: 0,
            forbidden_mode: 0o022,
        }
    }
}

fn refused(path: &Path, why: &str) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::PermissionDenied,
        format!("{}: {why}", keyward_core::quote(&path.to_string_lossy())),
    )
}

fn check(file: &File, path: &Path, expect: Expect) -> std::io::Result<()> {
    let m = file.metadata()?;
    if !m.file_type().is_file() {
        return Err(refused(path, "not a regular file"));
    }
    if m.nlink() != 1 {
        return Err(refused(path, "has more than one hard link"));
    }
    if m.uid() != expect.uid {
        return Err(refused(
            path,
            &format!("owned by uid {}, expected {}", m.uid(), expect.uid),
        ));
    }
    if m.mode() & expect.forbidden_mode != 0 {
        return Err(refused(
            path,
            &format!("mode {:o} is too permissive", m.mode() & 0o7777),
        ));
    }
    // Type checked: back to blocking I/O. Only O_NONBLOCK is cleared: F_SETFL with no flags
    // would also clear O_APPEND, and an append-only log would then be written from offset 0.
    blocking(file)
}

/// Clear `O_NONBLOCK` on `file`, keeping every other status flag (`O_APPEND` above all).
fn blocking(file: &File) -> std::io::Result<()> {
    let flags = rustix::fs::fcntl_getfl(file)?;
    rustix::fs::fcntl_setfl(file, flags - rustix::fs::OFlags::NONBLOCK)?;
    Ok(())
}

/// Open an existing file for reading, checked.
pub fn open_read(path: &Path, expect: Expect) -> std::io::Result<File> {
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(libc_flags())
        .open(path)
        .map_err(|e| named(path, e))?;
    check(&f, path, expect)?;
    Ok(f)
}

/// Open (creating with `mode` if absent) a file for appending, checked.
pub fn open_append(path: &Path, expect: Expect, mode: u32) -> std::io::Result<File> {
    let f = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .mode(mode)
        .custom_flags(libc_flags())
        .open(path)
        .map_err(|e| named(path, e))?;
    check(&f, path, expect)?;
    Ok(f)
}

/// An open that failed, with the file named (a bare "Permission denied" says nothing about
/// which file). `O_NOFOLLOW` on a link fails with ELOOP ("too many levels of symbolic links"):
/// say what it means. The error's kind is kept (callers treat NotFound as "absent").
fn named(path: &Path, e: std::io::Error) -> std::io::Error {
    if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) {
        refused(
            path,
            "is a symbolic link (refused: keyward never follows one)",
        )
    } else {
        std::io::Error::new(
            e.kind(),
            format!("{}: {e}", keyward_core::quote(&path.to_string_lossy())),
        )
    }
}

fn libc_flags() -> i32 {
    use rustix::fs::OFlags;
    (OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK | OFlags::NOCTTY).bits() as i32
}

/// Read a file of at most `limit` bytes, checked; `Ok(None)` if it does not exist.
pub fn read_checked(path: &Path, expect: Expect, limit: u64) -> std::io::Result<Option<Vec<u8>>> {
    let f = match open_read(path, expect) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    // Sized up front so a secret is never copied by a reallocation and left behind.
    let cap = usize::try_from(limit.min(64 << 10)).unwrap_or(4096) + 1;
    let mut buf = Vec::with_capacity(cap);
    f.take(limit + 1).read_to_end(&mut buf)?;
    if buf.len() as u64 > limit {
        return Err(refused(path, "is too large"));
    }
    Ok(Some(buf))
}

/// Read a JSON state file of at most `limit` bytes, checked as [`read_checked`]; `Ok(None)` if
/// it does not exist. One that does not parse as `T` is an [`std::io::ErrorKind::InvalidData`]
/// error whose message is the parser's (so a caller can tell a damaged file from one it could
/// not read).
pub fn read_json<T: serde::de::DeserializeOwned>(
    path: &Path,
    expect: Expect,
    limit: u64,
) -> std::io::Result<Option<T>> {
    let parse = |bytes: Vec<u8>| {
        serde_json::from_slice(&bytes)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
    };
    read_checked(path, expect, limit)?.map(parse).transpose()
}

/// Write `value` as JSON to `dir/name` atomically with `mode` ([`write_atomic`]).
pub fn write_json<T: serde::Serialize + ?Sized>(
    dir: &Path,
    name: &str,
    value: &T,
    mode: u32,
) -> std::io::Result<()> {
    let json = serde_json::to_vec(value)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
    write_atomic(dir, name, &json, mode)
}

/// Read the config file: owned by root and not writable by group or others, or refused.
pub fn read_trusted_config(path: &Path) -> std::io::Result<String> {
    let bytes = read_checked(path, Expect::root_trusted(), 1 << 20)?.ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::NotFound, "config file not found")
    })?;
    String::from_utf8(bytes).map_err(|_| refused(path, "is not UTF-8"))
}

/// Read a secret file (root-only); `Ok(None)` if it does not exist.
pub fn read_secret(path: &Path, uid: u32) -> std::io::Result<Option<Secret>> {
    Ok(read_checked(path, Expect::private(uid), 4096)?.map(Secret::from_vec))
}

/// Write `bytes` to `dir/name` atomically with `mode` (the secret's only resting place):
/// a fresh temp file (`O_EXCL`), fsync, rename over, fsync the directory.
pub fn write_atomic(dir: &Path, name: &str, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let tmp = dir.join(format!(".{name}.tmp"));
    match std::fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(libc_flags())
        .open(&tmp)?;
    let written = blocking(&f)
        .and_then(|()| f.write_all(bytes))
        .and_then(|()| f.sync_all());
    drop(f);
    if let Err(e) = written {
        // A full disk leaves no half-written copy behind (it may hold part of a secret).
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, dir.join(name))?;
    File::open(dir)?.sync_all()
}

/// Remove `path`; one that is not there is no error (it is gone either way).
pub fn remove_if_present(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Rename `dir/from` to `dir/to` and make it durable.
pub fn rename_durable(dir: &Path, from: &str, to: &str) -> std::io::Result<()> {
    std::fs::rename(dir.join(from), dir.join(to))?;
    File::open(dir)?.sync_all()
}

/// Make sure `path` is a real directory (not a link) owned by `uid:gid` with exactly `mode`;
/// create it if absent (returns true then). An existing directory with another owner, or
/// looser permissions, is refused rather than repaired: something else put it there.
pub fn ensure_dir(path: &Path, uid: u32, gid: u32, mode: u32) -> std::io::Result<bool> {
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::DirBuilder::new().mode(0o700).create(path)?;
            std::os::unix::fs::lchown(path, Some(uid), Some(gid))?;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
            Ok(true)
        }
        Err(e) => Err(e),
        Ok(m) => {
            if !m.file_type().is_dir() {
                return Err(refused(path, "is not a directory"));
            }
            if m.uid() != uid || m.gid() != gid {
                return Err(refused(
                    path,
                    &format!("is owned by {}:{}, expected {uid}:{gid}", m.uid(), m.gid()),
                ));
            }
            if m.mode() & 0o7777 & !mode != 0 {
                return Err(refused(
                    path,
                    &format!("mode {:o} is looser than {mode:o}", m.mode() & 0o7777),
                ));
            }
            Ok(false)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_links_fifos_hardlinks_and_loose_modes() {
        let d = tempfile::tempdir().expect("tempdir");
        let me = crate::hardening::effective_uid();
        let target = d.path().join("target");
        std::fs::write(&target, b"x").expect("write");
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        assert!(read_checked(&target, Expect::private(me), 10)
            .expect("ok")
            .is_some());

        let link = d.path().join("link");
        std::os::unix::fs::symlink(&target, &link).expect("symlink");
        assert!(read_checked(&link, Expect::private(me), 10).is_err());

        let hard = d.path().join("hard");
        std::fs::hard_link(&target, &hard).expect("hardlink");
        assert!(read_checked(&hard, Expect::private(me), 10).is_err());
        std::fs::remove_file(&hard).expect("rm");

        let fifo = d.path().join("fifo");
        nix_mkfifo(&fifo);
        let e = read_checked(&fifo, Expect::private(me), 10).expect_err("fifo refused");
        assert!(e.to_string().contains("not a regular file"), "{e}");

        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        assert!(read_checked(&target, Expect::private(me), 10).is_err());
        assert!(read_checked(
            &target,
            Expect {
                uid: me + 1,
                forbidden_mode: 0
            },
            10
        )
        .is_err());
        assert!(
            read_checked(&d.path().join("absent"), Expect::private(me), 10)
                .expect("ok")
                .is_none()
        );
    }

    fn nix_mkfifo(p: &Path) {
        let made = std::process::Command::new("mkfifo")
            .args(["-m", "600"])
            .arg(p)
            .status()
            .expect("mkfifo");
        assert!(made.success(), "mkfifo");
    }

    #[test]
    fn append_opens_keep_appending_after_reopen() {
        let d = tempfile::tempdir().expect("tempdir");
        let me = crate::hardening::effective_uid();
        let p = d.path().join("log");
        for line in ["one\n", "two\n", "three\n"] {
            let mut f = open_append(&p, Expect::private(me), 0o600).expect("open");
            f.write_all(line.as_bytes()).expect("write");
        }
        assert_eq!(
            std::fs::read_to_string(&p).expect("read"),
            "one\ntwo\nthree\n"
        );
    }

    #[test]
    fn json_state_round_trips_and_a_damaged_file_is_invalid_data() {
        let d = tempfile::tempdir().expect("tempdir");
        let me = crate::hardening::effective_uid();
        let p = d.path().join("state.json");
        let absent: Option<Vec<u32>> = read_json(&p, Expect::private(me), 64).expect("absent");
        assert_eq!(absent, None);
        write_json(d.path(), "state.json", &[1u32, 2, 3], 0o600).expect("write");
        let m = std::fs::metadata(&p).expect("meta");
        assert_eq!(m.mode() & 0o777, 0o600);
        let back: Option<Vec<u32>> = read_json(&p, Expect::private(me), 64).expect("read");
        assert_eq!(back, Some(vec![1, 2, 3]));

        // Not JSON, truncated JSON (serde_json's own io conversion would say UnexpectedEof),
        // another shape: all InvalidData, with the parser's words.
        for damaged in ["not json", "[1, 2", "{\"a\": 1}"] {
            std::fs::write(&p, damaged).expect("damage");
            let e = read_json::<Vec<u32>>(&p, Expect::private(me), 64).expect_err(damaged);
            assert_eq!(e.kind(), std::io::ErrorKind::InvalidData, "{damaged}: {e}");
            let parser = serde_json::from_str::<Vec<u32>>(damaged).expect_err(damaged);
            assert_eq!(e.to_string(), parser.to_string(), "{damaged}");
        }

        // The file checks still come first: a readable-by-others file is refused, not parsed.
        std::fs::write(&p, "[1]").expect("write");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let e = read_json::<Vec<u32>>(&p, Expect::private(me), 64).expect_err("loose mode");
        assert_eq!(e.kind(), std::io::ErrorKind::PermissionDenied, "{e}");
    }

    #[test]
    fn atomic_write_and_dirs() {
        let d = tempfile::tempdir().expect("tempdir");
        let me = crate::hardening::effective_uid();
        write_atomic(d.path(), "s", b"secret", 0o600).expect("write");
        let m = std::fs::metadata(d.path().join("s")).expect("meta");
        assert_eq!(m.mode() & 0o777, 0o600);
        let sub = d.path().join("sub");
        let gid = rustix::process::getegid().as_raw();
        ensure_dir(&sub, me, gid, 0o700).expect("create");
        ensure_dir(&sub, me, gid, 0o700).expect("idempotent");
        std::fs::set_permissions(&sub, std::fs::Permissions::from_mode(0o777)).expect("chmod");
        assert!(ensure_dir(&sub, me, gid, 0o700).is_err());
        let l = d.path().join("l");
        std::os::unix::fs::symlink(&sub, &l).expect("symlink");
        assert!(ensure_dir(&l, me, gid, 0o700).is_err());
    }
}
