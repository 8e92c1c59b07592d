//! A real etcd for tests: one `etcd` process per test on loopback, with
//! free client and peer ports and its own data directory, killed (and the
//! directory removed) when the guard drops, also when the test panics.
//!
//! Without an `etcd` binary the tests print SKIPPED and pass, unless
//! `TWILL_REQUIRE_ROOT=1` or `CI` is set: then they fail.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use control::lease::{LeaseAttrs, LeaseBackend};
use control::{EtcdOptions, EtcdStore};

pub mod certs;

/// A running etcd (or a stopped one that can be started again on the same
/// ports and data).
pub struct EtcdServer {
    child: Option<Child>,
    dir: tempfile::TempDir,
    client_port: u16,
    peer_port: u16,
    /// With TLS on its client port: the files, and a plain HTTP port that
    /// serves `/health` (etcd's `--listen-metrics-urls`).
    tls: Option<(Tls, u16)>,
}

/// The files of an etcd serving TLS with `--client-cert-auth`.
#[derive(Clone)]
pub struct Tls {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The CA client certificates must be signed by.
    pub client_ca: PathBuf,
}

/// Whether a missing etcd must fail the test instead of skipping it.
fn required() -> bool {
    std::env::var("TWILL_REQUIRE_ROOT").is_ok_and(|v| v == "1")
        || std::env::var("CI").is_ok_and(|v| !v.is_empty())
}

