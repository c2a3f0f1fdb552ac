//! The admin web UI of the real escrow server, over plain HTTP on both databases: sign-in and
//! its failures, the lock-out after five (per address: none from afar), session cookies and their flags, the security
//! headers, CSRF (a POST without this session's form token, or from another origin, is
//! refused and changes nothing), a reveal without a reason refused, and hostile strings in
//! device ids, searches and reasons rendered as text, and connection limits (idle ones shed,
//! the UI and check-ins served under a flood). The browser's view is `web_ui_browser.rs`.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;

use common::escrow::*;
use common::http::device_with_escrow;
use common::ui_client::*;
use common::*;
use sha2::Digest;

const ADMIN: &str = "alice";
const PASSWORD: &str = "correct horse battery staple";
const HOSTILE: &str = "<script>alert(1)</script>' OR '1'='1";
/// The server.toml of a fleet that reveals keys without a second person (keyward before roles;
/// the two-person reveal is `web_ui_teams.rs`).
const SINGLE_PERSON: &str = "[reveal]\nrequire_approval = false\n";

fn audit(srv: &Server) -> String {
    let out = srv.cmd(&["audit"]);
    assert!(out.status.success(), "{}", stderr(&out));
    String::from_utf8(out.stdout).unwrap()
}

fn start(backend: &Backend) -> (Instance, Server) {
    let inst = Instance::prepare();
    let srv = Server::start_on(&inst, backend);
    srv.add_admin(ADMIN, PASSWORD);
    (inst, srv)
}

/// Sessions end 30 minutes after their last use and 8 hours after sign-in, whichever comes
/// first, at every instance (the times are rows): a stolen or forgotten session cookie stops
/// working. The clock is moved by moving the session's own times back.
#[test]
fn sessions_end_when_idle_or_old() {
    for backend in backends() {
        let (_inst, srv) = start(&backend);
        let mut b = Browser::new(&srv);
        let signed_in = |b: &mut Browser| b.get("/ui/devices").status == 200;
        let age = |set: &str| srv.query(&format!("UPDATE sessions SET {set}"));

        assert_eq!(b.login(ADMIN, PASSWORD).status, 303);
        // Used 29 minutes ago, signed in 7 h 59 min ago: still on, and the use is recorded.
        age("seen = seen - 29 * 60, created = created - (8 * 3600 - 60)");
        assert!(
            signed_in(&mut b),
            "{backend:?}: a session inside both limits"
        );
        let seen: i64 = srv
            .query("SELECT seen FROM sessions")
            .trim()
            .parse()
            .unwrap();
        let created: i64 = srv
            .query("SELECT created FROM sessions")
            .trim()
            .parse()
            .unwrap();
        assert!(
            seen - created > 7 * 3600,
            "{backend:?}: the use moved `seen` on"
        );
        // Past 8 hours since sign-in: over, however recently used.
        age("created = created - 120");
        let r = b.get("/ui/devices");
        assert_eq!((r.status, r.header("location")), (303, Some("/ui/login")));
        assert_eq!(srv.query("SELECT COUNT(*) FROM sessions").trim(), "0");
        // A new session left alone for 30 minutes: over too, and a form post is refused.
        assert_eq!(b.login(ADMIN, PASSWORD).status, 303);
        let token = b.get("/ui/devices").csrf();
        age("seen = seen - 30 * 60 - 1");
        let r = b.post("/ui/logout", &[("csrf", &token)]);
        assert_eq!(
            r.status, 403,
            "{backend:?}: a post in an idle-ended session"
        );
        assert!(!signed_in(&mut b), "{backend:?}");
        assert_eq!(srv.query("SELECT COUNT(*) FROM sessions").trim(), "0");
    }
}

fn assert_cookie_flags(cookie: &str) {
    for flag in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/"] {
        assert!(cookie.contains(flag), "{flag} missing: {cookie}");
    }
    assert!(cookie.starts_with("__Host-"), "{cookie}");
    assert!(!cookie.contains("Domain"), "{cookie}");
}

#[test]
fn sign_in_sessions_and_lock_out() {
    for backend in backends() {
        sign_in(&backend);
    }
}

