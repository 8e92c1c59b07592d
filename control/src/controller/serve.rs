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

use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

/// How many connections, and how long to wait for a request's head.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Connections served at once; more wait to be accepted.
    pub max_connections: usize,
    /// How long a connection may take to send a request's head (from its
    /// first byte, or from the end of the previous request while idle).
    pub header_timeout: Duration,
}

/// Serves `app` on `listener` until `stop` turns true; then calls
/// `stopping` (which must end long-lived responses), lets every connection
/// finish its request in flight, and returns. Dropping (aborting) the
/// future aborts every connection.
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    mut stop: watch::Receiver<bool>,
    stopping: impl FnOnce(),
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
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
        conns.spawn(async move {
            let mut builder = http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout);
            let mut conn = pin!(builder.serve_connection(TokioIo::new(tcp), svc));
            tokio::select! {
                r = conn.as_mut() => log_end(r),
                () = stopped(&mut stop) => {
                    conn.as_mut().graceful_shutdown();
                    log_end(conn.await);
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
