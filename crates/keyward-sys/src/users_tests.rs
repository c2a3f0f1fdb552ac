//! Unit tests of nsswitch.conf's sources and of the account files' stamp.

use super::*;

#[test]
fn only_local_sources_are_files_only() {
    assert!(files_only(
        "passwd: files systemd\ngroup: files systemd\nshadow: files systemd\nhosts: files dns\n"
    ));
    assert!(files_only("hosts: files dns\n"), "absent lines: files");
    assert!(files_only(
        "passwd: compat\ngroup: files [SUCCESS=merge] systemd\n"
    ));
    assert!(!files_only("passwd: files sss\ngroup: files\n"));
    assert!(!files_only("# c\nshadow: files ldap # x\n"));
    assert!(!files_only("passwd: files mymachines\n"));
}

#[test]
fn every_line_naming_a_database_counts() {
    let twice = "passwd: files\npasswd: ldap\n";
    assert_eq!(
        sources(twice, "passwd").collect::<Vec<_>>(),
        ["files", "ldap"]
    );
    assert_eq!(sources(twice, "group").collect::<Vec<_>>(), ["files"]);
    assert!(!files_only(twice));
    assert!(!absence_is_authoritative_in(twice, "passwd", || true));
}

/// An /etc of account files in a temporary directory.
fn etc(nsswitch: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("passwd"), "root:x:0:0::/root:/bin/sh\n").expect("passwd");
    std::fs::write(dir.path().join("group"), "root:x:0:\n").expect("group");
    std::fs::write(dir.path().join("shadow"), "root:*:19000::::::\n").expect("shadow");
    std::fs::write(dir.path().join("nsswitch.conf"), nsswitch).expect("nsswitch");
    dir
}

#[test]
fn the_stamp_holds_while_no_account_file_changes() {
    let dir = etc("passwd: files\ngroup: files\nshadow: files\n");
    let first = accounts_stamp_in(dir.path()).expect("local files only");
    assert_eq!(accounts_stamp_in(dir.path()), Some(first.clone()));
    for (file, text) in [
        (
            "passwd",
            "root:x:0:0::/root:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/sh\n",
        ),
        ("group", "root:x:0:\nkeyward-users:x:1001:alice\n"),
        ("shadow", "root:!*:19000::::::\n"),
    ] {
        let before = accounts_stamp_in(dir.path()).expect("stamp");
        std::fs::write(dir.path().join(file), text).expect("rewriting");
        assert_ne!(
            accounts_stamp_in(dir.path()),
            Some(before),
            "{file} rewritten"
        );
    }
    // Replaced by a file of the same size (as `passwd` does through a rename): a new inode.
    let before = accounts_stamp_in(dir.path()).expect("stamp");
    let fresh = dir.path().join("shadow.new");
    std::fs::write(&fresh, "root:!*:19000::::::\n").expect("new shadow");
    std::fs::rename(&fresh, dir.path().join("shadow")).expect("rename");
    assert_ne!(
        accounts_stamp_in(dir.path()),
        Some(before),
        "shadow replaced"
    );
    // A missing file is stamped as missing, and stays so.
    std::fs::remove_file(dir.path().join("group")).expect("remove");
    let missing = accounts_stamp_in(dir.path()).expect("stamp");
    assert_eq!(accounts_stamp_in(dir.path()), Some(missing));
}

#[test]
fn no_stamp_while_a_directory_answers() {
    let dir = etc("passwd: files sss\ngroup: files sss\nshadow: files\n");
    assert_eq!(accounts_stamp_in(dir.path()), None);
    std::fs::write(dir.path().join("nsswitch.conf"), "passwd: files systemd\n").expect("local");
    assert!(
        accounts_stamp_in(dir.path()).is_some(),
        "nsswitch.conf read again"
    );
    std::fs::write(dir.path().join("nsswitch.conf"), "passwd: files ldap\n").expect("ldap");
    assert_eq!(accounts_stamp_in(dir.path()), None, "and again");
}
