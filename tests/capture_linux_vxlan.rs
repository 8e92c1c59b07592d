//! Captures VXLAN packets exactly as the Linux kernel emits them, for the
//! byte fixtures in `encap/src/fixtures/`.
//!
//! Re-run (as root) with
//!
//! ```text
//! cargo test --test capture_linux_vxlan -- --ignored --nocapture
//! ```
//!
//! Two namespaces joined by a veth underlay. The sender holds a vxlan device
//! configured as flannel configures `flannel.1` (VNI 1, dstport 8472,
//! nolearning, a permanent neighbor + FDB entry for the peer's VTEP and an
//! onlink route to the peer's subnet); the receiver has no vxlan device, only
//! a plain UDP socket on port 8472. One ICMP echo (`ping -c1 -p …`) and one
//! small UDP datagram are sent into the tunnel; the UDP payloads received
//! (VXLAN header + inner Ethernet frame) are written to
//! `linux_vxlan_icmp.bin` and `linux_vxlan_udp.bin`, and `README.md` beside
//! them records how (kernel version, commands, addresses).
// Helpers outside #[test] functions panic on failure too: this is a test crate.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fmt::Write as _;
use std::fs;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use common::*;

const SENDER_IP: &str = "192.168.200.1";
const RECEIVER_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 200, 2);
const LOCAL_VTEP_MAC: &str = "0a:58:0a:f4:01:01";
const PEER_VTEP_MAC: &str = "0a:58:0a:f4:02:01";
const LOCAL_VTEP_IP: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 0);
const POD_IP: Ipv4Addr = Ipv4Addr::new(10, 244, 2, 3);
const PING_PATTERN: &str = "74776c6c";
const UDP_SRC_PORT: u16 = 40000;
const UDP_DST_PORT: u16 = 7777;
const UDP_PAYLOAD: &[u8] = b"twill fixture udp\n";

/// Runs `ip -n NS ARGS…` and records the command line.
fn ip_logged(log: &mut Vec<String>, ns: &Netns, label: &str, args: &[&str]) -> Result<()> {
    ns.ip(args)?;
    log.push(format!("ip -n {label} {}", args.join(" ")));
    Ok(())
}

/// Receives datagrams until one satisfies `pick` or 5 s pass; returns it and
/// the outer UDP source port.
fn receive(rx: &UdpSocket, what: &str, pick: impl Fn(&[u8]) -> bool) -> Result<(Vec<u8>, u16)> {
    rx.set_read_timeout(Some(Duration::from_millis(200)))?;
    let mut buf = [0u8; 4096];
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until {
        if let Ok((n, from)) = rx.recv_from(&mut buf) {
            if pick(&buf[..n]) {
                return Ok((buf[..n].to_vec(), from.port()));
            }
        }
    }
    bail!("no {what} arrived on the receiver's UDP socket")
}

/// Inner IPv4 protocol of a VXLAN payload, if it is VNI 1 IPv4 from the local VTEP.
fn inner_proto(p: &[u8]) -> Option<u8> {
    let ok = p.len() > 8 + 14 + 20
        && p[..8] == [0x08, 0, 0, 0, 0, 0, 1, 0]
        && p[8..14] == parse_mac(PEER_VTEP_MAC).ok()?
        && p[14..20] == parse_mac(LOCAL_VTEP_MAC).ok()?
        && p[20..22] == [0x08, 0x00];
    ok.then(|| p[8 + 14 + 9])
}

/// One's-complement sum of `b` (16-bit big-endian words).
fn ones_sum(b: &[u8]) -> u32 {
    let mut s: u32 = b
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    s
}

/// Checks the inner IPv4 header checksum and the ICMP/UDP checksum of a
/// captured VXLAN payload: the fixtures must hold what a wire carries.
fn check_inner_checksums(p: &[u8]) -> Result<()> {
    let ip = p.get(8 + 14..).context("short capture")?;
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    let l4 = ip.get(ihl..total).context("truncated inner packet")?;
    if ones_sum(&ip[..ihl]) != 0xffff {
        bail!("inner IPv4 header checksum does not verify");
    }
    let sum = match ip[9] {
        17 => {
            let mut pseudo = ip[12..20].to_vec();
            pseudo.extend_from_slice(&[0, 17]);
            pseudo.extend_from_slice(&(l4.len() as u16).to_be_bytes());
            pseudo.extend_from_slice(l4);
            ones_sum(&pseudo)
        }
        _ => ones_sum(l4),
    };
    if sum != 0xffff {
        bail!("inner L4 checksum does not verify (left partial by an offload?)");
    }
    Ok(())
}