/// Whether `bin arg` runs and succeeds.
fn installed(bin: &str, arg: &str) -> bool {
    Command::new(bin)
        .arg(arg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl EtcdServer {
    /// Starts etcd, or returns `None` (after printing SKIPPED) when it is
    /// not installed and not required.
    pub fn start(test: &str) -> Option<EtcdServer> {
        EtcdServer::start_with(test, None)
    }

    /// Starts etcd with TLS on its client URL and `--client-cert-auth`,
    /// or returns `None` as [`EtcdServer::start`] does.
    pub fn start_tls(test: &str, tls: Tls) -> Option<EtcdServer> {
        EtcdServer::start_with(test, Some(tls))
    }

    fn start_with(test: &str, tls: Option<Tls>) -> Option<EtcdServer> {
        if !installed("etcd", "--version") || !installed("etcdctl", "version") {
            assert!(
                !required(),
                "{test}: etcd/etcdctl are not installed (Debian: etcd-server, etcd-client) \
                 and TWILL_REQUIRE_ROOT=1 or CI is set"
            );
            eprintln!("SKIPPED {test}: etcd/etcdctl are not installed");
            return None;
        }
        // A port picked here can be taken by someone else before etcd binds
        // it: try a few times.
        let mut last_log = String::new();
        for _ in 0..5 {
            let mut s = EtcdServer {
                child: None,
                dir: tempfile::Builder::new()
                    .prefix(&format!("twill-etcd-{test}-"))
                    .tempdir()
                    .unwrap(),
                client_port: free_port(),
                peer_port: free_port(),
                tls: tls.clone().map(|t| (t, free_port())),
            };
            let metrics = s.tls.as_ref().map(|t| t.1);
            if s.client_port == s.peer_port
                || metrics.is_some_and(|m| m == s.client_port || m == s.peer_port)
            {
                continue;
            }
            match s.spawn() {
                Ok(()) => return Some(s),
                Err(log) => last_log = log,
            }
        }
        panic!("{test}: etcd did not start:\n{last_log}");
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("etcd.log")
    }

    /// The client URL.
    pub fn endpoint(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.client_port)
    }

    fn spawn(&mut self) -> Result<(), String> {
        let client = self.endpoint();
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .unwrap();
        let mut cmd = Command::new("etcd");
        if let Some((tls, metrics)) = &self.tls {
            cmd.arg(format!("--cert-file={}", tls.cert.display()))
                .arg(format!("--key-file={}", tls.key.display()))
                .arg(format!("--trusted-ca-file={}", tls.client_ca.display()))
                .arg("--client-cert-auth")
                .arg(format!("--listen-metrics-urls=http://127.0.0.1:{metrics}"));
        }
        let child = cmd
            .arg("--name=default")
            .arg(format!("--data-dir={}", self.data_dir().display()))
            .arg(format!("--listen-client-urls={client}"))
            .arg(format!("--advertise-client-urls={client}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=default={peer}"))
            .arg("--logger=zap")
            .arg("--log-outputs=stderr")
            .arg("--log-level=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    self.child = None;
                    return Err(format!("etcd exited with {status}:\n{}", self.log()));
                }
            }
            if self.healthy() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.stop();
        Err(format!("etcd not healthy within 20 s:\n{}", self.log()))
    }

    /// etcd's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Whether etcd answers `GET /health` with `"health":"true"`.
    fn healthy(&self) -> bool {
        let port = self.tls.as_ref().map_or(self.client_port, |t| t.1);
        let Ok(mut s) = TcpStream::connect((Ipv4Addr::LOCALHOST, port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        let req = "GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
        if s.write_all(req.as_bytes()).is_err() {
            return false;
        }
        let mut body = String::new();
        let _ = s.read_to_string(&mut body);
        body.contains("\"health\":\"true\"")
    }

    /// Kills etcd (its data stays).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts etcd again on the same ports and data directory.
    pub fn restart(&mut self) {
        self.stop();
        if let Err(log) = self.spawn() {
            panic!("etcd did not restart:\n{log}");
        }
    }

    fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().expect("etcd is running").id();
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(pid.to_string())
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{sig} {pid}");
    }

    /// Freezes etcd (SIGSTOP): its sockets stay open, nothing answers.
    pub fn pause(&self) {
        self.signal("STOP");
    }

    /// Thaws etcd (SIGCONT).
    pub fn resume(&self) {
        self.signal("CONT");
    }

    /// Runs the real `etcdctl` (API v3) against this etcd.
    pub fn etcdctl_output(&self, args: &[&str]) -> Output {
        Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", self.endpoint()))
            .args(args)
            .output()
            .unwrap()
    }

    /// Runs `etcdctl` and returns its standard output; panics on failure.
    pub fn etcdctl(&self, args: &[&str]) -> String {
        let out = self.etcdctl_output(args);
        assert!(
            out.status.success(),
            "etcdctl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// A store on this etcd with the default prefix and quick timeouts.
    pub async fn store(&self) -> EtcdStore {
        self.store_with(test_options()).await
    }

    /// A store on this etcd with `opts`.
    pub async fn store_with(&self, opts: EtcdOptions) -> EtcdStore {
        EtcdStore::connect(&[self.endpoint()], "", opts)
            .await
            .unwrap()
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_ref() {
            // A frozen etcd dies of SIGKILL all the same; thaw it anyway.
            let _ = Command::new("kill")
                .arg("-CONT")
                .arg(c.id().to_string())
                .status();
        }
        self.stop();
    }
}

/// Options with timeouts short enough for tests.
pub fn test_options() -> EtcdOptions {
    EtcdOptions {
        request_timeout: Duration::from_secs(2),
        connect_timeout: Duration::from_secs(1),
        watch_progress_interval: Duration::from_millis(700),
        watch_progress_timeout: Duration::from_millis(800),
        ..EtcdOptions::default()
    }
}

/// A vxlan lease value for node `n` (public IP 192.168.100.n).
pub fn vxlan(n: u8) -> LeaseAttrs {
    LeaseAttrs {
        public_ip: Ipv4Addr::new(192, 168, 100, n),
        backend: LeaseBackend::Vxlan {
            vni: Some(1),
            vtep_mac: format!("aa:bb:cc:dd:ee:{n:02x}").parse().unwrap(),
        },
    }
}

/// The next event of a watch (leases or objects), within a few seconds.
pub async fn next<E>(
    w: &mut futures::stream::BoxStream<'static, Result<E, control::StoreError>>,
) -> E {
    use futures::StreamExt;
    tokio::time::timeout(Duration::from_secs(5), w.next())
        .await
        .expect("an event within 5 s")
        .expect("the stream goes on")
        .expect("an event, not an error")
}

/// Nothing arrives on `w` for `d`.
pub async fn quiet<E: std::fmt::Debug>(
    w: &mut futures::stream::BoxStream<'static, Result<E, control::StoreError>>,
    d: Duration,
) {
    use futures::StreamExt;
    if let Ok(item) = tokio::time::timeout(d, w.next()).await {
        panic!("expected nothing, got {item:?}");
    }
}
