//! Teams in the web UI (issue 20), over plain HTTP on both databases: each role sees only what
//! it may do and is refused (403, nothing changed) what it may not — a viewer never sees a key
//! or a form that leads to one; the help desk requests a key with a reason and follows it under
//! "My requests"; approvers work the queue and never decide their own request; the requester
//! reveals once; a role change applies at the next request; the single-person reveal is
//! refused while approval is required. The browser's view is `web_ui_browser.rs`.
#![allow(clippy::unwrap_used)]

mod common;

use common::escrow::*;
use common::http::device_with_escrow;
use common::ui_client::*;
use common::*;

const SECRET: &str = "ABCDE-12345-FGHIJ-67890";
const REASON: &str = "ticket 815: laptop locked out after a BIOS update";

fn signed_in(srv: &Server, name: &str, role: &str) -> Browser {
    let password = format!("{name}'s long passphrase");
    srv.add_account(name, &password, role);
    let mut b = Browser::new(srv);
    assert_eq!(b.login(name, &password).status, 303, "{name}");
    b
}

/// The number of audit records with this action.
fn count(srv: &Server, action: &str) -> usize {
    srv.query(&format!(
        "SELECT COUNT(*) FROM audit WHERE action = '{action}'"
    ))
    .trim()
    .parse()
    .unwrap()
}

/// The id of `who`'s one pending reveal request.
fn pending_of(srv: &Server, who: &str) -> String {
    let ids = srv.query(&format!(
        "SELECT id FROM reveal_requests WHERE requester = 'web:{who}' AND state = 'pending'"
    ));
    assert_eq!(ids.lines().count(), 1, "{ids}");
    ids.trim().to_owned()
}

#[test]
fn each_role_sees_and_does_only_what_it_may() {
    for backend in backends() {
        roles(&backend);
    }
}

