//! `twill demo`, `twill bench` and `twill bench-services`: the commands that run the
//! network-namespace lab (`twill_lab`), built only with the `lab` feature.
//! Arguments here; what they do is the lab's, which drives this very
//! executable as its nodes.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use twill_lab::{bench, bench_services, demo};

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
    /// Systems to measure, comma-separated, in order: twill-vxlan and
    /// twill-udp (two `twill node` agents), twill-vxlan-svc (twill-vxlan
    /// with the client connecting to a ClusterIP in front of pod B),
    /// twill-vxlan-pol (twill-vxlan with both pods selected by 1,001
    /// NetworkPolicies, one allowing A -> B), kernel-vxlan (Linux VXLAN +
    /// bridge as flannel configures it; the anchor of the ratios), direct
    /// (plain routing without overlay; the limit).
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
    })
}

/// The lab's nodes and pods are run by this very executable.
fn this_program() -> Result<PathBuf> {
    std::env::current_exe().context("finding this program's path")
}
