//! Serving connections: one accept loop for plain HTTP and HTTPS that bounds what any client
//! that can reach the port may hold. Each limit is a serve flag (tests shorten them):
//!
//! * at most `--max-connections` open at once; at the cap the loop stops accepting (the rest
//!   wait in the kernel's backlog, costing no CPU and no file descriptor of ours) until one closes;
//! * a TLS handshake must finish within `--handshake-timeout`;
//! * a request's header must arrive within `--header-read-timeout` (hyper's timer), and its
//!   body within `--body-read-timeout` (the router's edge, `nul_guard.rs`: without it a body
//!   sent a byte at a time, inside the idle timeout, held a connection without end);
//! * a connection with no bytes in either direction for `--idle-timeout` is shut down
//!   gracefully (a request in flight still gets its answer), then dropped after one more period.
//!
//! At start the soft `RLIMIT_NOFILE` is raised to the hard limit, and the connection cap is
//! lowered if the limit still cannot hold it plus the database's and the log's descriptors.
//! Each request carries the client's socket address (axum's `ConnectInfo`), which the web UI's
//! login throttle counts failures by. No request handling here: the router is the API's.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;

/// Descriptors kept back from the connection cap: database pool, log, listener, state files.
const RESERVED_FDS: u64 = 64;

/// Limits on what clients may hold, as serve flags.
#[derive(clap::Args, Debug, Clone)]
pub struct Limits {
    /// Most connections open at once; beyond it new ones wait in the kernel's backlog.
    #[arg(long, value_name = "N", default_value_t = 4096)]
    pub max_connections: usize,
    /// A TLS handshake not finished within this is dropped.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = humantime::parse_duration)]
    pub handshake_timeout: Duration,
    /// A request header not fully read within this ends the connection.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = humantime::parse_duration)]
    pub header_read_timeout: Duration,
    /// A request body not fully read within this (from its first byte's wait) is answered 408
    /// and its connection closed (`nul_guard.rs` reads every body).
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = humantime::parse_duration)]
    pub body_read_timeout: Duration,
    /// A connection silent in both directions for this long (keep-alive or not) is closed.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = humantime::parse_duration)]
    pub idle_timeout: Duration,
}

impl Limits {
    /// Raise the soft descriptor limit to the hard one and lower the connection cap to what
    /// the resulting limit holds.
    pub fn fit_descriptor_limit(&mut self) {
        use nix::sys::resource::{getrlimit, setrlimit, Resource};
        let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
            return;
        };
        let soft = if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
            hard
        } else {
            soft
        };
        let room = usize::try_from(soft.saturating_sub(RESERVED_FDS)).unwrap_or(usize::MAX);
        if self.max_connections > room {
            crate::log::info(
                "connection cap lowered to fit the file descriptor limit",
                &[
                    ("requested", self.max_connections.to_string().into()),
                    ("cap", room.to_string().into()),
                ],
            );
            self.max_connections = room.max(1);
        }
    }
}

/// Serve `app` on `listener` (over TLS when `tls` is given) until the process ends.
pub async fn serve(
    listener: tokio::net::TcpListener,
    tls: Option<TlsAcceptor>,
    app: axum::Router,
    limits: Limits,
) -> Result<(), String> {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    loop {
        // Wait for a free slot before accepting: at the cap nothing is accepted and nothing spins.
        let permit = slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| e.to_string())?;
        let (tcp, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: pause rather than spin.
                crate::log::error("accept", &[("error", e.to_string().into())]);
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (tls, app, limits) = (tls.clone(), app.clone(), limits.clone());
        tokio::spawn(async move {
            let _permit = permit;
            match tls {
                None => serve_connection(tcp, peer, app, &limits).await,
                Some(acceptor) => {
                    if let Ok(Ok(stream)) =
                        tokio::time::timeout(limits.handshake_timeout, acceptor.accept(tcp)).await
                    {
                        serve_connection(stream, peer, app, &limits).await;
                    }
                }
            }
        });
    }
}

/// One connection: HTTP/1.1 with the header-read timeout, shut down once idle too long; every
/// request on it carries `peer` as `ConnectInfo`.
async fn serve_connection<S>(stream: S, peer: SocketAddr, app: axum::Router, limits: &Limits)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = Activity::new();
    let io = TokioIo::new(Watched {
        inner: stream,
        activity: activity.clone(),
    });
    let app = TowerToHyperService::new(app);
    let with_peer = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        req.extensions_mut().insert(ConnectInfo(peer));
        hyper::service::Service::call(&app, req)
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .serve_connection(io, with_peer);
    tokio::pin!(conn);
    let tick = (limits.idle_timeout / 4).max(Duration::from_millis(50));
    let mut shut_at: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = conn.as_mut() => return,
            () = tokio::time::sleep(tick) => {
                match shut_at {
                    None if activity.idle_for() >= limits.idle_timeout => {
                        conn.as_mut().graceful_shutdown();
                        shut_at = Some(Instant::now());
                    }
                    Some(at) if at.elapsed() >= limits.idle_timeout => return,
                    _ => {}
                }
            }
        }
    }
}

/// When a connection last moved a byte, shared between its stream and its watchdog.
#[derive(Clone)]
struct Activity {
    start: Instant,
    last_ms: Arc<AtomicU64>,
}

impl Activity {
    fn new() -> Self {
        Activity {
            start: Instant::now(),
            last_ms: Arc::new(AtomicU64::new(0)),
        }
    }

    fn touch(&self) {
        let now = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(now, Ordering::Relaxed);
    }

    fn idle_for(&self) -> Duration {
        let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        self.start.elapsed().saturating_sub(last)
    }
}

/// A stream that notes every byte read or written in its `Activity`.
struct Watched<S> {
    inner: S,
    activity: Activity,
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