fn capture() -> Result<()> {
    let fixtures = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("encap/src/fixtures");
    let tx_ns = Netns::new("twl-cap-tx")?;
    let rx_ns = Netns::new("twl-cap-rx")?;
    let mut log = Vec::new();
    log.push("ip netns add tx; ip netns add rx".to_owned());
    ip_logged(
        &mut log,
        &tx_ns,
        "tx",
        &[
            "link",
            "add",
            "ul0",
            "type",
            "veth",
            "peer",
            "name",
            "ul0",
            "netns",
            rx_ns.name(),
        ],
    )?;
    let rx_ip = RECEIVER_IP.to_string();
    let vtep = format!("{LOCAL_VTEP_IP}/32");
    let peer0 = "10.244.2.0";
    let steps: [(&Netns, &str, Vec<&str>); 9] = [
        (
            &tx_ns,
            "tx",
            vec!["addr", "add", "192.168.200.1/24", "dev", "ul0"],
        ),
        (&tx_ns, "tx", vec!["link", "set", "ul0", "up"]),
        (
            &rx_ns,
            "rx",
            vec!["addr", "add", "192.168.200.2/24", "dev", "ul0"],
        ),
        (&rx_ns, "rx", vec!["link", "set", "ul0", "up"]),
        (
            &tx_ns,
            "tx",
            vec![
                "link",
                "add",
                "flannel.1",
                "address",
                LOCAL_VTEP_MAC,
                "type",
                "vxlan",
                "id",
                "1",
                "dstport",
                "8472",
                "local",
                SENDER_IP,
                "nolearning",
                "dev",
                "ul0",
            ],
        ),
        (&tx_ns, "tx", vec!["addr", "add", &vtep, "dev", "flannel.1"]),
        (&tx_ns, "tx", vec!["link", "set", "flannel.1", "up"]),
        (
            &tx_ns,
            "tx",
            vec![
                "neigh",
                "replace",
                peer0,
                "lladdr",
                PEER_VTEP_MAC,
                "dev",
                "flannel.1",
                "nud",
                "permanent",
            ],
        ),
        (
            &tx_ns,
            "tx",
            vec![
                "route",
                "replace",
                "10.244.2.0/24",
                "via",
                peer0,
                "dev",
                "flannel.1",
                "onlink",
            ],
        ),
    ];
    for (ns, label, args) in &steps {
        ip_logged(&mut log, ns, label, args)?;
    }
    let fdb = [
        "fdb",
        "append",
        PEER_VTEP_MAC,
        "dev",
        "flannel.1",
        "dst",
        &rx_ip,
        "self",
        "permanent",
    ];
    let mut bridge = std::process::Command::new("bridge");
    bridge.args(["-n", tx_ns.name()]).args(fdb);
    run_checked(bridge, Duration::from_secs(10))?;
    log.push(format!("bridge -n tx {}", fdb.join(" ")));
    // The veth stands for a NIC, which finishes the inner checksums that the
    // stack leaves partial (see `finish_checksums`): capture what a wire carries.
    finish_checksums(&tx_ns, "ul0")?;
    log.push("ip netns exec tx ethtool -K ul0 tx off".to_owned());
    let details = tx_ns.ip(&["-d", "link", "show", "flannel.1"])?;

    let rx = udp_socket(&rx_ns, SocketAddrV4::new(RECEIVER_IP, 8472))?;
    log.push(format!(
        "(rx) a plain UDP socket bound to {RECEIVER_IP}:8472, no vxlan device"
    ));

    let ping_args = [
        "-n",
        "-c",
        "1",
        "-W",
        "1",
        "-s",
        "56",
        "-p",
        PING_PATTERN,
        &POD_IP.to_string(),
    ]
    .map(str::to_owned);
    let ping_args: Vec<&str> = ping_args.iter().map(String::as_str).collect();
    // Nobody answers the echo; only the request matters.
    tx_ns.exec("ping", &ping_args)?;
    log.push(format!("ip netns exec tx ping {}", ping_args.join(" ")));
    let (icmp, icmp_sport) = receive(&rx, "ICMP echo in VXLAN", |p| inner_proto(p) == Some(1))?;

    let tx = udp_socket(&tx_ns, SocketAddrV4::new(LOCAL_VTEP_IP, UDP_SRC_PORT))?;
    tx.send_to(UDP_PAYLOAD, SocketAddrV4::new(POD_IP, UDP_DST_PORT))
        .context("sending the UDP datagram")?;
    log.push(format!(
        "(tx) UDP socket bound to {LOCAL_VTEP_IP}:{UDP_SRC_PORT} sends {:?} to {POD_IP}:{UDP_DST_PORT}",
        String::from_utf8_lossy(UDP_PAYLOAD)
    ));
    let (udp, udp_sport) = receive(&rx, "UDP in VXLAN", |p| {
        inner_proto(p) == Some(17) && p.ends_with(UDP_PAYLOAD)
    })?;

    check_inner_checksums(&icmp).context("ICMP capture")?;
    check_inner_checksums(&udp).context("UDP capture")?;
    let log: Vec<String> = log
        .iter()
        .map(|l| l.replace(tx_ns.name(), "tx").replace(rx_ns.name(), "rx"))
        .collect();
    fs::create_dir_all(&fixtures)?;
    fs::write(fixtures.join("linux_vxlan_icmp.bin"), &icmp)?;
    fs::write(fixtures.join("linux_vxlan_udp.bin"), &udp)?;
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease")?;
    let rx_mac = rx_ns.link_mac("ul0")?;
    let tx_mac = tx_ns.link_mac("ul0")?;
    fs::write(
        fixtures.join("README.md"),
        readme(
            kernel.trim(),
            &log,
            &details,
            &tx_mac,
            &rx_mac,
            (&icmp, icmp_sport),
            (&udp, udp_sport),
        ),
    )?;
    Ok(())
}

