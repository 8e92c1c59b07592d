//! `twill controller`: the embedded controller as a command, a thin wrapper
//! around `control::controller` (arguments, files, signals).

use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use control::controller::{Controller, ControllerConfig};
use control::{ConfigError, NetConf, ServerTls};

/// Arguments of `twill controller`.
#[derive(Debug, clap::Args)]
pub struct ControllerArgs {
    /// Address to listen on, e.g. 0.0.0.0:7070 (port 0 picks a free port).
    /// Once ready, the address is printed on stdout as
    /// `listening on ADDR` (the log line "controller listening" gives the
    /// URL with its scheme, http or https).
    #[arg(long)]
    listen: SocketAddr,
    /// The state file: leases, revision and network config. Created on
    /// first start (its directory must exist); written after every change.
    #[arg(long)]
    state_file: PathBuf,
    /// File holding the bearer token that every client must send
    /// (surrounding whitespace is ignored).
    #[arg(long)]
    token_file: PathBuf,
    /// flannel net-conf.json. Required on first start; later starts use the
    /// stored config and refuse a different one (see --replace-net-conf).
    #[arg(long)]
    net_conf: Option<PathBuf>,
    /// Replace the stored network config with --net-conf; leases outside
    /// the new SubnetMin..SubnetMax are removed.
    #[arg(long, requires = "net_conf")]
    replace_net_conf: bool,
    /// Seconds between heartbeat lines on watch streams.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=3600))]
    heartbeat_secs: u64,
    /// Connections served at once, watch streams included: a node holds
    /// two watches and a connection for its requests, so the default serves
    /// some 2,700 nodes. Further connections wait to be accepted until one
    /// closes; a client that does not send its request head within 10 s is
    /// cut off, so idle ones do not hold a place long.
    #[arg(long, default_value_t = 8192, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    max_connections: u32,
    /// Serve HTTPS with this certificate chain (PEM, leaf first); needs
    /// --tls-private-key-file. Without both, plain HTTP. The bearer token
    /// is required either way. The certificate is read once, at start.
    #[arg(long, requires = "tls_private_key_file")]
    tls_cert_file: Option<PathBuf>,
    /// The private key of --tls-cert-file (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long, requires = "tls_cert_file")]
    tls_private_key_file: Option<PathBuf>,
    /// Require every client to present a certificate signed by this CA
    /// (PEM); nodes name theirs with certfile/keyfile in the node config's
    /// controller block. Needs --tls-cert-file. Without it, no client
    /// certificate is asked for.
    #[arg(long, requires = "tls_cert_file")]
    client_ca_file: Option<PathBuf>,
    /// Serve Prometheus metrics (`/metrics`, OpenMetrics text) and the
    /// probes `/healthz` and `/readyz` on this address, in plain HTTP and
    /// without the token: bind it where only the scraper and the kubelet
    /// reach it, e.g. 127.0.0.1:9476. Once ready, printed on stdout as
    /// `metrics on ADDR`. Default: not served.
    #[arg(long)]
    metrics_addr: Option<SocketAddr>,
}

/// Runs the controller until SIGTERM or SIGINT.
pub fn run(args: ControllerArgs) -> Result<()> {
    let token = read_token(&args.token_file)?;
    let net_conf = args.net_conf.as_deref().map(load_net_conf).transpose()?;
    // Many watchers need many sockets.
    twill::rlimit::raise_fd_limit();
    let mut cfg = ControllerConfig::new(args.listen, args.state_file, token);
    cfg.net_conf = net_conf;
    cfg.replace_net_conf = args.replace_net_conf;
    cfg.heartbeat = Duration::from_secs(args.heartbeat_secs);
    cfg.metrics = args.metrics_addr;
    cfg.max_connections = usize::try_from(args.max_connections).context("--max-connections")?;
    cfg.tls = match (args.tls_cert_file, args.tls_private_key_file) {
        (Some(cert_file), Some(key_file)) => Some(ServerTls {
            cert_file,
            key_file,
            client_ca_file: args.client_ca_file,
        }),
        (None, None) => None,
        // clap's `requires` refuses these already.
        _ => bail!("--tls-cert-file and --tls-private-key-file go together: give both or neither"),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async {
        let controller = Controller::start(cfg).await?;
        // Not println!: a closed stdout must not stop the controller.
        let mut out = std::io::stdout();
        let _ =
            writeln!(out, "listening on {}", controller.local_addr()).and_then(|()| out.flush());
        if let Some(m) = controller.metrics_addr() {
            let _ = writeln!(out, "metrics on {m}").and_then(|()| out.flush());
        }
        let sig = stop_signal().await?;
        tracing::info!(signal = sig, "stopping");
        controller.shutdown().await?;
        Ok(())
    })
}

fn read_token(path: &Path) -> Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the token file {}", path.display()))?;
    let token = text.trim();
    if token.is_empty() {
        bail!("the token file {} is empty", path.display());
    }
    if let Ok(meta) = std::fs::metadata(path) {
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(file = %path.display(), "the token file is readable by other users");
        }
    }
    Ok(token.to_owned())
}

fn load_net_conf(path: &Path) -> Result<NetConf> {
    let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Io {
        path: path.into(),
        error,
    })?;
    Ok(NetConf::parse(&text).map_err(|e| e.in_file(path))?)
}

/// Waits for SIGTERM or SIGINT; returns its name.
async fn stop_signal() -> Result<&'static str> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("listening for SIGINT")?;
    Ok(tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    })
}
