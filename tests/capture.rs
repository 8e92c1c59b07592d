//! `twill capture` on a two-node vxlan cluster: a ping across nodes read
//! back by tshark and tcpdump from a pod's capture (file, ended by Ctrl-C), a port's
//! capture piped (`-w -`) into `tshark -r -`, and the tunnel's capture
//! (ended by `-c`) showing the outer headers and VNI 1; a capture whose
//! client vanishes is unhooked even with no traffic; a client that is
//! neither root nor the socket's owner is refused; and a TCP transfer shows
//! as the pod's super-frames on its port and as wire-sized segments on the
//! tunnel.
// Helpers outside #[test] functions panic on failure too: this is a test crate.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// Echo requests sent while capturing.
const PINGS: u32 = 4;

/// A running `twill capture`: killed and reaped on drop.
struct Capturing {
    child: Reaped,
    /// Its stderr lines after the first.
    stderr: mpsc::Receiver<String>,
}

impl Capturing {
    /// Starts `twill capture ARGS --socket …` for `node`, with stdout
    /// `stdout`; returns once the agent hooked the capture (the CLI's
    /// "capturing" line).
    fn start(node: &NodeProcess, args: &[&str], stdout: Stdio) -> Capturing {
        let child = Command::new(twill_bin())
            .arg("capture")
            .args(args)
            .arg("--socket")
            .arg(node.socket())
            .stdout(stdout)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut child = Reaped(child);
        let err = child.0.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(err).lines().map_while(Result::ok) {
                let _ = tx.send(l);
            }
        });
        let first = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("no word from twill capture");
        assert!(first.starts_with("twill: capturing"), "{first}");
        Capturing { child, stderr: rx }
    }

    /// Waits for it to exit by itself; returns its stderr.
    fn wait(mut self) -> String {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(st) = self.child.0.try_wait().unwrap() {
                let err: Vec<String> = self.stderr.try_iter().collect();
                assert!(st.success(), "twill capture: {st}: {err:?}");
                return err.join("\n");
            }
            assert!(Instant::now() < deadline, "twill capture did not end");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Ctrl-C, then [`Capturing::wait`].
    fn interrupt(self) -> String {
        kill(Pid::from_raw(self.child.0.id() as i32), Signal::SIGINT).unwrap();
        self.wait()
    }
}

/// `tshark -r FILE ARGS…`'s output lines.
fn tshark(file: &Path, args: &[&str]) -> Vec<String> {
    let out = Command::new("tshark")
        .arg("-r")
        .arg(file)
        .args(args)
        .output()
        .expect("running tshark (Debian package tshark)");
    assert!(out.status.success(), "tshark: {out:?}");
    lines(&out.stdout)
}

fn lines(b: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(b)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// The ICMP field lines tshark prints for `N` echoes `from` → `to`.
fn echoes(from: &str, to: &str) -> Vec<String> {
    let mut want = Vec::new();
    for _ in 0..PINGS {
        want.push(format!("{from}\t{to}\t8"));
        want.push(format!("{to}\t{from}\t0"));
    }
    want
}

const ICMP_FIELDS: &[&str] = &[
    "-Y",
    "icmp",
    "-T",
    "fields",
    "-e",
    "ip.src",
    "-e",
    "ip.dst",
    "-e",
    "icmp.type",
];

/// A stderr summary's "N packets captured" and "M packets dropped".
fn summary(err: &str) -> (u64, u64) {
    let n = |what: &str| -> u64 {
        err.lines()
            .find(|l| l.contains(what))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|w| w.parse().ok())
            .unwrap_or_else(|| panic!("no {what:?} in {err:?}"))
    };
    (n("packets captured"), n("packets dropped"))
}

/// Active captures per `twill status`.
fn captures(node: &NodeProcess) -> u64 {
    node.status_json().unwrap()["captures"].as_u64().unwrap()
}

