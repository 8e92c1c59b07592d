//! The controller's metrics (`twill controller --metrics-addr`): what it
//! holds (leases, objects, watchers, the revision) read at each scrape, and
//! how long its requests and its state-file writes take, observed as they
//! happen.
//!
//! A request's duration is measured until its answer's head is ready; for
//! a watch that is when the stream starts, not when it ends.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};

use super::{lock, Shared};
use crate::metrics::{Check, Source};

/// A request's labels: the method, the route as declared (`/v1/leases/{key}`,
/// so that keys do not make new series; `unmatched` for none) and the
/// status code.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    route: String,
    code: u16,
}

/// A watch stream's labels.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StreamLabels {
    stream: &'static str,
}

/// Every metric of the controller, registered once.
#[derive(Debug)]
pub(crate) struct Telemetry {
    registry: Registry,
    requests: Family<RequestLabels, Histogram>,
    state_writes: Histogram,
    state_write_errors: Counter,
    leases: Gauge,
    objects: Gauge,
    revision: Gauge,
    watchers: Family<StreamLabels, Gauge>,
}

/// Request durations from 100 µs to about 6.5 s.
fn request_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 4.0, 9))
}

impl Telemetry {
    pub(crate) fn new() -> Telemetry {
        let mut registry = Registry::with_prefix("twill_controller");
        let requests = Family::<RequestLabels, Histogram>::new_with_constructor(
            request_buckets as fn() -> Histogram,
        );
        registry.register_with_unit(
            "request_duration",
            "Time to answer an API request (until the answer's head; a watch until its stream starts)",
            Unit::Seconds,
            requests.clone(),
        );
        // fsync of a small file: from 100 µs to about 6.5 s.
        let state_writes = Histogram::new(exponential_buckets(0.0001, 4.0, 9));
        registry.register_with_unit(
            "state_write_duration",
            "Time to write the state file (write, fsync, rename)",
            Unit::Seconds,
            state_writes.clone(),
        );
        let state_write_errors = Counter::default();
        registry.register(
            "state_write_errors",
            "State-file writes that failed (retried)",
            state_write_errors.clone(),
        );
        let leases = Gauge::default();
        registry.register("leases", "Subnet leases held", leases.clone());
        let objects = Gauge::default();
        registry.register("objects", "Cluster objects stored", objects.clone());
        let revision = Gauge::default();
        registry.register(
            "revision",
            "Revision of the last change (leases and objects)",
            revision.clone(),
        );
        let watchers = Family::<StreamLabels, Gauge>::default();
        registry.register(
            "watchers",
            "Watch streams open, by stream (leases: /v1/watch; objects: /v1/objects/watch)",
            watchers.clone(),
        );
        registry.register(
            "build",
            "The controller's version",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
        );
        Telemetry {
            registry,
            requests,
            state_writes,
            state_write_errors,
            leases,
            objects,
            revision,
            watchers,
        }
    }

    /// Observes one state-file write.
    pub(crate) fn state_written(&self, seconds: f64, ok: bool) {
        self.state_writes.observe(seconds);
        if !ok {
            self.state_write_errors.inc();
        }
    }

    /// Every metric now, in OpenMetrics text.
    fn encode(&self, shared: &Shared) -> Result<String, String> {
        {
            let reg = lock(&shared.registry);
            self.leases.set(gauge_value(reg.len()));
            self.objects.set(gauge_value(reg.object_count()));
            self.revision
                .set(i64::try_from(reg.revision()).unwrap_or(i64::MAX));
        }
        for (stream, n) in [
            ("leases", shared.hubs.leases.watchers()),
            ("objects", shared.hubs.objects.watchers()),
        ] {
            self.watchers
                .get_or_create(&StreamLabels { stream })
                .set(gauge_value(n));
        }
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .map_err(|e| format!("encoding the metrics: {e}"))?;
        Ok(out)
    }
}

fn gauge_value(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The middleware that observes every request's duration.
pub(crate) async fn observe(State(t): State<Arc<Telemetry>>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = req.method().as_str().to_owned();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let resp = next.run(req).await;
    t.requests
        .get_or_create(&RequestLabels {
            method,
            route,
            code: resp.status().as_u16(),
        })
        .observe(start.elapsed().as_secs_f64());
    resp
}

/// The controller as the metrics endpoint sees it.
#[derive(Debug)]
pub(crate) struct Endpoint {
    pub(crate) shared: Arc<Shared>,
    /// Turns true when the controller stops serving.
    pub(crate) stop: tokio::sync::watch::Receiver<bool>,
}

impl Source for Endpoint {
    fn metrics(&self) -> Result<String, String> {
        self.shared.telemetry.encode(&self.shared)
    }

    /// Alive: its runtime answers (this very request).
    fn healthz(&self) -> Vec<Check> {
        vec![Check::new("ping", Ok(()))]
    }

    /// Ready: the API serves, and every change is on disk (while a write
    /// fails, changes are refused with 503).
    fn readyz(&self) -> Vec<Check> {
        let serving = if *self.stop.borrow() {
            Err("the controller is stopping".into())
        } else {
            Ok(())
        };
        let durable = self.shared.persist.failure().map_or(Ok(()), Err);
        vec![
            Check::new("api", serving),
            Check::new("state-file", durable),
        ]
    }
}
