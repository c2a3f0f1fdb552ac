//! Ending a process together with every process it started, wherever they went: a program run
//! with `setsid` (as pam_exec runs its programs) is in a session and process group of its own,
//! so killing a process group misses it. The tree is read from /proc (each process's parent),
//! so the root must be a child subreaper (`PR_SET_CHILD_SUBREAPER`, [`become_subreaper`]):
//! then a descendant whose parent dies is re-parented to the root, not to init, and stays in
//! the tree. A pid read from /proc may be freed and reused by an unrelated process before the
//! signal: each process is pinned with a pidfd and checked again before it is killed, so root
//! never kills a stranger that inherited a descendant's number.

use std::collections::BTreeMap;
use std::time::Duration;

use rustix::process::{Pid, PidfdFlags, Signal};

/// How many times the tree is read again for processes forked while it was being killed.
const ROUNDS: usize = 50;

/// Make this process a child subreaper: its orphaned descendants become its children. Called
/// between fork and exec too, so it must stay one system call (async-signal-safe).
pub fn become_subreaper() -> std::io::Result<()> {
    rustix::process::set_child_subreaper(Some(rustix::process::getpid()))?;
    Ok(())
}

/// SIGKILL every live descendant of `root` (not `root` itself), again and again until none is
/// left alive: one forked while its parent was killed is re-parented to `root` (a subreaper)
/// and found in the next round. Zombies are dead already; their parent (or init) reaps them.
/// Returns how many processes were sent SIGKILL.
pub fn kill_descendants(root: u32) -> std::io::Result<usize> {
    let mut killed = 0;
    for _ in 0..ROUNDS {
        let alive = live_descendants(root, &read_tree()?);
        if alive.is_empty() {
            break;
        }
        for (pid, parent) in alive {
            if kill_if_still(pid, parent) {
                killed += 1;
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(killed)
}

/// SIGKILL `pid` if it is still the live child of `parent` that the tree showed: the process
/// is pinned by a pidfd first and its parent read again, so a pid reused in between (the
/// process exited, another took its number) is left alone. False when nothing was sent.
fn kill_if_still(pid: u32, parent: u32) -> bool {
    let Some(id) = i32::try_from(pid).ok().and_then(Pid::from_raw) else {
        return false;
    };
    // Gone since the tree was read: nothing to pin, nothing to kill. A kernel before 5.3 has no
    // pidfds: the parent is checked again all the same, and the signal sent by pid.
    let pinned = match rustix::process::pidfd_open(id, PidfdFlags::empty()) {
        Ok(fd) => Some(fd),
        Err(rustix::io::Errno::NOSYS) => None,
        Err(_) => return false,
    };
    if !read_entry(pid).is_some_and(|e| e.alive && e.parent == parent) {
        return false;
    }
    match pinned {
        Some(fd) => rustix::process::pidfd_send_signal(&fd, Signal::KILL).is_ok(),
        None => rustix::process::kill_process(id, Signal::KILL).is_ok(),
    }
}

/// `pid`'s entry now, if it exists.
fn read_entry(pid: u32) -> Option<Entry> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&stat)
}

/// One process as /proc shows it: its parent and whether it has not exited yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    parent: u32,
    alive: bool,
}

/// Every process's entry, by pid.
fn read_tree() -> std::io::Result<BTreeMap<u32, Entry>> {
    let mut tree = BTreeMap::new();
    for dir in std::fs::read_dir("/proc")? {
        let Some(pid) = dir?
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        // A process that exited since the directory was listed has no stat file: skip it.
        if let Some(entry) = read_entry(pid) {
            tree.insert(pid, entry);
        }
    }
    Ok(tree)
}

/// `/proc/PID/stat`: `PID (COMM) STATE PPID ...`, where COMM may hold spaces and parentheses,
/// so the fields are read after the last `)`.
fn parse_stat(stat: &str) -> Option<Entry> {
    let (_, rest) = stat.rsplit_once(')')?;
    let mut fields = rest.split_whitespace();
    let state = fields.next()?;
    let parent = fields.next()?.parse().ok()?;
    Some(Entry {
        parent,
        alive: !matches!(state, "Z" | "X" | "x"),
    })
}

/// The live processes below `root` in `tree` (children, their children, ...), each with its
/// parent.
fn live_descendants(root: u32, tree: &BTreeMap<u32, Entry>) -> Vec<(u32, u32)> {
    let mut found: Vec<(u32, u32)> = Vec::new();
    let mut parents = vec![root];
    while let Some(parent) = parents.pop() {
        for (&pid, entry) in tree {
            if entry.parent == parent && pid != root && !found.iter().any(|(p, _)| *p == pid) {
                found.push((pid, parent));
                parents.push(pid);
            }
        }
    }
    found.retain(|(pid, _)| tree.get(pid).is_some_and(|e| e.alive));
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stat_line_is_read_after_the_command_name() {
        let entry = parse_stat("4242 (a (b) c) S 17 4242 4242 0 -1 4194560").expect("parsed");
        assert_eq!(
            entry,
            Entry {
                parent: 17,
                alive: true
            }
        );
        assert!(!parse_stat("7 (sleep) Z 1 7").expect("parsed").alive);
        assert_eq!(parse_stat("7 sleep S 1"), None);
    }

    #[test]
    fn descendants_are_found_at_any_depth_and_zombies_left_alone() {
        let e = |parent, alive| Entry { parent, alive };
        let tree = BTreeMap::from([
            (10, e(1, true)),
            (11, e(10, true)),
            (12, e(11, true)),
            (13, e(10, false)),
            (14, e(13, true)),
            (20, e(1, true)),
        ]);
        let mut found = live_descendants(10, &tree);
        found.sort_unstable();
        assert_eq!(found, [(11, 10), (12, 11), (14, 13)]);
        assert!(live_descendants(20, &tree).is_empty());
    }

    /// A process is killed only while it is still the child of the parent the tree showed:
    /// a pid that now belongs to another parent's process (reused) is left alone.
    #[test]
    fn a_pid_whose_parent_changed_is_never_killed() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("sleep");
        let (pid, me) = (child.id(), std::process::id());
        assert!(
            !kill_if_still(pid, me + 1),
            "not the parent the tree showed"
        );
        assert!(child.try_wait().expect("wait").is_none(), "left alive");
        assert!(kill_if_still(pid, me));
        let status = child.wait().expect("wait");
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(9), "{status}");
    }
}
