//! A cookie-keeping HTTP client for the admin web UI, posting forms the way a browser on the
//! UI's pages does (`web_ui.rs`, `web_ui_teams.rs`, `web_ui_totp.rs`), from any loopback address.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Barrier;

use super::escrow::Server;

/// A response: status, headers (names lower-case), body.
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn set_cookies(&self) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k == "set-cookie")
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The first form token on the page.
    pub fn csrf(&self) -> String {
        let at = self.body.find(r#"name="csrf" value=""#).unwrap() + 19;
        self.body[at..].split('"').next().unwrap().to_owned()
    }
}

/// The text of the page's `#recovery-key` element, tags removed.
pub fn shown_key(body: &str) -> String {
    let start = body.find(r#"id="recovery-key""#).unwrap();
    let element = &body[start..start + body[start..].find("</output>").unwrap()];
    let mut text = String::new();
    let mut in_tag = true;
    for c in element.chars() {
        match c {
            '<' => in_tag = true,
            '>' => in_tag = false,
            c if !in_tag => text.push(c),
            _ => {}
        }
    }
    text
}

/// A connection to `addr` from the loopback address `source` (e.g. 127.0.0.2: another client
/// as the server sees it).
pub fn connect_from(source: &str, addr: &str) -> TcpStream {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .unwrap();
    let stream = rt.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
        socket.connect(addr.parse().unwrap()).await.unwrap()
    });
    let stream = stream.into_std().unwrap();
    stream.set_nonblocking(false).unwrap();
    stream
}

pub fn http(addr: &str, method: &str, path: &str, headers: &[(&str, String)], body: &str) -> Resp {
    http_from(None, addr, method, path, headers, body)
}

pub fn http_from(
    source: Option<&str>,
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: &str,
) -> Resp {
    http_held(source, addr, method, path, headers, body, None)
}

/// [`http_from`], and with `hold` all but the request's last byte is sent before every holder
/// of the barrier is waiting, the last byte after: requests the server can act on only at the
/// same moment (races between instances, `web_ui_totp.rs`).
pub fn http_held(
    source: Option<&str>,
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: &str,
    hold: Option<&Barrier>,
) -> Resp {
    let mut s = match source {
        Some(source) => connect_from(source, addr),
        None => TcpStream::connect(addr).unwrap(),
    };
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    let (most, last) = req.as_bytes().split_at(req.len() - 1);
    s.write_all(most).unwrap();
    if let Some(hold) = hold {
        hold.wait();
    }
    s.write_all(last).unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let (head, body) = resp.split_once("\r\n\r\n").unwrap();
    let mut lines = head.lines();
    let status = lines.next().unwrap().split_whitespace().nth(1).unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Resp {
        status: status.parse().unwrap(),
        headers,
        body: body.to_owned(),
    }
}

/// application/x-www-form-urlencoded (also for query strings).
pub fn form(fields: &[(&str, &str)]) -> String {
    let enc = |s: &str| -> String {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'*' => {
                    char::from(b).to_string()
                }
                b' ' => "+".into(),
                _ => format!("%{b:02X}"),
            })
            .collect()
    };
    fields
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// A cookie-keeping client that posts forms the way a browser on the UI's pages does.
pub struct Browser {
    pub addr: String,
    pub cookies: HashMap<String, String>,
    /// The loopback address it connects from (default: the system's choice, 127.0.0.1).
    pub source: Option<String>,
}

impl Browser {
    pub fn new(srv: &Server) -> Self {
        Browser {
            addr: srv.addr.clone(),
            cookies: HashMap::new(),
            source: None,
        }
    }

    /// A browser on another machine, as the server sees it.
    pub fn from(srv: &Server, source: &str) -> Self {
        Browser {
            source: Some(source.to_owned()),
            ..Browser::new(srv)
        }
    }

    pub fn send(
        &mut self,
        method: &str,
        path: &str,
        headers: Vec<(&str, String)>,
        body: &str,
    ) -> Resp {
        self.send_held(method, path, headers, body, None)
    }

    /// [`Browser::send`], its last byte held until every holder of `hold` waits ([`http_held`]).
    pub fn send_held(
        &mut self,
        method: &str,
        path: &str,
        mut headers: Vec<(&str, String)>,
        body: &str,
        hold: Option<&Barrier>,
    ) -> Resp {
        if !self.cookies.is_empty() {
            let jar: Vec<String> = self
                .cookies
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            headers.push(("Cookie", jar.join("; ")));
        }
        let r = http_held(
            self.source.as_deref(),
            &self.addr,
            method,
            path,
            &headers,
            body,
            hold,
        );
        for c in r.set_cookies() {
            let (k, v) = c.split(';').next().unwrap().split_once('=').unwrap();
            if v.is_empty() {
                self.cookies.remove(k);
            } else {
                self.cookies.insert(k.to_owned(), v.to_owned());
            }
        }
        r
    }

    pub fn get(&mut self, path: &str) -> Resp {
        self.send("GET", path, vec![], "")
    }

    /// POST with this origin, as the UI's own forms do.
    pub fn post(&mut self, path: &str, fields: &[(&str, &str)]) -> Resp {
        let origin = format!("http://{}", self.addr);
        self.post_from(path, fields, Some(origin))
    }

    pub fn post_from(
        &mut self,
        path: &str,
        fields: &[(&str, &str)],
        origin: Option<String>,
    ) -> Resp {
        self.post_held(path, fields, origin, None)
    }

    /// [`Browser::post_from`], its last byte held until every holder of `hold` waits.
    pub fn post_held(
        &mut self,
        path: &str,
        fields: &[(&str, &str)],
        origin: Option<String>,
        hold: Option<&Barrier>,
    ) -> Resp {
        let mut headers = vec![(
            "Content-Type",
            "application/x-www-form-urlencoded".to_owned(),
        )];
        if let Some(o) = origin {
            headers.push(("Origin", o));
        }
        self.send_held("POST", path, headers, &form(fields), hold)
    }

    pub fn login(&mut self, name: &str, password: &str) -> Resp {
        let token = self.get("/ui/login").csrf();
        self.post(
            "/ui/login",
            &[("csrf", &token), ("name", name), ("password", password)],
        )
    }

    /// Sign in with a TOTP code in the form's "Authentication code" field (`web_ui_totp.rs`).
    pub fn login_with_code(&mut self, name: &str, password: &str, code: &str) -> Resp {
        let token = self.get("/ui/login").csrf();
        self.post(
            "/ui/login",
            &[
                ("csrf", &token),
                ("name", name),
                ("password", password),
                ("code", code),
            ],
        )
    }
}
