//! What may watch a twill system while `twill bench` measures it, to show
//! what watching costs: a scraper of node A's metrics endpoint (a
//! Prometheus that scrapes far more often than one would), and a
//! `twill capture` of pod A's port or of node A's tunnel written to
//! /dev/null.

use std::fs::File;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use nix::sched::CloneFlags;
use serde::Serialize;

use crate::cmd::Reaped;
use crate::{Netns, NodeProcess, Pod};

/// Where node A serves its metrics when they are scraped.
pub const METRICS_ADDR: &str = "127.0.0.1:9475";

/// What a capture during the benchmark copies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CaptureTarget {
    /// Pod A's port (`twill capture --pod`).
    Pod,
    /// Node A's tunnel (`twill capture --tunnel`).
    Tunnel,
}

impl CaptureTarget {
    /// From `pod` or `tunnel`.
    pub fn from_name(s: &str) -> Result<CaptureTarget> {
        match s {
            "pod" => Ok(CaptureTarget::Pod),
            "tunnel" => Ok(CaptureTarget::Tunnel),
            _ => anyhow::bail!("no capture target {s:?} (pod or tunnel)"),
        }
    }
}

/// What watches the twill systems while they are measured.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Observe {
    /// Scrape node A's `/metrics` this often (node A then runs with
    /// `--metrics-addr`).
    pub scrape_every: Option<Duration>,
    /// Run a capture on node A.
    pub capture: Option<CaptureTarget>,
}

impl Observe {
    /// Whether anything watches.
    pub fn any(&self) -> bool {
        self.scrape_every.is_some() || self.capture.is_some()
    }

    /// The arguments node A needs for this.
    pub fn node_args(&self) -> Vec<String> {
        match self.scrape_every {
            Some(_) => vec!["--metrics-addr".into(), METRICS_ADDR.into()],
            None => Vec::new(),
        }
    }
}

/// What watched one system's measurement.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Watched {
    /// Scrapes answered with 200.
    pub scrapes: u64,
    /// Scrapes that failed.
    pub scrape_errors: u64,
    /// The slowest scrape, in milliseconds.
    pub scrape_max_ms: f64,
    /// The capture's last words (its packets captured and dropped).
    pub capture: Option<String>,
}

/// The watchers of a running system; [`Observer::finish`] stops them.
#[derive(Debug)]
pub struct Observer {
    stop: Arc<AtomicBool>,
    scraper: Option<JoinHandle<Watched>>,
    capture: Option<Reaped>,
}

impl Observer {
    /// Starts what `observe` asks for on node A.
    pub fn start(
        observe: &Observe,
        ns_a: &Netns,
        node_a: &NodeProcess,
        pod_a: Option<&Pod>,
    ) -> Result<Observer> {
        let stop = Arc::new(AtomicBool::new(false));
        let scraper = match observe.scrape_every {
            Some(every) => Some(scraper(ns_a.path(), every, stop.clone())?),
            None => None,
        };
        let capture = match observe.capture {
            Some(target) => Some(capture(node_a, pod_a, target)?),
            None => None,
        };
        Ok(Observer {
            stop,
            scraper,
            capture,
        })
    }

    /// Stops the watchers and says what they did.
    pub fn finish(mut self) -> Watched {
        self.stop.store(true, Ordering::SeqCst);
        let mut w = self
            .scraper
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default();
        if let Some(mut c) = self.capture.take() {
            // SIGINT: the CLI ends the capture cleanly and prints its counts.
            if let Ok(pid) = i32::try_from(c.0.id()) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGINT,
                );
            }
            let _ = crate::cmd::wait_deadline(&mut c.0, Duration::from_secs(5));
            let mut err = String::new();
            if let Some(mut e) = c.0.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut e, &mut err);
            }
            w.capture = Some(err.split_whitespace().collect::<Vec<_>>().join(" "));
        }
        w
    }
}

impl Drop for Observer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.scraper.take() {
            let _ = h.join();
        }
    }
}

fn scraper(
    netns: std::path::PathBuf,
    every: Duration,
    stop: Arc<AtomicBool>,
) -> Result<JoinHandle<Watched>> {
    let addr: SocketAddr = METRICS_ADDR.parse()?;
    let ns = File::open(&netns).with_context(|| format!("opening {}", netns.display()))?;
    let h = std::thread::Builder::new()
        .name("bench-scraper".into())
        .spawn(move || {
            let mut w = Watched::default();
            if nix::sched::setns(&ns, CloneFlags::CLONE_NEWNET).is_err() {
                w.scrape_errors += 1;
                return w;
            }
            while !stop.load(Ordering::SeqCst) {
                let t = Instant::now();
                match crate::http::http_get_here(addr, "/metrics") {
                    Ok(r) if r.status == 200 && r.body.ends_with("# EOF\n") => w.scrapes += 1,
                    _ => w.scrape_errors += 1,
                }
                w.scrape_max_ms = w.scrape_max_ms.max(t.elapsed().as_secs_f64() * 1e3);
                std::thread::sleep(every.saturating_sub(t.elapsed()));
            }
            w
        })?;
    Ok(h)
}

fn capture(node_a: &NodeProcess, pod_a: Option<&Pod>, target: CaptureTarget) -> Result<Reaped> {
    let mut c = Command::new(node_a.twill_bin());
    c.arg("capture").arg("--socket").arg(node_a.socket());
    match target {
        CaptureTarget::Tunnel => {
            c.arg("--tunnel");
        }
        CaptureTarget::Pod => {
            let id = pod_a
                .and_then(Pod::info)
                .map(|i| i.id.clone())
                .context("a pod capture needs a twill pod A")?;
            c.args(["--pod", &id]);
        }
    }
    c.args(["-w", "-"])
        .stdin(Stdio::null())
        .stdout(File::create(Path::new("/dev/null"))?)
        .stderr(Stdio::piped());
    let child = c.spawn().context("starting twill capture")?;
    Ok(Reaped(child))
}
