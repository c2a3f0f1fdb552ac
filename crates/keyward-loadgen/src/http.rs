//! A minimal HTTP/1.1 client for one keep-alive connection to a loopback server: a request
//! written in one go, the answer read by `Content-Length`, the connection reused until it
//! fails. The load generator shares the CPUs with the server it measures, so it does no more
//! than that (no resolver, no redirects, no TLS, no chunked bodies: keyward-server answers
//! every API request with a length). Plain `http://` on loopback only; `main` checks the URL.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// Longest answer body read.
const MAX_BODY: usize = 64 * 1024;
/// Longest answer head (status line and headers).
const MAX_HEAD: usize = 16 * 1024;
/// How long a read or write may block.
const TIMEOUT: Duration = Duration::from_secs(30);

/// One connection, opened on first use and again after a failure.
#[derive(Debug)]
pub struct Conn {
    authority: String,
    stream: Option<BufReader<TcpStream>>,
    request: Vec<u8>,
}

fn invalid(what: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned())
}

impl Conn {
    /// A client for `base` (`http://host:port`, as `main::loopback_base` returns it).
    pub fn new(base: &str) -> Self {
        Conn {
            authority: base.trim_start_matches("http://").to_owned(),
            stream: None,
            request: Vec::with_capacity(2048),
        }
    }

    /// Send a request with a JSON body; the answer's status and body.
    pub fn send(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> std::io::Result<(u16, Vec<u8>)> {
        let answer = self.exchange(method, path, headers, body);
        if answer.is_err() {
            // Whatever state the connection is in, it is not to be trusted again.
            self.stream = None;
        }
        answer
    }

    fn exchange(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> std::io::Result<(u16, Vec<u8>)> {
        if self.stream.is_none() {
            let s = TcpStream::connect(&self.authority)?;
            s.set_nodelay(true)?;
            s.set_read_timeout(Some(TIMEOUT))?;
            s.set_write_timeout(Some(TIMEOUT))?;
            self.stream = Some(BufReader::with_capacity(8192, s));
        }
        let stream = self
            .stream
            .as_mut()
            .ok_or_else(|| invalid("no connection"))?;
        let r = &mut self.request;
        r.clear();
        write!(
            r,
            "{method} {path} HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n",
            self.authority,
            body.len()
        )?;
        for (name, value) in headers {
            write!(r, "{name}: {value}\r\n")?;
        }
        r.extend_from_slice(b"\r\n");
        r.extend_from_slice(body);
        stream.get_mut().write_all(r)?;

        let mut line = String::new();
        let mut head = 0;
        stream.read_line(&mut line)?;
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| invalid("no status line"))?;
        let mut length = None;
        let mut close = false;
        loop {
            line.clear();
            let n = stream.read_line(&mut line)?;
            head += n;
            if n == 0 || head > MAX_HEAD {
                return Err(invalid("truncated or oversized head"));
            }
            let h = line.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((name, value)) = h.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse::<usize>().ok();
                } else if name.eq_ignore_ascii_case("connection") {
                    close = value.trim().eq_ignore_ascii_case("close");
                } else if name.eq_ignore_ascii_case("transfer-encoding") {
                    return Err(invalid("chunked answers are not read"));
                }
            }
        }
        let length = length.ok_or_else(|| invalid("no content-length"))?;
        if length > MAX_BODY {
            return Err(invalid("answer too long"));
        }
        let mut answer = vec![0u8; length];
        stream.read_exact(&mut answer)?;
        if close {
            self.stream = None;
        }
        Ok((status, answer))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::net::TcpListener;

    /// A one-connection server that answers each request with `answers` in turn.
    fn serve(answers: Vec<&'static str>) -> String {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            let (s, _) = l.accept().unwrap();
            let mut r = BufReader::new(s);
            for a in answers {
                let mut len = 0;
                loop {
                    let mut line = String::new();
                    r.read_line(&mut line).unwrap();
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap();
                    }
                    if line == "\r\n" {
                        break;
                    }
                }
                let mut body = vec![0; len];
                r.read_exact(&mut body).unwrap();
                r.get_mut().write_all(a.as_bytes()).unwrap();
            }
        });
        format!("http://{addr}")
    }

    #[test]
    fn answers_are_read_by_length_on_one_connection() {
        let base = serve(vec![
            "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}",
            "HTTP/1.1 401 Unauthorized\r\nContent-Length: 5\r\n\r\nnope!",
        ]);
        let mut c = Conn::new(&base);
        assert_eq!(
            c.send("PUT", "/a", &[("x-a", "1")], b"{}").unwrap(),
            (200, b"{}".to_vec())
        );
        assert_eq!(
            c.send("POST", "/b", &[], b"").unwrap(),
            (401, b"nope!".to_vec())
        );
    }

    #[test]
    fn chunked_or_lengthless_answers_are_errors() {
        let base = serve(vec![
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n",
        ]);
        assert!(Conn::new(&base).send("GET", "/", &[], b"").is_err());
        let base = serve(vec!["HTTP/1.1 200 OK\r\n\r\n"]);
        assert!(Conn::new(&base).send("GET", "/", &[], b"").is_err());
    }
}