fn hex(b: &[u8]) -> String {
    let mut s = String::new();
    for (i, chunk) in b.chunks(16).enumerate() {
        let _ = write!(s, "{:04x}:", i * 16);
        for x in chunk {
            let _ = write!(s, " {x:02x}");
        }
        s.push('\n');
    }
    s
}

fn readme(
    kernel: &str,
    log: &[String],
    details: &str,
    tx_mac: &str,
    rx_mac: &str,
    (icmp, icmp_sport): (&[u8], u16),
    (udp, udp_sport): (&[u8], u16),
) -> String {
    format!(
        "# Linux VXLAN captures\n\n\
         Byte fixtures of VXLAN packets exactly as the Linux kernel emits them, for the\n\
         wire-format tests of `encap`. Each `.bin` file is one UDP payload as received on\n\
         the underlay: the 8-byte VXLAN header followed by the inner Ethernet frame (no\n\
         outer Ethernet/IP/UDP headers, no FCS).\n\n\
         | file | inner packet |\n|---|---|\n\
         | `linux_vxlan_icmp.bin` ({} bytes) | ICMP echo request {LOCAL_VTEP_IP} → {POD_IP}, 56 data bytes, pattern `{PING_PATTERN}` (iputils puts a timestamp in the first 16 data bytes; the id is the kernel's) |\n\
         | `linux_vxlan_udp.bin` ({} bytes) | UDP {LOCAL_VTEP_IP}:{UDP_SRC_PORT} → {POD_IP}:{UDP_DST_PORT}, payload `{}` |\n\n\
         Both: VNI 1 (flags 0x08), inner source MAC {LOCAL_VTEP_MAC} (the sender's\n\
         `flannel.1`), inner destination MAC {PEER_VTEP_MAC} (the peer VTEP's, from the\n\
         permanent neighbor entry), as flannel's vxlan backend sets them up. All\n\
         checksums are complete: the sender's underlay veth had tx checksum offload off,\n\
         standing for a NIC (with it on, a veth passes the inner UDP checksum on holding\n\
         only the pseudo-header sum, which a kernel receiver trusts). The outer\n\
         UDP source ports were {icmp_sport} (ICMP) and {udp_sport} (UDP): the kernel's flow hash\n\
         of the inner headers, seeded per boot, so they are not part of the fixtures.\n\n\
         ## How they were captured\n\n\
         Kernel `{kernel}` (`uname -r`), iproute2 `ip`/`bridge`, iputils `ping`, by\n\
         `tests/capture_linux_vxlan.rs` (re-run as root with\n\
         `cargo test --test capture_linux_vxlan -- --ignored --nocapture`; it rewrites\n\
         this directory). Namespaces `tx` and `rx` stand for the lab's uniquely named\n\
         ones; underlay veth `ul0`: tx {SENDER_IP} ({tx_mac}), rx {RECEIVER_IP} ({rx_mac}).\n\n\
         ```sh\n{}\n```\n\n\
         The sender's vxlan device:\n\n```text\n{}\n```\n\n\
         ## Hex\n\n`linux_vxlan_icmp.bin`:\n\n```text\n{}```\n\n`linux_vxlan_udp.bin`:\n\n```text\n{}```\n",
        icmp.len(),
        udp.len(),
        String::from_utf8_lossy(UDP_PAYLOAD).escape_default(),
        log.join("\n"),
        details.trim(),
        hex(icmp),
        hex(udp),
    )
}

/// Not part of the normal run: it rewrites files in the source tree.
#[test]
#[ignore = "rewrites encap/src/fixtures; run by hand as root"]
fn capture_linux_vxlan_frames() {
    if !require_root("capture_linux_vxlan_frames") {
        return;
    }
    capture().unwrap();
}
