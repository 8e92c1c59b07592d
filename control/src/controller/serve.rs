//! The controller's accept loop: HTTP/1 connections served by hyper, at
//! most [`Limits::max_connections`] at a time, each with a header-read
//! timeout. (The body timeout is the request-body extractor's, in `http`.)
//!
//! `axum::serve` sets neither: it gives hyper no timer, so a client that
//! trickles a header line (slowloris) or sends nothing at all holds its
//! connection and its task forever, and it accepts without bound.
//!
//! At the cap the loop stops accepting until a connection ends: new
//! connections wait in the kernel's listen backlog (and beyond it, in the
//! client's SYN retries) rather than being closed, so that a node's request
//! is late, not failed. A connection holding a slot without sending a whole
//! request head is closed after the header timeout, which also bounds how
//! long an idle keep-alive connection holds one. Watch streams hold theirs
//! while they run: the cap bounds watchers too.
//!
//! With TLS, the handshake runs in the connection's task, after it took its
//! slot and within the header timeout: a client that never finishes it
//! holds a slot no longer than one that never sends a request head, and
//! does not hold up the accept loop. A client that speaks plain HTTP to
//! it gets a 400 saying so (as Go's net/http answers), not a bare close.

use std::pin::pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use encap::lograte::LogRate;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

/// How many connections, and how long to wait for a request's head.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Connections served at once; more wait to be accepted.
    pub max_connections: usize,
    /// How long a connection may take to send a request's head (from its
    /// first byte, or from the end of the previous request while idle).
    pub header_timeout: Duration,
}

/// Serves `app` on `listener` (over TLS when `tls` is given) until `stop`
/// turns true; then calls `stopping` (which must end long-lived
/// responses), lets every connection finish its request in flight, and
/// returns. Dropping (aborting) the future aborts every connection.
pub(crate) async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    app: Router,
    limits: Limits,
    mut stop: watch::Receiver<bool>,
    stopping: impl FnOnce(),
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    // Refused handshakes (a wrong certificate, a port scanner) are logged
    // once a minute with a count, however many there are.
    let refusals = Arc::new(Mutex::new(LogRate::new(Duration::from_secs(60))));
    let mut conns = JoinSet::new();
    let mut full = false;
    loop {
        let room = slots.available_permits() > 0;
        if !room && !full {
            tracing::warn!(
                max = limits.max_connections,
                "connection cap reached: new connections wait until one closes"
            );
        }
        full = !room;
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            () = stopped(&mut stop) => break,
            Some(_) = conns.join_next() => continue,
        };
        let tcp = tokio::select! {
            r = listener.accept() => match r {
                Ok((tcp, _)) => tcp,
                Err(e) => {
                    accept_error(e).await;
                    continue;
                }
            },
            () = stopped(&mut stop) => break,
        };
        // Small lines (events, heartbeats) go out at once.
        let _ = tcp.set_nodelay(true);
        let svc = TowerToHyperService::new(app.clone());
        let mut stop = stop.clone();
        let tls = tls.clone();
        let refusals = refusals.clone();
        conns.spawn(async move {
            match tls {
                None => serve_conn(tcp, svc, limits, &mut stop).await,
                Some(tls) => {
                    let handshake = tokio::select! {
                        r = tokio::time::timeout(limits.header_timeout, handshake(tcp, tls, &refusals)) => r,
                        () = stopped(&mut stop) => Ok(None),
                    };
                    match handshake {
                        Ok(Some(stream)) => serve_conn(stream, svc, limits, &mut stop).await,
                        Ok(None) => {}
                        Err(_) => {
                            tracing::debug!("TLS handshake not done within the header timeout")
                        }
                    }
                }
            }
            drop(permit);
        });
        // Reap what ended, so that the set does not grow.
        while conns.try_join_next().is_some() {}
    }
    stopping();
    while conns.join_next().await.is_some() {}
}

/// Serves HTTP/1 on one connection until it ends, or until `stop`, when
/// the request in flight is let finish.
async fn serve_conn<S>(
    io: S,
    svc: TowerToHyperService<Router>,
    limits: Limits,
    stop: &mut watch::Receiver<bool>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let mut conn = pin!(builder.serve_connection(TokioIo::new(io), svc));
    tokio::select! {
        r = conn.as_mut() => log_end(r),
        () = stopped(stop) => {
            conn.as_mut().graceful_shutdown();
            log_end(conn.await);
        }
    }
}

/// How long a refused TLS client's last bytes are read (and dropped) before
/// its connection is closed.
const DRAIN_AFTER_REFUSAL: Duration = Duration::from_secs(1);

/// The first byte of a TLS connection: a handshake record.
const TLS_HANDSHAKE: u8 = 0x16;

/// The TLS handshake on `tcp`; `None` when it failed (logged), or when the
/// client spoke plain HTTP (answered with a 400 that says so).
async fn handshake(
    mut tcp: TcpStream,
    tls: TlsAcceptor,
    refusals: &Mutex<LogRate>,
) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
    let mut first = [0u8; 1];
    match tcp.peek(&mut first).await {
        Ok(1) if first[0] != TLS_HANDSHAKE && first[0].is_ascii_uppercase() => {
            // A request line (`GET /…`): tell the client why it fails.
            let _ = tcp
                .write_all(
                    b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\n\
                      Connection: close\r\nContent-Length: 48\r\n\r\n\
                      Client sent an HTTP request to an HTTPS server.\n",
                )
                .await;
            let _ = tcp.shutdown().await;
            return None;
        }
        Ok(_) => {}
        Err(e) => {
            tracing::debug!(error = %e, "connection ended before the TLS handshake");
            return None;
        }
    }
    match tls.accept(tcp).into_fallible().await {
        Ok(s) => Some(s),
        Err((e, mut tcp)) => {
            let report = refusals.lock().ok().and_then(|mut r| r.hit(Instant::now()));
            if let Some(r) = report {
                let peer = tcp.peer_addr().map(|a| a.to_string()).unwrap_or_default();
                tracing::warn!(%peer, error = %e, suppressed = r.count,
                    "TLS handshake refused (reported once a minute)");
            }
            // rustls sent its alert. Close gently: a FIN after it, and
            // what the client sent meanwhile (a request right after its
            // side of a TLS 1.3 handshake) read and dropped, for a close
            // with unread data is a reset, which can reach the client
            // before the alert and hide why it was refused.
            let _ = tcp.shutdown().await;
            let mut sink = [0u8; 4096];
            let drain = async { while matches!(tcp.read(&mut sink).await, Ok(n) if n > 0) {} };
            let _ = tokio::time::timeout(DRAIN_AFTER_REFUSAL, drain).await;
            None
        }
    }
}

/// Returns once `stop` is true (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

fn log_end(r: Result<(), hyper::Error>) {
    if let Err(e) = r {
        tracing::debug!(error = %e, "connection ended");
    }
}

/// After an accept error: go on at once when it was the one connection's
/// (reset before accepted); else (out of file descriptors) wait a second,
/// as `axum::serve` does.
async fn accept_error(e: std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        e.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %e, "accept failed; retrying in 1 s");
    tokio::time::sleep(Duration::from_secs(1)).await;
}
