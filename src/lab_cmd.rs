//! `twill demo` and `twill bench`: the commands that run the
//! network-namespace lab (`twill_lab`), built only with the `lab` feature.
//! Arguments here; what they do is the lab's, which drives this very
//! executable as its nodes.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use twill_lab::{bench, demo};

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
    /// kernel-vxlan (Linux VXLAN + bridge as flannel configures it; the
    /// anchor of the ratios), direct (plain routing without overlay; the
    /// limit).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "twill-vxlan,twill-vxlan-svc,twill-udp,kernel-vxlan,direct",
        value_parser = ["twill-vxlan", "twill-vxlan-svc", "twill-udp", "kernel-vxlan", "direct"]
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
