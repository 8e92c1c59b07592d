//! The metrics and health endpoint that `twill node` and `twill controller`
//! serve on their `--metrics-addr`: plain HTTP/1, no token (it is meant for a
//! node-local scraper and the kubelet's probes; bind it where only they
//! reach it).
//!
//! - `GET /metrics`: the exposition in OpenMetrics text (what
//!   `prometheus-client` encodes; Prometheus reads it).
//! - `GET /healthz`: the process and its workers are alive (a liveness probe).
//! - `GET /readyz`: the process can do its job (a readiness probe).
//!
//! The health answers are Kubernetes' own format (`/readyz?verbose`): one
//! line per check, `[+]name ok` or `[-]name failed: why`, then the verdict;
//! 200 when every check passed, else 503.
//!
//! The endpoint runs on the controller's accept loop (a connection cap and
//! a header timeout), so a scraper that misbehaves cannot take more than
//! [`MAX_CONNECTIONS`] connections. The [`Source`]'s methods run on tokio's
//! blocking pool: they may wait for the dataplane's workers.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio::sync::watch;

use crate::controller::serve::{self, Limits};

/// Connections the endpoint serves at once.
pub const MAX_CONNECTIONS: usize = 16;
/// How long a connection may take to send a request's head.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// The exposition's media type (OpenMetrics 1.0, as `prometheus-client`
/// encodes it).
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// One named check of a health answer and its outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// What is checked (`dataplane`, `lease`, …).
    pub name: &'static str,
    /// `Err(why)` when it failed.
    pub result: Result<(), String>,
}

impl Check {
    /// A check named `name` with its outcome.
    pub fn new(name: &'static str, result: Result<(), String>) -> Check {
        Check { name, result }
    }
}

/// Every check is passed.
pub fn all_ok(checks: &[Check]) -> bool {
    checks.iter().all(|c| c.result.is_ok())
}

/// What the endpoint reports: the process that serves it.
pub trait Source: Send + Sync + 'static {
    /// Every metric now, in OpenMetrics text (ending in `# EOF`).
    fn metrics(&self) -> Result<String, String>;
    /// The liveness checks.
    fn healthz(&self) -> Vec<Check>;
    /// The readiness checks.
    fn readyz(&self) -> Vec<Check>;
}

/// The answer to a health probe: Kubernetes' verbose format.
pub fn health_text(probe: &str, checks: &[Check]) -> String {
    let mut out = String::new();
    for c in checks {
        match &c.result {
            Ok(()) => out.push_str(&format!("[+]{} ok\n", c.name)),
            Err(why) => out.push_str(&format!("[-]{} failed: {why}\n", c.name)),
        }
    }
    if all_ok(checks) {
        out.push_str(&format!("{probe} check passed\n"));
    } else {
        out.push_str(&format!("{probe} check failed\n"));
    }
    out
}

/// The endpoint's routes over `source`.
pub fn router(source: Arc<dyn Source>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(source)
}

async fn blocking<T: Send + 'static>(
    source: Arc<dyn Source>,
    f: impl FnOnce(&dyn Source) -> T + Send + 'static,
) -> Option<T> {
    tokio::task::spawn_blocking(move || f(source.as_ref()))
        .await
        .ok()
}

async fn metrics(State(source): State<Arc<dyn Source>>) -> Response {
    match blocking(source, Source::metrics).await {
        Some(Ok(text)) => ([(header::CONTENT_TYPE, OPENMETRICS)], text).into_response(),
        Some(Err(e)) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
        None => (StatusCode::INTERNAL_SERVER_ERROR, "metrics panicked\n").into_response(),
    }
}

async fn healthz(State(source): State<Arc<dyn Source>>) -> Response {
    probe("healthz", blocking(source, Source::healthz).await)
}

async fn readyz(State(source): State<Arc<dyn Source>>) -> Response {
    probe("readyz", blocking(source, Source::readyz).await)
}

fn probe(name: &str, checks: Option<Vec<Check>>) -> Response {
    let checks = checks.unwrap_or_else(|| vec![Check::new("probe", Err("panicked".into()))]);
    let code = if all_ok(&checks) {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        code,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        health_text(name, &checks),
    )
        .into_response()
}

/// Serves the endpoint on `listener` until `stop` turns true.
pub async fn serve(
    listener: tokio::net::TcpListener,
    source: Arc<dyn Source>,
    stop: watch::Receiver<bool>,
) {
    let limits = Limits {
        max_connections: MAX_CONNECTIONS,
        header_timeout: HEADER_TIMEOUT,
    };
    serve::serve(listener, None, router(source), limits, stop, || {}).await;
}

/// Binds `addr` now (so that a taken port fails the start, naming it) and
/// serves the endpoint from a thread of its own until the process ends.
/// For a process without a tokio runtime of its own (`twill node`).
pub fn serve_in_thread(
    addr: SocketAddr,
    source: Arc<dyn Source>,
) -> std::io::Result<(SocketAddr, std::thread::JoinHandle<()>)> {
    let std_listener = std::net::TcpListener::bind(addr).map_err(|e| {
        std::io::Error::new(e.kind(), format!("binding the metrics address {addr}: {e}"))
    })?;
    std_listener.set_nonblocking(true)?;
    let bound = std_listener.local_addr()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let h = std::thread::Builder::new()
        .name("twill-metrics".into())
        .spawn(move || {
            rt.block_on(async move {
                let listener = match tokio::net::TcpListener::from_std(std_listener) {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::error!(error = %e, "metrics endpoint not served");
                        return;
                    }
                };
                // Never stopped: the endpoint lives as long as the process.
                let (_keep, stop) = watch::channel(false);
                serve(listener, source, stop).await;
            });
        })?;
    Ok((bound, h))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_text_is_kubernetes_verbose_format() {
        let ok = [Check::new("dataplane", Ok(())), Check::new("lease", Ok(()))];
        assert_eq!(
            health_text("readyz", &ok),
            "[+]dataplane ok\n[+]lease ok\nreadyz check passed\n"
        );
        let bad = [
            Check::new("dataplane", Ok(())),
            Check::new("lease", Err("expired 3 s ago".into())),
        ];
        assert!(!all_ok(&bad));
        assert_eq!(
            health_text("readyz", &bad),
            "[+]dataplane ok\n[-]lease failed: expired 3 s ago\nreadyz check failed\n"
        );
    }
}
