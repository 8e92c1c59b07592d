//! `twill controller` as a real process on loopback: an acknowledged lease
//! survives `kill -9`, SIGTERM stops it cleanly, and a restart with another
//! net-conf is refused. Every process started here is killed by a guard,
//! also when a test fails.

// A test crate: helpers outside #[test] functions panic on failure too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use control::client::{ClientOptions, ControllerClient};
use control::{AcquireRequest, LeaseAttrs, LeaseBackend, LeaseStore, StoreError};

// The certificates of the control crate's TLS tests (rcgen).
#[path = "../control/tests/support/certs.rs"]
#[allow(dead_code)]
mod certs;

const TOKEN: &str = "cli-test-token";

/// A running `twill controller`, killed (SIGKILL) and reaped on drop.
struct Proc {
    child: Child,
    log: PathBuf,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits up to `limit` for the process to exit.
    fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let t = Instant::now();
        while t.elapsed() < limit {
            if let Some(s) = self.child.try_wait().unwrap() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

struct Files {
    dir: tempfile::TempDir,
}

impl Files {
    fn new() -> Files {
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, format!("{TOKEN}\n")).unwrap();
        std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::write(
            dir.path().join("net-conf.json"),
            r#"{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}"#,
        )
        .unwrap();
        std::fs::write(
            dir.path().join("other.json"),
            r#"{"Network":"10.50.0.0/16","Backend":{"Type":"vxlan"}}"#,
        )
        .unwrap();
        Files { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// Starts `twill controller` on 127.0.0.1:0 (with `net_conf` if given) and
/// returns it once it printed its address.
fn start(f: &Files, net_conf: Option<&str>, run: &str) -> (Proc, SocketAddr) {
    start_args(f, net_conf, run, &[])
}

/// [`start`] with more arguments.
fn start_args(
    f: &Files,
    net_conf: Option<&str>,
    run: &str,
    more: &[&std::ffi::OsStr],
) -> (Proc, SocketAddr) {
    let log = f.path(&format!("{run}.log"));
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_twill"));
    cmd.arg("controller")
        .args(["--listen", "127.0.0.1:0", "--heartbeat-secs", "1"])
        .arg("--state-file")
        .arg(f.path("state.json"))
        .arg("--token-file")
        .arg(f.path("token"))
        .args(more)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap());
    if let Some(n) = net_conf {
        cmd.arg("--net-conf").arg(f.path(n));
    }
    let mut p = Proc {
        child: cmd.spawn().expect("run twill controller"),
        log,
    };
    let stdout = p.child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let line = rx
        .recv_timeout(Duration::from_secs(30))
        .unwrap_or_else(|_| panic!("no address printed; log:\n{}", p.log()));
    let addr = line
        .strip_prefix("listening on ")
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("unexpected first line {line:?}; log:\n{}", p.log()));
    (p, addr)
}

fn client(addr: SocketAddr) -> ControllerClient {
    ControllerClient::new(&addr.to_string(), TOKEN).unwrap()
}

fn req() -> AcquireRequest {
    AcquireRequest {
        attrs: LeaseAttrs {
            public_ip: Ipv4Addr::new(192, 168, 100, 7),
            backend: LeaseBackend::Vxlan {
                vni: Some(1),
                vtep_mac: "02:00:00:00:00:07".parse().unwrap(),
            },
        },
        previous: None,
        ttl_secs: 3600,
    }
}

fn state_has(path: &Path, text: &str) -> bool {
    std::fs::read_to_string(path).is_ok_and(|s| s.contains(text))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_survives_kill_9_and_sigterm_stops_cleanly() {
    let f = Files::new();
    let (mut p1, addr) = start(&f, Some("net-conf.json"), "first");
    let lease = client(addr).acquire(req()).await.unwrap();
    let before = client(addr).list().await.unwrap();
    assert_eq!(before.leases, vec![lease.clone()]);

    // kill -9: no chance to write anything more.
    p1.child.kill().unwrap();
    p1.child.wait().unwrap();
    assert!(state_has(&f.path("state.json"), &lease.subnet.to_string()));

    // Restarted without --net-conf: the stored one is used.
    let (mut p2, addr) = start(&f, None, "second");
    let cl = client(addr);
    let after = cl.list().await.unwrap();
    assert_eq!(after, before, "log:\n{}", p2.log());
    assert_eq!(
        cl.acquire(req()).await.unwrap().subnet,
        lease.subnet,
        "the node gets its subnet back"
    );

    // SIGTERM: a clean stop, exit status 0.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(p2.child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = p2.wait_exit(Duration::from_secs(10));
    assert!(
        status.is_some_and(|s| s.success()),
        "{status:?}; log:\n{}",
        p2.log()
    );
    assert!(p2.log().contains("controller stopped"), "{}", p2.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_different_net_conf_is_refused_at_restart() {
    let f = Files::new();
    let (p1, addr) = start(&f, Some("net-conf.json"), "first");
    client(addr).acquire(req()).await.unwrap();
    drop(p1);
    let log = f.path("refused.log");
    let child = Command::new(env!("CARGO_BIN_EXE_twill"))
        .arg("controller")
        .args(["--listen", "127.0.0.1:0"])
        .arg("--state-file")
        .arg(f.path("state.json"))
        .arg("--token-file")
        .arg(f.path("token"))
        .arg("--net-conf")
        .arg(f.path("other.json"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    // Guarded: should it start after all, it is killed.
    let mut p = Proc { child, log };
    let status = p.wait_exit(Duration::from_secs(20));
    let err = p.log();
    assert_eq!(status.and_then(|s| s.code()), Some(1), "{err}");
    assert!(err.contains("differs from the one stored"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_flags_serve_https_with_client_certificates() {
    let f = Files::new();
    let pki = certs::Pki::new();
    let (cert, key, ca) = (
        pki.path("server.pem"),
        pki.path("server-key.pem"),
        pki.path("ca.pem"),
    );
    let flags = [
        "--tls-cert-file".as_ref(),
        cert.as_os_str(),
        "--tls-private-key-file".as_ref(),
        key.as_os_str(),
        "--client-ca-file".as_ref(),
        ca.as_os_str(),
    ];
    let (p, addr) = start_args(&f, Some("net-conf.json"), "tls", &flags);
    let url = format!("https://{addr}");
    let opts = ClientOptions::default();
    let good = ControllerClient::with_tls(&url, TOKEN, opts, &pki.client("ca.pem", Some("client")));
    good.unwrap().acquire(req()).await.unwrap();
    let no_cert = ControllerClient::with_tls(&url, TOKEN, opts, &pki.client("ca.pem", None));
    let e = no_cert.unwrap().list().await.unwrap_err();
    assert!(
        matches!(&e, StoreError::Tls(m) if m.contains("client certificate")),
        "{e}"
    );
    assert!(
        p.log().contains("https://"),
        "the log names the scheme:\n{}",
        p.log()
    );
    drop(p);

    // A key file that is not one stops the start, naming it.
    let out = Command::new(env!("CARGO_BIN_EXE_twill"))
        .arg("controller")
        .args(["--listen", "127.0.0.1:0"])
        .arg("--state-file")
        .arg(f.path("state.json"))
        .arg("--token-file")
        .arg(f.path("token"))
        .arg("--tls-cert-file")
        .arg(&cert)
        .arg("--tls-private-key-file")
        .arg(&cert)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("server.pem") && err.contains("private key"),
        "{err}"
    );
    // One of the pair alone is refused by the argument parser.
    let out = Command::new(env!("CARGO_BIN_EXE_twill"))
        .arg("controller")
        .args([
            "--listen",
            "127.0.0.1:0",
            "--state-file",
            "s",
            "--token-file",
            "t",
        ])
        .arg("--tls-cert-file")
        .arg(&cert)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("--tls-private-key-file"),
        "{err}"
    );
}

/// `--log-format json` writes one JSON object a line, with the event's
/// fields; one of them gives the metrics endpoint's URL (`--metrics-addr`),
/// which serves OpenMetrics text and the probes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_name_the_metrics_endpoint_which_serves_the_leases() {
    let f = Files::new();
    let (mut p, addr) = start_args(
        &f,
        Some("net-conf.json"),
        "json",
        &[
            "--log-format".as_ref(),
            "json".as_ref(),
            "--metrics-addr".as_ref(),
            "127.0.0.1:0".as_ref(),
        ],
    );
    client(addr).acquire(req()).await.unwrap();
    let log = p.log();
    let events: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let listening = events
        .iter()
        .find(|e| e["message"] == "metrics endpoint listening")
        .unwrap_or_else(|| panic!("no metrics line in:\n{log}"));
    assert_eq!(listening["level"], "INFO");
    assert!(listening["timestamp"].is_string());
    let url = listening["url"].as_str().unwrap();
    let metrics: SocketAddr = url
        .strip_prefix("http://")
        .and_then(|u| u.strip_suffix("/metrics"))
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("url {url}"));
    let get = |path: &str| {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(metrics).unwrap();
        write!(s, "GET {path} HTTP/1.0\r\n\r\n").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    };
    let text = get("/metrics");
    assert!(text.starts_with("HTTP/1.0 200"), "{text}");
    assert!(text.contains("\ntwill_controller_leases 1\n"), "{text}");
    assert!(text.ends_with("# EOF\n"), "{text}");
    let ready = get("/readyz");
    assert!(ready.starts_with("HTTP/1.0 200"), "{ready}");
    assert!(
        ready.ends_with("[+]api ok\n[+]state-file ok\nreadyz check passed\n"),
        "{ready}"
    );
    p.child.kill().unwrap();
    p.child.wait().unwrap();
}
