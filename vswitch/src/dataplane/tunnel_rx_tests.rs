//! What the tunnel receive path writes, checked against a real kernel: a
//! USO frame as [`gro::UdpCoalescer`] builds it, written into a TAP, comes
//! out of the pod's UDP socket as the datagrams that were joined, in order.

use std::io::{self, Write};
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::time::Duration;

use encap::{gro, vnet, MacAddr};
use etherparse::PacketBuilder;

use crate::dataplane::Worker;
use crate::sys::netlink::{self, LinkConfig};
use crate::sys::tap::{Tap, TUN_F_USO4, VNET_HDR_LEN};
use crate::sys::testutil::{need_root, TestNs};

const POD_MAC: MacAddr = MacAddr([0x0a, 0x58, 0x0a, 0x63, 0x00, 0x02]);
const PEER_MAC: [u8; 6] = [0x02, 0x11, 0x22, 0x33, 0x44, 0x55];
const POD_IP: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 2);
const PEER: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 99, 0, 5), 40000);
const POD_PORT: u16 = 7000;

/// Datagrams from [`PEER`] to the pod of one flow, as the tunnel delivers
/// them (DF, identifications counting up from `ident`), with `payloads`.
fn flow(ident: u16, payloads: &[Vec<u8>]) -> Vec<Vec<u8>> {
    payloads
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let mut v = Vec::new();
            PacketBuilder::ethernet2(PEER_MAC, POD_MAC.0)
                .ipv4(PEER.ip().octets(), POD_IP.octets(), 64)
                .udp(PEER.port(), POD_PORT)
                .write(&mut v, p)
                .unwrap();
            // Identification and DF are not in the UDP checksum.
            let ip = &mut v[14..34];
            ip[4..6].copy_from_slice(&ident.wrapping_add(i as u16).to_be_bytes());
            ip[6] = 0x40;
            ip[10..12].copy_from_slice(&[0, 0]);
            let c = encap::checksum::checksum(ip);
            ip[10..12].copy_from_slice(&c.to_be_bytes());
            v
        })
        .collect()
}

/// `n` payloads of `len` bytes and a last one of `last` (if not 0), each
/// telling its index.
fn payloads(n: usize, len: usize, last: usize) -> Vec<Vec<u8>> {
    let mut v: Vec<Vec<u8>> = (0..n)
        .map(|i| (0..len).map(|k| (i * 31 + k) as u8).collect())
        .collect();
    if last > 0 {
        v.push(vec![0xa5; last]);
    }
    v
}

#[test]
fn uso_frame_arrives_as_its_datagrams() {
    if !need_root("tunnel_rx::uso_frame_arrives_as_its_datagrams") {
        return;
    }
    let pod = TestNs::new();
    let (tap, sock) = pod
        .ns
        .run(|| {
            let tap = Tap::create("twuso%d").unwrap();
            let cfg = LinkConfig {
                mac: Some(POD_MAC),
                mtu: None,
                addrs: vec![(POD_IP, 24)],
                up: true,
            };
            netlink::configure_link(tap.name(), &cfg).unwrap();
            let sock = UdpSocket::bind((POD_IP, POD_PORT)).unwrap();
            (tap, sock)
        })
        .unwrap();
    // As the dataplane asks: only a TAP that accepts USO gets USO frames.
    if Worker::negotiate_offloads(&tap) & TUN_F_USO4 == 0 {
        let _ = writeln!(
            io::stderr(),
            "!!!!!!!! tunnel_rx: SKIPPED, this kernel has no USO (Linux < 6.2) !!!!!!!!"
        );
        return;
    }
    sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let cases = [
        ("64 x 64 bytes", payloads(63, 64, 20), 0xfff0),
        ("44 x 1472 bytes", payloads(44, 1472, 0), 7),
        ("64 x 1 byte", payloads(64, 1, 0), 0),
        ("2 datagrams", payloads(1, 300, 299), 100),
    ];
    for (what, sent, ident) in cases {
        let frames = flow(ident, &sent);
        let mut c = gro::UdpCoalescer::new(65_536 + 128);
        for f in &frames {
            assert_eq!(c.push(f), gro::Push::Merged, "{what}");
        }
        let (hdr, sf) = c.take().unwrap();
        assert_eq!(hdr.gso_type, vnet::GSO_UDP_L4, "{what}");
        let mut h = [0u8; VNET_HDR_LEN];
        hdr.emit(&mut h).unwrap();
        assert_eq!(tap.write_frame(&h, sf).unwrap(), VNET_HDR_LEN + sf.len());
        let mut buf = vec![0u8; 2048];
        for (i, want) in sent.iter().enumerate() {
            let (n, from) = sock
                .recv_from(&mut buf)
                .unwrap_or_else(|e| panic!("{what}: datagram {i} of {}: {e}", sent.len()));
            assert_eq!(from, PEER.into(), "{what}");
            assert_eq!(&buf[..n], &want[..], "{what}: datagram {i}");
        }
    }
    sock.set_nonblocking(true).unwrap();
    let e = sock.recv_from(&mut [0u8; 16]).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::WouldBlock, "one datagram too many");
}