#[test]
fn a_ping_across_nodes_is_read_back_by_tshark() {
    if !require_root("a_ping_across_nodes_is_read_back_by_tshark") {
        return;
    }
    let c = Cluster::new("vxlan").unwrap();
    let dir = TempDir::new("twl-capture").unwrap();
    let (a1, b1) = (c.a1.ip().to_string(), c.b1.ip().to_string());
    // Neighbours resolved before: the captures then see the echoes only
    // (a port capture sees ARP as well; it is filtered anyway).
    ping(c.a1.netns(), c.b1.ip(), 1).unwrap();

    let pod_file = dir.path().join("pod.pcap");
    let tunnel_file = dir.path().join("tunnel.pcap");
    let pod_id = c.a1.info().unwrap().id.clone();
    let pod = Capturing::start(
        &c.node_a,
        &["--pod", &pod_id, "-w", pod_file.to_str().unwrap()],
        Stdio::null(),
    );
    let count = (2 * PINGS).to_string();
    let tunnel = Capturing::start(
        &c.node_a,
        &[
            "--tunnel",
            "-c",
            &count,
            "-w",
            tunnel_file.to_str().unwrap(),
        ],
        Stdio::null(),
    );
    // b1 is node B's first pod: its port is twp1 (port 0 is the host's).
    let ports = c.node_b.counters().unwrap().ports;
    assert!(ports.iter().any(|p| p.name == "twp1"), "{ports:?}");
    let mut piped = Capturing::start(&c.node_b, &["--port", "twp1", "-w", "-"], Stdio::piped());
    // It reads until twill capture's stdout closes (also when a failed
    // assertion drops `piped`).
    let reader = Command::new("tshark")
        .args(["-r", "-"])
        .args(ICMP_FIELDS)
        .stdin(Stdio::from(piped.child.0.stdout.take().unwrap()))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();

    ping(c.a1.netns(), c.b1.ip(), PINGS).unwrap();

    let tunnel_err = tunnel.wait();
    eprintln!("twill capture --tunnel:\n{tunnel_err}");
    let (n, dropped) = summary(&tunnel_err);
    assert_eq!((n, dropped), (u64::from(2 * PINGS), 0));
    let pod_err = pod.interrupt();
    assert_eq!(summary(&pod_err).1, 0, "{pod_err}");
    let piped_err = piped.interrupt();
    assert_eq!(summary(&piped_err).1, 0, "{piped_err}");
    let out = reader.wait_with_output().unwrap();
    assert!(out.status.success(), "tshark -r -: {out:?}");

    // What a reader sees (and what the README shows).
    eprintln!("pod a1 ({pod_id}):\n{}", tshark(&pod_file, &[]).join("\n"));
    let vxlan = ["-d", "udp.port==8472,vxlan"];
    eprintln!("tunnel:\n{}", tshark(&tunnel_file, &vxlan).join("\n"));
    let want = echoes(&a1, &b1);
    assert_eq!(tshark(&pod_file, ICMP_FIELDS), want, "pod a1's capture");
    // tcpdump reads it too.
    let dump = Command::new("tcpdump")
        .args(["-n", "-r"])
        .arg(&pod_file)
        .arg("icmp")
        .output()
        .expect("running tcpdump (Debian package tcpdump)");
    assert!(dump.status.success(), "tcpdump: {dump:?}");
    let dumped = lines(&dump.stdout);
    let requests = format!("IP {a1} > {b1}: ICMP echo request");
    let replies = format!("IP {b1} > {a1}: ICMP echo reply");
    assert_eq!(dumped.len(), 2 * PINGS as usize, "{dumped:?}");
    assert_eq!(
        dumped.iter().filter(|l| l.contains(&requests)).count(),
        PINGS as usize,
        "{dumped:?}"
    );
    assert_eq!(
        dumped.iter().filter(|l| l.contains(&replies)).count(),
        PINGS as usize,
        "{dumped:?}"
    );
    assert_eq!(lines(&out.stdout), want, "port twp1 on node B through -w -");
    // The tunnel: outer headers from node A's underlay address to node
    // B's, VXLAN with VNI 1, the same echoes inside.
    let outer = tshark(
        &tunnel_file,
        &[
            "-d",
            "udp.port==8472,vxlan",
            "-T",
            "fields",
            "-E",
            "occurrence=f",
            "-e",
            "ip.src",
            "-e",
            "ip.dst",
            "-e",
            "udp.dstport",
            "-e",
            "vxlan.vni",
        ],
    );
    eprintln!("tunnel, outer:\n{}", outer.join("\n"));
    let (ua, ub) = (UNDERLAY_A.to_string(), UNDERLAY_B.to_string());
    let mut want_outer = Vec::new();
    for _ in 0..PINGS {
        want_outer.push(format!("{ua}\t{ub}\t8472\t1"));
        // The reply comes from node B's sending socket's port to ours.
        want_outer.push(format!("{ub}\t{ua}\t8472\t1"));
    }
    // Requests leave from one of node A's send sockets, replies arrive on
    // the tunnel socket: both to port 8472.
    assert_eq!(outer, want_outer, "tunnel capture's outer headers");
    let inner = tshark(
        &tunnel_file,
        &[
            "-d",
            "udp.port==8472,vxlan",
            "-Y",
            "icmp",
            "-T",
            "fields",
            "-E",
            "occurrence=l",
            "-e",
            "ip.src",
            "-e",
            "ip.dst",
            "-e",
            "icmp.type",
        ],
    );
    assert_eq!(inner, want, "tunnel capture's inner packets");

    // Every capture is unhooked.
    assert_eq!(captures(&c.node_a), 0);
    assert_eq!(captures(&c.node_b), 0);
}

