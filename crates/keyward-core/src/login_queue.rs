//! The captured logins and password changes waiting per user (the helper's login jobs): one
//! worker per user at a time, and at most one event waiting behind the running one. A later
//! event folds into the waiting one — the newest wins, except that a login never displaces a
//! waiting password change (the change moves the user's right to the new password; a login
//! after it only confirms it) — and the folds are counted for the job's record. No I/O here:
//! the helper starts the worker threads and runs the events.

use std::collections::HashMap;

use crate::{Secret, UserName};

/// One captured PAM event.
#[derive(Debug)]
pub enum Event {
    /// A login with this password.
    Login(Secret),
    /// A password change to this new password.
    Change(Secret),
}

/// One user's queue.
#[derive(Debug)]
struct Pending<C> {
    /// A worker runs for this user.
    running: bool,
    /// The next event and who handed it over.
    next: Option<(Event, C)>,
    /// Events folded into `next` since the last one taken.
    folded: u32,
}

/// Every user's queue; `C` says who handed an event over (for its record).
#[derive(Debug)]
pub struct LoginQueue<C> {
    users: HashMap<UserName, Pending<C>>,
}

impl<C> Default for LoginQueue<C> {
    fn default() -> Self {
        LoginQueue {
            users: HashMap::new(),
        }
    }
}

impl<C> LoginQueue<C> {
    /// Queue `event` for `user`. True when no worker runs for them: the caller starts one,
    /// which takes events with [`LoginQueue::next`] until there are none.
    #[must_use]
    pub fn submit(&mut self, user: &UserName, event: Event, caller: C) -> bool {
        let entry = self.users.entry(user.clone()).or_insert(Pending {
            running: false,
            next: None,
            folded: 0,
        });
        let keep_change =
            matches!(entry.next, Some((Event::Change(_), _))) && matches!(event, Event::Login(_));
        if entry.next.is_some() {
            entry.folded += 1;
        }
        if !keep_change {
            entry.next = Some((event, caller));
        }
        !std::mem::replace(&mut entry.running, true)
    }

    /// The next event for `user`'s worker, with how many later events were folded into it;
    /// `None` when there is none, and the worker stops (a later submit starts a new one).
    pub fn next(&mut self, user: &UserName) -> Option<(Event, C, u32)> {
        let pending = self.users.get_mut(user)?;
        match pending.next.take() {
            Some((event, caller)) => Some((event, caller, std::mem::take(&mut pending.folded))),
            None => {
                self.users.remove(user);
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn login(pw: &[u8]) -> Event {
        Event::Login(Secret::copy_from(pw))
    }

    fn taken(q: &mut LoginQueue<u32>, user: &UserName) -> Option<(String, u32, u32)> {
        q.next(user).map(|(e, c, folded)| {
            let what = match e {
                Event::Login(p) => format!("login {}", String::from_utf8_lossy(p.expose())),
                Event::Change(p) => format!("change {}", String::from_utf8_lossy(p.expose())),
            };
            (what, c, folded)
        })
    }

    /// One worker per user: the first event starts it, the events behind it fold into one
    /// (the newest, counted), and a worker that finds nothing stops, so the next submit
    /// starts another.
    #[test]
    fn one_worker_per_user_and_the_newest_event_waits() {
        let (alice, bob) = (
            UserName::parse("alice").unwrap(),
            UserName::parse("bob").unwrap(),
        );
        let mut q = LoginQueue::default();
        assert!(q.submit(&alice, login(b"a1"), 1));
        assert!(
            q.submit(&bob, login(b"b1"), 2),
            "another user has a worker of their own"
        );
        assert_eq!(taken(&mut q, &alice), Some(("login a1".into(), 1, 0)));
        assert!(
            !q.submit(&alice, login(b"a2"), 3),
            "a worker runs for alice"
        );
        assert!(!q.submit(&alice, login(b"a3"), 4));
        assert_eq!(taken(&mut q, &alice), Some(("login a3".into(), 4, 1)));
        assert_eq!(taken(&mut q, &alice), None);
        assert!(
            q.submit(&alice, login(b"a4"), 5),
            "the worker stopped; a new one starts"
        );
        assert_eq!(taken(&mut q, &bob), Some(("login b1".into(), 2, 0)));
    }

    /// A login does not displace a waiting password change (it is still counted); a newer
    /// change does.
    #[test]
    fn a_login_never_displaces_a_waiting_password_change() {
        let alice = UserName::parse("alice").unwrap();
        let mut q = LoginQueue::default();
        assert!(q.submit(&alice, login(b"old"), 1));
        assert!(taken(&mut q, &alice).is_some());
        assert!(!q.submit(&alice, Event::Change(Secret::copy_from(b"new")), 2));
        assert!(!q.submit(&alice, login(b"new"), 3));
        assert_eq!(taken(&mut q, &alice), Some(("change new".into(), 2, 1)));
        assert!(!q.submit(&alice, Event::Change(Secret::copy_from(b"n1")), 4));
        assert!(!q.submit(&alice, Event::Change(Secret::copy_from(b"n2")), 5));
        assert_eq!(taken(&mut q, &alice), Some(("change n2".into(), 5, 1)));
    }
}