fn sign_in(backend: &Backend) {
    let (_inst, srv) = start(backend);
    let mut b = Browser::new(&srv);

    // Pages need a session; the login page sets only its form cookie, with every flag.
    let r = b.get("/ui/devices");
    assert_eq!((r.status, r.header("location")), (303, Some("/ui/login")));
    let r = b.get("/ui/login");
    assert_eq!(r.status, 200);
    let csp = r.header("content-security-policy").unwrap();
    for part in [
        "default-src 'none'",
        "style-src 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(part), "{csp}");
    }
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(r.header("referrer-policy"), Some("no-referrer"));
    assert_eq!(r.header("cache-control"), Some("no-store"));
    assert_cookie_flags(r.set_cookies()[0]);
    assert!(!r.body.contains("<script"), "no JavaScript");

    // A wrong password, an unknown name: the same answer, both audited.
    assert_eq!(b.login(ADMIN, "not the password").status, 401);
    let r = b.login("mallory", PASSWORD);
    assert_eq!(r.status, 401);
    assert!(r.body.contains("Wrong name, password or code."));
    let trail = audit(&srv);
    assert!(trail.contains("ui-login-failed by \"alice\""), "{trail}");
    assert!(trail.contains("ui-login-failed by \"mallory\""), "{trail}");

    // Success: a session cookie with every flag; only its SHA-256 is in the database.
    let r = b.login(ADMIN, PASSWORD);
    assert_eq!((r.status, r.header("location")), (303, Some("/ui/devices")));
    let session = r
        .set_cookies()
        .into_iter()
        .find(|c| c.starts_with("__Host-keyward-session="))
        .unwrap();
    assert_cookie_flags(session);
    let id = session
        .split(';')
        .next()
        .unwrap()
        .split_once('=')
        .unwrap()
        .1;
    let digest: String = sha2::Sha256::digest(id.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let stored = srv.query("SELECT id_hash FROM sessions");
    assert_eq!(stored.trim(), digest);
    assert!(audit(&srv).contains("ui-login by \"alice\""));
    let r = b.get("/ui/devices");
    assert_eq!(r.status, 200);
    assert!(r.body.contains("Signed in as"));
    assert_eq!(r.header("cache-control"), Some("no-store"));

    // Log out: the form token is required, and then the session is gone.
    let token = r.csrf();
    assert_eq!(b.post("/ui/logout", &[("csrf", "wrong")]).status, 403);
    let r = b.post("/ui/logout", &[("csrf", &token)]);
    assert_eq!((r.status, r.header("location")), (303, Some("/ui/login")));
    assert_eq!(srv.query("SELECT COUNT(*) FROM sessions").trim(), "0");
    let mut stale = Browser::new(&srv);
    stale
        .cookies
        .insert("__Host-keyward-session".into(), id.into());
    assert_eq!(stale.get("/ui/devices").status, 303);

    // The login form is protected too: its token must match its cookie, and the origin ours.
    let token = b.get("/ui/login").csrf();
    let fields = [("csrf", "forged"), ("name", ADMIN), ("password", PASSWORD)];
    assert_eq!(b.post("/ui/login", &fields).status, 403);
    let fields = [
        ("csrf", token.as_str()),
        ("name", ADMIN),
        ("password", PASSWORD),
    ];
    let evil = Some("http://evil.example".to_owned());
    assert_eq!(b.post_from("/ui/login", &fields, evil).status, 403);

    // A second instance on the same database knows the first one's sessions...
    let mut other = Server::offline(srv.state.clone(), srv.db.clone());
    other.resume();
    let r = b.login(ADMIN, PASSWORD);
    assert_eq!(r.status, 303);
    let mut there = Browser::new(&other);
    there.cookies = b.cookies.clone();
    let r = there.get("/ui/devices");
    assert_eq!(r.status, 200);
    assert!(r.body.contains("Signed in as"));

    // ...and counts failures with it: five, on either, lock the name for 15 minutes, whatever
    // comes next.
    let mut fresh = Browser::new(&srv);
    for i in 0..5 {
        let client = if i % 2 == 0 { &mut fresh } else { &mut there };
        assert_eq!(client.login(ADMIN, "guess").status, 401);
    }
    let r = fresh.login(ADMIN, PASSWORD);
    assert_eq!(r.status, 429, "{}", r.body);
    assert!(r.body.contains("locked for 15 minutes"));
    assert!(!r
        .set_cookies()
        .iter()
        .any(|c| c.starts_with("__Host-keyward-session=")));
    assert_eq!(fresh.get("/ui/devices").status, 303);
    assert_eq!(
        srv.query("SELECT COUNT(*) FROM login_failures WHERE name = 'alice'")
            .trim(),
        "5"
    );
    assert!(audit(&srv).contains("ui-login-locked by \"alice\""));
    // Another admin is not locked out by alice's failures.
    srv.add_admin("bob", "another long passphrase");
    assert_eq!(
        Browser::new(&srv)
            .login("bob", "another long passphrase")
            .status,
        303
    );
}

/// Issue 14, item 9: failures from one address cannot lock an admin out. Five failures for a
/// name from address A lock that name at A only; the right password from address B gets in
/// (after a delay of a second at most); twenty failures from one address over any names lock
/// that address, and only it.
#[test]
fn an_admin_cannot_be_locked_out_from_another_address() {
    for backend in backends() {
        let (_inst, srv) = start(&backend);
        srv.add_admin("bob", "another long passphrase");
        let mut attacker = Browser::from(&srv, "127.0.0.2");
        for _ in 0..5 {
            assert_eq!(attacker.login(ADMIN, "guess").status, 401);
        }
        let r = attacker.login(ADMIN, PASSWORD);
        assert_eq!(
            r.status, 429,
            "{backend:?}: the attacker's address is not locked"
        );
        assert!(r.body.contains("locked for 15 minutes"), "{}", r.body);

        // The admin, elsewhere: in at once, or after the delay the server names.
        let mut admin = Browser::from(&srv, "127.0.0.1");
        let started = std::time::Instant::now();
        let mut r = admin.login(ADMIN, PASSWORD);
        while r.status == 429 && started.elapsed() < std::time::Duration::from_secs(5) {
            let wait: u64 = r.header("retry-after").unwrap().parse().unwrap();
            assert!(wait <= 2, "{backend:?}: told to wait {wait} s: {}", r.body);
            std::thread::sleep(std::time::Duration::from_secs(wait));
            r = admin.login(ADMIN, PASSWORD);
        }
        assert_eq!(
            r.status, 303,
            "{backend:?}: locked out from afar: {}",
            r.body
        );
        assert_eq!(admin.get("/ui/devices").status, 200);
        // The attacker's failures stay counted against the attacker.
        assert_eq!(attacker.login(ADMIN, PASSWORD).status, 429);
        assert_eq!(
            srv.query("SELECT COUNT(*) FROM login_failures WHERE source = '127.0.0.2'")
                .trim(),
            "5"
        );
        let trail = audit(&srv);
        assert!(
            trail.contains("(from 127.0.0.2)") && trail.contains("(from 127.0.0.1)"),
            "{trail}"
        );

        // One address trying many names: locked for every name, there only.
        let mut sprayer = Browser::from(&srv, "127.0.0.3");
        for i in 0..20 {
            assert_eq!(sprayer.login(&format!("user{i}"), "guess").status, 401);
        }
        let r = sprayer.login("bob", "another long passphrase");
        assert_eq!(r.status, 429, "{backend:?}: {}", r.body);
        assert!(r.body.contains("from your address"), "{}", r.body);
        let mut bob = Browser::from(&srv, "127.0.0.4");
        assert_eq!(bob.login("bob", "another long passphrase").status, 303);
    }
}

#[test]
fn forms_need_the_session_token_and_a_reason() {
    for backend in backends() {
        csrf_and_reasons(&backend);
    }
}

fn csrf_and_reasons(backend: &Backend) {
    let (_inst, mut srv) = start(backend);
    srv.reconfigure(SINGLE_PERSON);
    let secret = "ABCDE-12345-FGHIJ-67890";
    let (device, escrow) = device_with_escrow(&srv, secret);
    let mut b = Browser::new(&srv);
    assert_eq!(b.login(ADMIN, PASSWORD).status, 303);
    let page = b.get(&format!("/ui/devices/{device}"));
    assert_eq!(page.status, 200);
    assert!(
        page.body.contains(&escrow) && page.body.contains("escrow verified"),
        "{}",
        page.body
    );
    let token = page.csrf();
    let reveal = format!("/ui/devices/{device}/reveal");
    let reason = "ticket 7: locked out";
    let not_revealed = |srv: &Server| {
        assert!(!audit(srv).contains("key-show"), "{}", audit(srv));
        assert_eq!(
            srv.query("SELECT rotate_after_use FROM escrows").trim(),
            "0"
        );
    };

    // No token, a wrong one, another origin, no origin at all: 403, nothing revealed.
    let no_token = [("volume", "data"), ("reason", reason)];
    let r = b.post(&reveal, &no_token);
    assert_eq!(r.status, 403);
    assert!(!r.body.contains(secret));
    for wrong in ["", "x", &token[..token.len() - 1]] {
        let r = b.post(
            &reveal,
            &[("csrf", wrong), ("volume", "data"), ("reason", reason)],
        );
        assert_eq!(r.status, 403, "token {wrong:?}");
    }
    let fields = [
        ("csrf", token.as_str()),
        ("volume", "data"),
        ("reason", reason),
    ];
    let r = b.post_from(&reveal, &fields, Some("http://evil.example".into()));
    assert_eq!(r.status, 403);
    assert_eq!(b.post_from(&reveal, &fields, None).status, 403);
    // Without a session, the token alone is worth nothing.
    let mut anonymous = Browser::new(&srv);
    assert_eq!(anonymous.post(&reveal, &fields).status, 403);
    not_revealed(&srv);

    // A reason is required.
    for empty in ["", "   "] {
        let r = b.post(
            &reveal,
            &[("csrf", &token), ("volume", "data"), ("reason", empty)],
        );
        assert_eq!(r.status, 400);
        assert!(r.body.contains("a reason is required"), "{}", r.body);
    }
    let r = b.post(&reveal, &[("csrf", &token), ("volume", "data")]);
    assert_eq!(r.status, 400);
    not_revealed(&srv);

    // The real thing: shown once, never cached, audited, flagged for rotation.
    let r = b.post(&reveal, &fields);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(shown_key(&r.body), secret);
    assert!(
        r.body.contains("the device reported this key"),
        "{}",
        r.body
    );
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let trail = audit(&srv);
    assert!(trail.contains("key-show by \"web:alice\""), "{trail}");
    assert!(trail.contains(reason), "{trail}");
    assert_eq!(
        srv.query("SELECT rotate_after_use FROM escrows").trim(),
        "1"
    );
    let list = b.get("/ui/devices");
    assert!(list.body.contains("rotation requested"), "{}", list.body);
}

/// Issue 14: a device revoked with `keyward-server device revoke` is shown as revoked in the
/// list (last: nothing is left to do for it) and on its page, with when and by whom; its
/// escrowed keys stay listed.
#[test]
fn a_revoked_device_is_shown_as_revoked() {
    for backend in backends() {
        let (_inst, srv) = start(&backend);
        let (device, escrow) = device_with_escrow(&srv, "ABCDE-12345");
        let (other, _) = device_with_escrow(&srv, "FGHIJ-67890");
        let mut b = Browser::new(&srv);
        assert_eq!(b.login(ADMIN, PASSWORD).status, 303);
        let badge = ">revoked</span>";
        assert!(!b.get("/ui/devices").body.contains(badge));
        let out = srv.cmd(&["device", "revoke", &device, "--reason", "stolen"]);
        assert!(out.status.success(), "{}", stderr(&out));
        let list = b.get("/ui/devices").body;
        assert_eq!(list.matches(badge).count(), 1, "{backend:?}: {list}");
        assert!(
            list.find(&other).unwrap() < list.find(&format!(">{device}<")).unwrap(),
            "a revoked device is listed last"
        );
        let page = b.get(&format!("/ui/devices/{device}")).body;
        assert!(
            page.contains(badge) && page.contains("<dt>Revoked</dt>"),
            "{page}"
        );
        assert!(page.contains(&escrow), "its escrows stay listed");
    }
}

#[test]
fn hostile_strings_are_shown_as_text() {
    for backend in backends() {
        hostile(&backend);
    }
}

fn hostile(backend: &Backend) {
    let (_inst, mut srv) = start(backend);
    srv.reconfigure(SINGLE_PERSON);
    let (device, _) = device_with_escrow(&srv, "KEY-1");
    let sql_id = HOSTILE.replace('\'', "''");
    srv.query(&format!(
        "INSERT INTO devices (id, key, created) VALUES ('{sql_id}', 'x', '2020-01-01T00:00:00.000000000Z')"
    ));
    let mut b = Browser::new(&srv);
    assert_eq!(b.login(ADMIN, PASSWORD).status, 303);
    let escaped = "&lt;script&gt;alert(1)&lt;/script&gt;";

    // The list: the hostile id as text, linked by its percent-encoded form.
    let r = b.get("/ui/devices");
    assert!(!r.body.contains("<script>"), "{}", r.body);
    assert!(r.body.contains(escaped), "{}", r.body);
    assert!(r.body.contains("never checked in"));
    assert!(r
        .body
        .contains("/ui/devices/%3Cscript%3Ealert%281%29%3C%2Fscript%3E%27%20OR%20%271%27%3D%271"));

    // Its page, by that link.
    let r = b.get("/ui/devices/%3Cscript%3Ealert%281%29%3C%2Fscript%3E%27%20OR%20%271%27%3D%271");
    assert_eq!(r.status, 200);
    assert!(!r.body.contains("<script>") && r.body.contains(escaped));

    // Searches: echoed as text; SQL and LIKE syntax match literally.
    let r = b.get(&format!("/ui/devices?{}", form(&[("q", "<script>")])));
    assert!(
        !r.body.contains("<script>") && r.body.contains("value=\"&lt;script&gt;\""),
        "{}",
        r.body
    );
    assert!(
        r.body.contains(escaped) && !r.body.contains(&device),
        "only the hostile device"
    );
    for q in ["' OR 1=1 --", "%", "_", "\" onfocus=\"x"] {
        let r = b.get(&format!("/ui/devices?{}", form(&[("q", q)])));
        assert_eq!(r.status, 200);
        assert!(
            r.body.contains("No device id contains that."),
            "{q}: {}",
            r.body
        );
        assert!(!r.body.contains("\" onfocus=\"x"), "attribute escaped");
    }
    let r = b.get(&format!("/ui/devices?{}", form(&[("q", "' OR '1'='1")])));
    assert!(r.body.contains(escaped) && !r.body.contains(&device));

    // A reason full of markup and SQL: audited as given, shown as text, nothing dropped.
    let token = r.csrf();
    let reason = "<img src=x onerror=alert(1)>'; DROP TABLE audit; --";
    let fields = [
        ("csrf", token.as_str()),
        ("volume", "data"),
        ("reason", reason),
    ];
    let r = b.post(&format!("/ui/devices/{device}/reveal"), &fields);
    assert_eq!(r.status, 200, "{}", r.body);
    let r = b.get("/ui/audit");
    assert_eq!(r.status, 200);
    assert!(!r.body.contains("<img"), "{}", r.body);
    assert!(
        r.body
            .contains("&lt;img src=x onerror=alert(1)&gt;'; DROP TABLE audit; --"),
        "{}",
        r.body
    );
    assert!(audit(&srv).contains("DROP TABLE audit"));

    // A device id that is not there, and a volume name that cannot be one.
    assert_eq!(b.get("/ui/devices/dev-missing").status, 404);
    let fields = [
        ("csrf", token.as_str()),
        ("volume", "../x"),
        ("reason", "r"),
    ];
    assert_eq!(
        b.post(&format!("/ui/devices/{device}/reveal"), &fields)
            .status,
        400
    );

    // A NUL anywhere (PostgreSQL refuses one in text): a 400, never a 500, on every database.
    assert_eq!(
        b.get(&format!("/ui/devices?{}", form(&[("q", "a\0b")])))
            .status,
        400
    );
    assert_eq!(b.get("/ui/devices/dev-%00").status, 400);
    let fields = [
        ("csrf", token.as_str()),
        ("volume", "data"),
        ("reason", "why\0"),
    ];
    let r = b.post(&format!("/ui/devices/{device}/request"), &fields);
    assert_eq!(r.status, 400, "{}", r.body);
    let mut stranger = Browser::new(&srv);
    assert_eq!(stranger.login("ad\0min", PASSWORD).status, 400);
    assert_eq!(
        stranger.login(ADMIN, PASSWORD).status,
        303,
        "nothing locked"
    );
}

/// Descriptors the serving process holds open.
/// The TCP connections to its listening port the server process holds open (accepted ones:
/// its database connections and files are not counted, so a pool that grows meanwhile does
/// not look like a broken cap).
fn held_connections(srv: &Server) -> usize {
    let port: u16 = srv.addr.rsplit(':').next().unwrap().parse().unwrap();
    let local = format!(":{port:04X}");
    let mut inodes = std::collections::HashSet::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        for line in std::fs::read_to_string(table)
            .unwrap_or_default()
            .lines()
            .skip(1)
        {
            let f: Vec<&str> = line.split_whitespace().collect();
            // local address, state 01 (ESTABLISHED), inode
            if f.len() > 9 && f[1].ends_with(&local) && f[3] == "01" {
                inodes.insert(format!("socket:[{}]", f[9]));
            }
        }
    }
    std::fs::read_dir(format!("/proc/{}/fd", srv.pid().unwrap()))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|l| inodes.contains(&l.to_string_lossy().into_owned()))
        .count()
}