fn roles(backend: &Backend) {
    let inst = Instance::prepare();
    let srv = Server::start_on(&inst, backend);
    let (device, _) = device_with_escrow(&srv, SECRET);
    let mut viewer = signed_in(&srv, "victor", "viewer");
    let mut helpdesk = signed_in(&srv, "hannah", "helpdesk");
    let mut approver = signed_in(&srv, "arthur", "approver");
    let mut admin = signed_in(&srv, "olivia", "admin");
    let page = format!("/ui/devices/{device}");
    let request_url = format!("{page}/request");

    // A viewer: devices, the device's escrow state, the audit log; no form that leads to a key.
    let r = viewer.get(&page);
    assert_eq!(r.status, 200);
    assert!(r.body.contains("escrow verified"), "{}", r.body);
    assert!(r.body.contains("does not show recovery keys"), "{}", r.body);
    assert!(!r.body.contains("/request\"") && !r.body.contains("/reveal\""));
    assert!(!r.body.contains(">Requests<") && !r.body.contains(">My requests<"));
    let token = r.csrf();
    assert_eq!(viewer.get("/ui/audit").status, 200);
    for path in ["/ui/requests", "/ui/requests/mine", "/ui/accounts"] {
        assert_eq!(viewer.get(path).status, 403, "viewer {path}");
    }
    let fields = [
        ("csrf", token.as_str()),
        ("volume", "data"),
        ("reason", REASON),
    ];
    assert_eq!(viewer.post(&request_url, &fields).status, 403);
    assert_eq!(viewer.post(&format!("{page}/reveal"), &fields).status, 403);
    assert_eq!(
        srv.query("SELECT COUNT(*) FROM reveal_requests").trim(),
        "0"
    );

    // An approver has the queue, and no request form.
    let r = approver.get(&page);
    assert!(r.body.contains("does not show recovery keys") && r.body.contains("/ui/requests"));
    assert_eq!(approver.get("/ui/requests/mine").status, 403);
    let token = r.csrf();
    let fields = [
        ("csrf", token.as_str()),
        ("volume", "data"),
        ("reason", REASON),
    ];
    assert_eq!(approver.post(&request_url, &fields).status, 403);
    assert!(approver
        .get("/ui/requests")
        .body
        .contains("Nothing waiting."));

    // While approval is required, nobody reveals alone — not even an admin.
    let r = admin.get(&page);
    assert!(r.body.contains("Request key") && !r.body.contains("Show recovery key"));
    let token = r.csrf();
    let fields = [
        ("csrf", token.as_str()),
        ("volume", "data"),
        ("reason", REASON),
    ];
    assert_eq!(admin.post(&format!("{page}/reveal"), &fields).status, 403);
    assert_eq!(count(&srv, "key-show"), 0);
    assert_eq!(admin.get("/ui/accounts").status, 200);

    // The help desk requests, with a reason (none: refused).
    let r = helpdesk.get(&page);
    assert!(r.body.contains("Request key"), "{}", r.body);
    assert!(r.body.contains(">My requests<") && !r.body.contains(">Requests<"));
    assert_eq!(helpdesk.get("/ui/requests").status, 403);
    let token = r.csrf();
    let blank = [
        ("csrf", token.as_str()),
        ("volume", "data"),
        ("reason", " "),
    ];
    assert_eq!(helpdesk.post(&request_url, &blank).status, 400);
    let fields = [
        ("csrf", token.as_str()),
        ("volume", "data"),
        ("reason", REASON),
    ];
    let r = helpdesk.post(&request_url, &fields);
    assert_eq!(
        (r.status, r.header("location")),
        (303, Some("/ui/requests/mine"))
    );
    let id = pending_of(&srv, "hannah");
    let mine = helpdesk.get("/ui/requests/mine").body;
    assert!(mine.contains(&id) && mine.contains(">pending<"), "{mine}");
    assert!(!mine.contains("Reveal key"), "{mine}");
    let reveal_url = format!("/ui/requests/{id}/reveal");
    let r = helpdesk.post(&reveal_url, &[("csrf", &token)]);
    assert_eq!(r.status, 409, "{}", r.body);
    assert!(!r.body.contains(SECRET));
    // ...and may not decide it.
    let approve_url = format!("/ui/requests/{id}/approve");
    assert_eq!(helpdesk.post(&approve_url, &[("csrf", &token)]).status, 403);

    // The approver's queue shows it; the form token is required; approving works once.
    let queue = approver.get("/ui/requests");
    assert!(
        queue.body.contains(&id) && queue.body.contains(REASON),
        "{}",
        queue.body
    );
    assert!(queue.body.contains("hannah"));
    let token = queue.csrf();
    assert_eq!(
        approver.post(&approve_url, &[("csrf", "forged")]).status,
        403
    );
    let r = approver.post(&approve_url, &[("csrf", &token)]);
    assert_eq!(
        (r.status, r.header("location")),
        (303, Some("/ui/requests"))
    );
    assert_eq!(approver.post(&approve_url, &[("csrf", &token)]).status, 409);
    // Nobody else reveals it, the approver included.
    let r = approver.post(&reveal_url, &[("csrf", &token)]);
    assert_eq!(r.status, 403);
    let admin_token = admin.get("/ui/devices").csrf();
    assert_eq!(
        admin.post(&reveal_url, &[("csrf", &admin_token)]).status,
        403
    );

    // The requester reveals it once.
    let mine = helpdesk.get("/ui/requests/mine");
    assert!(mine.body.contains("Reveal key") && mine.body.contains(">approved<"));
    let token = mine.csrf();
    let r = helpdesk.post(&reveal_url, &[("csrf", &token)]);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(shown_key(&r.body), SECRET);
    assert!(r.body.contains(&id));
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let r = helpdesk.post(&reveal_url, &[("csrf", &token)]);
    assert_eq!(r.status, 409);
    assert!(!r.body.contains(SECRET));
    assert_eq!(count(&srv, "key-show"), 1);
    assert_eq!(
        srv.query("SELECT rotate_after_use FROM escrows").trim(),
        "1"
    );
    let trail = viewer.get("/ui/audit").body;
    for (action, who) in [
        ("reveal-request", "web:hannah"),
        ("reveal-approve", "web:arthur"),
        ("key-show", "web:hannah"),
    ] {
        assert!(
            trail.contains(action) && trail.contains(who),
            "{action}: {trail}"
        );
    }
    assert!(!trail.contains(SECRET));

    // An admin never approves their own request; another approver denies it; it reveals nothing.
    let token = admin.get(&page).csrf();
    let fields = [
        ("csrf", token.as_str()),
        ("volume", "data"),
        ("reason", REASON),
    ];
    assert_eq!(admin.post(&request_url, &fields).status, 303);
    let own = pending_of(&srv, "olivia");
    assert!(
        !admin.get("/ui/requests").body.contains(&own),
        "own request in own queue"
    );
    let r = admin.post(&format!("/ui/requests/{own}/approve"), &[("csrf", &token)]);
    assert_eq!(r.status, 403, "{}", r.body);
    let token = approver.get("/ui/requests").csrf();
    let deny = approver.post(&format!("/ui/requests/{own}/deny"), &[("csrf", &token)]);
    assert_eq!(deny.status, 303);
    let token = admin.get("/ui/requests/mine").csrf();
    let r = admin.post(&format!("/ui/requests/{own}/reveal"), &[("csrf", &token)]);
    assert_eq!(r.status, 409);
    assert_eq!(count(&srv, "reveal-deny"), 1);
    assert_eq!(count(&srv, "key-show"), 1);

    // A role change applies at the next request: an approved request of someone demoted to
    // viewer reveals nothing.
    let token = helpdesk.get(&page).csrf();
    let fields = [
        ("csrf", token.as_str()),
        ("volume", "data"),
        ("reason", REASON),
    ];
    assert_eq!(helpdesk.post(&request_url, &fields).status, 303);
    let later = pending_of(&srv, "hannah");
    let token = approver.get("/ui/requests").csrf();
    let approve = approver.post(
        &format!("/ui/requests/{later}/approve"),
        &[("csrf", &token)],
    );
    assert_eq!(approve.status, 303);
    let out = srv.cmd(&["admin", "set-role", "hannah", "viewer"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let token = helpdesk.get("/ui/devices").csrf();
    let r = helpdesk.post(&format!("/ui/requests/{later}/reveal"), &[("csrf", &token)]);
    assert_eq!(r.status, 403);
    assert_eq!(helpdesk.get("/ui/requests/mine").status, 403);
    assert_eq!(count(&srv, "key-show"), 1);
}

/// One approval reveals the key once, however many instances are asked at the same moment:
/// the request is spent, conditionally, in the transaction that audits the reveal. Four
/// reveals of one approved request, from the requester's session, reach two instances at once
/// (their last bytes held until then, so each reads the request while it is still approved):
/// one shows the key, the others are refused, and one `key-show` is audited.
#[test]
fn one_approval_reveals_once_across_instances() {
    for backend in backends() {
        reveal_once_across_instances(&backend);
    }
}

fn reveal_once_across_instances(backend: &Backend) {
    let inst = Instance::prepare();
    let srv = Server::start_on(&inst, backend);
    let (device, _) = device_with_escrow(&srv, SECRET);
    let mut helpdesk = signed_in(&srv, "hannah", "helpdesk");
    let mut approver = signed_in(&srv, "arthur", "approver");
    let page = format!("/ui/devices/{device}");
    let token = helpdesk.get(&page).csrf();
    let fields = [
        ("csrf", token.as_str()),
        ("volume", "data"),
        ("reason", REASON),
    ];
    assert_eq!(
        helpdesk.post(&format!("{page}/request"), &fields).status,
        303
    );
    let id = pending_of(&srv, "hannah");
    let token = approver.get("/ui/requests").csrf();
    let approve = approver.post(&format!("/ui/requests/{id}/approve"), &[("csrf", &token)]);
    assert_eq!(approve.status, 303, "{}", approve.body);

    let mut other = Server::offline(srv.state.clone(), srv.db.clone());
    other.resume();
    const ATTEMPTS: usize = 4;
    let together = std::sync::Arc::new(std::sync::Barrier::new(ATTEMPTS));
    let reveal = format!("/ui/requests/{id}/reveal");
    let attempts: Vec<_> = (0..ATTEMPTS)
        .map(|i| {
            let on = if i % 2 == 0 { &srv } else { &other };
            let mut b = Browser::new(on);
            b.cookies = helpdesk.cookies.clone();
            let token = b.get("/ui/requests/mine").csrf();
            let (reveal, together) = (reveal.clone(), together.clone());
            std::thread::spawn(move || {
                let origin = Some(format!("http://{}", b.addr));
                let r = b.post_held(&reveal, &[("csrf", &token)], origin, Some(&together));
                let shown = r
                    .body
                    .contains(r#"id="recovery-key""#)
                    .then(|| shown_key(&r.body));
                (r.status, shown.as_deref() == Some(SECRET))
            })
        })
        .collect();
    let answers: Vec<(u16, bool)> = attempts.into_iter().map(|t| t.join().unwrap()).collect();
    assert_eq!(
        answers.iter().filter(|(_, key)| *key).count(),
        1,
        "{backend:?}: the key shown by how many: {answers:?}"
    );
    assert!(
        answers
            .iter()
            .all(|a| *a == (200, true) || *a == (409, false)),
        "{backend:?}: {answers:?}"
    );
    assert_eq!(count(&srv, "key-show"), 1, "{backend:?}");
}