#[test]
fn a_vanished_client_unhooks_its_capture_and_others_are_refused() {
    if !require_root("a_vanished_client_unhooks_its_capture_and_others_are_refused") {
        return;
    }
    let c = Cluster::new("vxlan").unwrap();
    let cap = Capturing::start(&c.node_a, &["--tunnel", "-w", "/dev/null"], Stdio::null());
    assert_eq!(captures(&c.node_a), 1);
    // SIGKILL: no goodbye; no packet flows either.
    drop(cap);
    let deadline = Instant::now() + Duration::from_secs(3);
    while captures(&c.node_a) != 0 {
        assert!(Instant::now() < deadline, "the capture is still hooked");
        std::thread::sleep(Duration::from_millis(50));
    }

    // Unknown targets: one clear error each, and no file.
    let nothing = std::env::temp_dir().join(format!("twl-capture-{}.pcap", unique_suffix()));
    for (args, want) in [
        (["--port", "nope"], "no port named \"nope\" (ports: "),
        (["--pod", "nope"], "no attachment \"nope\""),
    ] {
        let out = Command::new(twill_bin())
            .arg("capture")
            .args(args)
            .arg("-w")
            .arg(&nothing)
            .arg("--socket")
            .arg(c.node_a.socket())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains(want),
            "{args:?}: {err}"
        );
        assert!(!nothing.exists(), "{args:?} created {}", nothing.display());
    }

    // Neither root nor the socket's owner: refused, even with the socket
    // opened to everybody.
    let sock = c.node_a.socket();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(sock, std::fs::Permissions::from_mode(0o666)).unwrap();
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(twill_bin())
        .args(["capture", "--tunnel", "-w", "-", "--socket"])
        .arg(sock)
        .output()
        .unwrap();
    std::fs::set_permissions(sock, std::fs::Permissions::from_mode(0o600)).unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{out:?}");
    assert!(err.contains("only root or the owner"), "{err}");
    assert!(out.stdout.is_empty(), "{out:?}");
    assert_eq!(captures(&c.node_a), 0);
}

/// Bytes of the TCP transfer captured: few enough segments and ACKs that
/// they all fit one capture's queue even if the agent never drained it.
const TCP_CAPTURED: usize = 256 << 10;

/// Per `tshark -T fields -e frame.len -e tcp.len` lines of the packets from
/// `src`: the largest frame and the TCP payload bytes.
fn tcp_from(file: &Path, decode: &[&str], src: &str) -> (u64, u64) {
    let mut args = decode.to_vec();
    let filter = format!("ip.src == {src} && tcp");
    args.extend([
        "-Y",
        &filter,
        "-T",
        "fields",
        "-E",
        "occurrence=l",
        "-e",
        "frame.len",
        "-e",
        "tcp.len",
    ]);
    let rows = tshark(file, &args);
    assert!(!rows.is_empty(), "no TCP from {src} in {}", file.display());
    rows.iter().fold((0, 0), |(max, sum), l| {
        let mut f = l.split('\t').map(|v| v.parse::<u64>().unwrap());
        let (len, tcp) = (f.next().unwrap(), f.next().unwrap());
        (max.max(len), sum + tcp)
    })
}

#[test]
fn a_tcp_transfer_is_captured_as_super_frames_on_the_port_and_segments_on_the_tunnel() {
    if !require_root(
        "a_tcp_transfer_is_captured_as_super_frames_on_the_port_and_segments_on_the_tunnel",
    ) {
        return;
    }
    let c = Cluster::new("vxlan").unwrap();
    let dir = TempDir::new("twl-capture").unwrap();
    let pod_file = dir.path().join("pod.pcap");
    let tunnel_file = dir.path().join("tunnel.pcap");
    let pod_id = c.a1.info().unwrap().id.clone();
    let path = |p: &Path| p.to_str().unwrap().to_owned();
    let pod = Capturing::start(
        &c.node_a,
        &["--pod", &pod_id, "--snaplen", "128", "-w", &path(&pod_file)],
        Stdio::null(),
    );
    let tunnel = Capturing::start(
        &c.node_a,
        &["--tunnel", "--snaplen", "128", "-w", &path(&tunnel_file)],
        Stdio::null(),
    );
    tcp_transfer(c.b1.netns(), c.b1.ip(), c.a1.netns(), TCP_CAPTURED).unwrap();
    assert_eq!(summary(&pod.interrupt()).1, 0);
    assert_eq!(summary(&tunnel.interrupt()).1, 0);

    let a1 = c.a1.ip().to_string();
    let v = c.node_a.counters().unwrap();
    let port = v.ports.iter().find(|p| p.name == "twp1").unwrap();
    let (pod_max, pod_bytes) = tcp_from(&pod_file, &[], &a1);
    assert!(pod_bytes >= TCP_CAPTURED as u64, "{pod_bytes}");
    // The pod's TCP as the TAP carried it: super-frames, if the pod sent any.
    if port.rx_gso > 0 {
        assert!(
            pod_max > 1514,
            "no super-frame in the pod's capture: {port:?}"
        );
    }
    // On the tunnel, what went on the wire: UDP_SEGMENT sends as their
    // segments, none larger than the underlay's 1500-byte MTU.
    let (tunnel_max, tunnel_bytes) = tcp_from(&tunnel_file, &["-d", "udp.port==8472,vxlan"], &a1);
    assert!(tunnel_bytes >= TCP_CAPTURED as u64, "{tunnel_bytes}");
    assert!(tunnel_max <= 1514, "a tunnel record of {tunnel_max} bytes");
    eprintln!(
        "pod: largest frame {pod_max} (rx_gso {}); tunnel: largest {tunnel_max}, {} GSO sends",
        port.rx_gso, v.tunnel.tx_gso_packets
    );
}