/// Until `deadline`, wait for the server to close `conn`: true if it did.
fn closed_by_server(conn: &mut TcpStream, deadline: std::time::Instant) -> bool {
    let left = deadline.saturating_duration_since(std::time::Instant::now());
    conn.set_read_timeout(Some(left.max(std::time::Duration::from_millis(10))))
        .unwrap();
    let mut buf = [0u8; 512];
    loop {
        match conn.read(&mut buf) {
            Ok(0) => return true,
            // Whatever the server says to a stalled header, then the close.
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

/// Issue 14, item 1: a thousand idle connections from anyone who can reach the port neither
/// starve a device's check-in nor the web UI, and each is closed once idle past the timeout;
/// with a connection cap the server holds no more than the cap, whatever is thrown at it.
#[test]
fn idle_connections_neither_starve_the_server_nor_outlive_the_timeout() {
    use std::time::{Duration, Instant};
    let (_inst, mut srv) = start(&Backend::Sqlite);
    srv.serve_args = ["--idle-timeout", "10s", "--header-read-timeout", "10s"]
        .map(String::from)
        .to_vec();
    srv.stop();
    srv.resume();

    let opened = Instant::now();
    let mut idle: Vec<TcpStream> = (0..1000)
        .map(|_| TcpStream::connect(&srv.addr).unwrap())
        .collect();
    // Half stall in the middle of a request header, half never send a byte.
    for conn in idle.iter_mut().step_by(2) {
        conn.write_all(b"GET /ui/login HTTP/1.1\r\nHost: x\r\n")
            .unwrap();
    }
    device_with_escrow(&srv, "served while a thousand connections sit idle");
    let r = Browser::new(&srv).get("/ui/login");
    assert_eq!(r.status, 200, "{}", r.body);
    // All of them were still open while the device and the browser were served.
    let open = idle
        .iter()
        .filter(|c| {
            c.set_nonblocking(true).unwrap();
            let open = matches!(c.peek(&mut [0u8; 1]), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock);
            c.set_nonblocking(false).unwrap();
            open
        })
        .count();
    assert_eq!(open, 1000, "served only once idle connections were gone");

    let deadline = opened + Duration::from_secs(30);
    let still_open = idle
        .iter_mut()
        .map(|c| closed_by_server(c, deadline))
        .filter(|closed| !closed)
        .count();
    assert_eq!(
        still_open, 0,
        "idle connections the server kept past the timeout"
    );
    drop(idle);

    // A cap of 50: the server accepts no more than that, the rest wait in the backlog.
    srv.serve_args = ["--max-connections", "50", "--idle-timeout", "5s"]
        .map(String::from)
        .to_vec();
    srv.stop();
    srv.resume();
    let idle: Vec<TcpStream> = (0..300)
        .map(|_| TcpStream::connect(&srv.addr).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let held = held_connections(&srv);
    assert!(held > 0, "the server accepted none of them");
    assert!(
        held <= 50,
        "the server holds {held} connections over a cap of 50"
    );
    drop(idle);
    // Once the flood is gone (the queued ones end as soon as they are read), service resumes.
    std::thread::sleep(Duration::from_secs(6));
    device_with_escrow(&srv, "served after the flood");
}
