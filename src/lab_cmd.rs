//! `twill demo`, `twill bench` and `twill bench-services`: the commands that run the
//! network-namespace lab (`twill_lab`), built only with the `lab` feature.
//! Arguments here; what they do is the lab's, which drives this very
//! executable as its nodes.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use twill_lab::{bench, bench_services, demo};

/// Arguments of `twill soak`.
#[derive(Debug, clap::Args)]
pub struct SoakArgs {
    /// How long to run, in minutes.
    #[arg(long, default_value_t = 10.0)]
    minutes: f64,
    /// Seconds between two kills (SIGKILL) of node B.
    #[arg(long, default_value_t = 60)]
    kill_every_secs: u64,
    /// iperf3's rate between the long-lived pods (`-b`).
    #[arg(long, default_value = "300M")]
    iperf_rate: String,
}

/// Arguments of `twill demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Tunnel backend.
    #[arg(long, default_value = "vxlan", value_parser = ["vxlan", "udp"])]
    backend: String,
    /// Bytes per TCP transfer.
    #[arg(long, default_value_t = 200_000_000)]
    bytes: usize,
}

/// Arguments of `twill bench`.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Systems to measure, comma-separated, in order: twill-vxlan,
    /// twill-udp and twill-host-gw (two `twill node` agents; host-gw routes
    /// by the host, no tunnel), twill-vxlan-svc (twill-vxlan
    /// with the client connecting to a ClusterIP in front of pod B),
    /// twill-vxlan-pol (twill-vxlan with both pods selected by 1,001
    /// NetworkPolicies, one allowing A -> B), kernel-vxlan (Linux VXLAN +
    /// bridge as flannel configures it; the anchor of the ratios), floor
    /// (the least a userspace overlay can do: per node, one thread sends
    /// each frame of the pod's TAP whole in one UDP send, another writes
    /// what it receives to the TAP; no switching, not VXLAN: the bound of
    /// twill's design), direct (plain routing without overlay; the limit).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = bench::System::ALL_NAMES,
        value_parser = clap::builder::PossibleValuesParser::new(bench::System::ALL.map(bench::System::name))
    )]
    systems: Vec<String>,
    /// Seconds per iperf3 test (three per system).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=3600))]
    duration: u64,
    /// Directory for results.json and results.png (created if missing).
    #[arg(long, default_value = "./bench-results")]
    out: PathBuf,
    /// An extra argument for every `twill node` (repeat it), e.g.
    /// `--node-arg=--busy-poll-us --node-arg=200`.
    #[arg(long = "node-arg", allow_hyphen_values = true)]
    node_args: Vec<String>,
    /// Scrape node A's metrics every this many milliseconds while each twill
    /// system is measured (the nodes run with `--metrics-addr`): what
    /// metrics cost. A Prometheus scrapes every 15,000 or so.
    #[arg(long, value_parser = clap::value_parser!(u64).range(10..=3_600_000))]
    scrape_every_ms: Option<u64>,
    /// Run `twill capture` on node A while each twill system is measured,
    /// writing to /dev/null: `pod` (pod A's port) or `tunnel`. What a
    /// capture costs.
    #[arg(long, value_parser = ["pod", "tunnel"])]
    capture: Option<String>,
}

/// Arguments of `twill bench-services`.
#[derive(Debug, clap::Args)]
pub struct BenchServicesArgs {
    /// Services to write (N); measured at 100, 1,000, 10,000 … below N, and N.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=60_000))]
    services: u64,
    /// Endpoints per Service (M).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=1000))]
    endpoints: u64,
    /// Services per manifest file (each file a `kind: List` of Services and
    /// their EndpointSlices).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=60_000))]
    per_file: u64,
    /// Probes (one more Service each, timed to its first answered datagram)
    /// per step.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=100))]
    probes: u64,
    /// Also write the figures as JSON to this file.
    #[arg(long)]
    out: Option<PathBuf>,
    /// An extra argument for `twill node` (repeat it).
    #[arg(long = "node-arg", allow_hyphen_values = true)]
    node_args: Vec<String>,
}

/// Runs `twill bench-services`.
pub fn bench_services(args: BenchServicesArgs) -> Result<()> {
    bench_services::run(bench_services::Options {
        services: args.services as usize,
        endpoints: args.endpoints as usize,
        per_file: args.per_file as usize,
        probes: args.probes as usize,
        twill_bin: this_program()?,
        node_args: args.node_args,
        out: args.out,
    })
}

/// Runs `twill demo`.
pub fn demo(args: DemoArgs) -> Result<()> {
    demo::run(demo::DemoOptions {
        backend: args.backend,
        twill_bin: this_program()?,
        transfer_bytes: args.bytes,
    })
}

/// Runs `twill soak`: prints the samples, then the report; fails when
/// the verdict does.
pub fn soak(args: SoakArgs) -> Result<()> {
    let opts = twill_lab::soak::SoakOptions {
        twill_bin: this_program()?,
        duration: Duration::from_secs_f64(args.minutes.max(0.1) * 60.0),
        kill_every: Duration::from_secs(args.kill_every_secs.max(5)),
        iperf_rate: args.iperf_rate,
    };
    let r = twill_lab::soak::run(&opts)?;
    let first = r.samples.get(6).or(r.samples.first());
    let last = r.samples.last();
    println!(
        "\n{:.1} min: {} pod cycles ({} failed, mostly while B was down), {} kills of node B, \
         iperf3 runs {} ok / {} failed",
        args.minutes,
        r.cycles_ok + r.cycles_failed,
        r.cycles_failed,
        r.kills,
        r.iperf_ok,
        r.iperf_failed
    );
    if let (Some(f), Some(l)) = (first, last) {
        println!(
            "node A from {:.0} s to the end: RSS {} -> {} KiB, fds {} -> {}, threads {} -> {}",
            f.0, f.1.rss_kib, l.1.rss_kib, f.1.fds, l.1.fds, f.1.threads, l.1.threads
        );
    }
    println!(
        "attachments left: A {}, B {}; B reaped {} vanished pods; log lines A {}, B {}",
        r.pods_left.0, r.pods_left.1, r.vanished_b, r.log_lines.0, r.log_lines.1
    );
    for (node, top) in [("A", &r.top_messages.0), ("B", &r.top_messages.1)] {
        println!("node {node}'s most frequent log messages:");
        for (msg, n) in top {
            println!("  {n:>7}  {msg}");
        }
    }
    let failures = r.failures(args.minutes);
    if failures.is_empty() {
        println!("verdict: flat");
        Ok(())
    } else {
        anyhow::bail!("verdict: {}", failures.join("; "))
    }
}

/// Runs `twill bench`.
pub fn bench(args: BenchArgs) -> Result<()> {
    let systems = args
        .systems
        .iter()
        .map(|s| bench::System::from_name(s))
        .collect::<Result<Vec<_>>>()?;
    bench::run(bench::BenchOptions {
        systems,
        duration: Duration::from_secs(args.duration),
        out: args.out,
        twill_bin: this_program()?,
        node_args: args.node_args,
        observe: bench::observe::Observe {
            scrape_every: args.scrape_every_ms.map(Duration::from_millis),
            capture: args
                .capture
                .as_deref()
                .map(bench::observe::CaptureTarget::from_name)
                .transpose()?,
        },
    })
}

/// The lab's nodes and pods are run by this very executable.
fn this_program() -> Result<PathBuf> {
    std::env::current_exe().context("finding this program's path")
}
