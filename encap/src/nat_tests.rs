//! Tests of in-place translation: checksums checked by recomputing them.

use super::*;
use crate::checksum::{checksum, fold, pseudo_header, sum};
use etherparse::PacketBuilder;
use proptest::prelude::*;

fn tcp(src: SocketAddrV4, dst: SocketAddrV4, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ipv4(src.ip().octets(), dst.ip().octets(), 64)
        .tcp(src.port(), dst.port(), 1000, 65535)
        .syn()
        .write(&mut v, payload)
        .unwrap();
    v
}

fn udp(src: SocketAddrV4, dst: SocketAddrV4, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ipv4(src.ip().octets(), dst.ip().octets(), 64)
        .udp(src.port(), dst.port())
        .write(&mut v, payload)
        .unwrap();
    v
}

/// Whether the IP header and the L4 checksum (over the pseudo-header) verify.
fn valid(ip: &[u8]) -> bool {
    let hl = usize::from(ip[0] & 0x0f) * 4;
    if checksum(&ip[..hl]) != 0 {
        return false;
    }
    let src = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
    let dst = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
    let l4 = &ip[hl..];
    if ip[9] == ipv4::PROTO_UDP && l4[6..8] == [0, 0] {
        return true;
    }
    let acc = pseudo_header(src, dst, ip[9], l4.len() as u16);
    !fold(sum(acc, l4)) == 0
}

fn a(s: &str) -> SocketAddrV4 {
    s.parse().unwrap()
}

#[test]
fn endpoints_of_tcp_and_udp() {
    let p = tcp(a("10.244.1.3:40000"), a("10.96.0.10:80"), b"x");
    assert_eq!(
        endpoints(&p).unwrap(),
        (ipv4::PROTO_TCP, a("10.244.1.3:40000"), a("10.96.0.10:80"))
    );
    assert_eq!(endpoints(&p[..22]), Err(Error::Truncated));
}

#[test]
fn dnat_tcp_keeps_checksums() {
    let mut p = tcp(a("10.244.1.3:40000"), a("10.96.0.10:80"), b"hello");
    rewrite(
        &mut p,
        a("10.244.1.3:40000"),
        a("10.244.2.7:8080"),
        L4Checksum::Full,
    )
    .unwrap();
    assert!(valid(&p));
    assert_eq!(
        endpoints(&p).unwrap().2,
        a("10.244.2.7:8080"),
        "destination rewritten"
    );
}

#[test]
fn udp_without_checksum_stays_without() {
    let mut p = udp(a("10.244.1.3:5353"), a("10.96.0.10:53"), b"q");
    p[20 + 6..20 + 8].copy_from_slice(&[0, 0]);
    rewrite(
        &mut p,
        a("10.244.1.1:5353"),
        a("10.244.2.7:53"),
        L4Checksum::Full,
    )
    .unwrap();
    assert_eq!(&p[26..28], &[0, 0]);
    assert_eq!(checksum(&p[..20]), 0);
}

#[test]
fn partial_checksum_gets_only_the_pseudo_header_change() {
    let (s, d) = (a("10.244.1.3:40000"), a("10.96.0.10:80"));
    let mut p = tcp(s, d, b"payload");
    // What a sender offloading the checksum leaves: the pseudo-header sum.
    let l4len = (p.len() - 20) as u16;
    let part = fold(pseudo_header(*s.ip(), *d.ip(), 6, l4len));
    p[36..38].copy_from_slice(&part.to_be_bytes());
    rewrite(&mut p, s, a("10.244.2.7:8080"), L4Checksum::Partial).unwrap();
    // The device completes it: sum over the L4 bytes from the partial value.
    let mut l4 = p[20..].to_vec();
    let c = !fold(sum(0, &l4));
    l4[16..18].copy_from_slice(&c.to_be_bytes());
    p[20..].copy_from_slice(&l4);
    assert!(valid(&p));
}

#[test]
fn icmp_error_quote_is_translated() {
    // A frag-needed from 10.244.1.1 about 10.244.1.3:40000 -> 10.244.2.7:8080.
    let orig = tcp(a("10.244.1.3:40000"), a("10.244.2.7:8080"), &[0u8; 40]);
    let mut icmp = vec![3, 4, 0, 0, 0, 0, 0x05, 0xaa];
    icmp.extend_from_slice(&orig);
    let c = checksum(&icmp);
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    let mut p = Vec::new();
    PacketBuilder::ipv4([10, 244, 1, 1], [10, 244, 1, 3], 64)
        .write(&mut p, etherparse::IpNumber(1), &icmp)
        .unwrap();
    let q = icmp_error_quote(&p).unwrap();
    assert_eq!(q, 28);
    rewrite_icmp_error(
        &mut p,
        q,
        Ipv4Addr::new(10, 244, 1, 1),
        Ipv4Addr::new(10, 244, 1, 3),
        a("10.244.1.3:40000"),
        a("10.96.0.10:80"),
    )
    .unwrap();
    assert_eq!(checksum(&p[..20]), 0);
    assert_eq!(checksum(&p[20..]), 0);
    assert_eq!(checksum(&p[28..48]), 0);
    assert!(valid(&p[28..]));
    assert_eq!(endpoints(&p[28..]).unwrap().2, a("10.96.0.10:80"));
}

proptest! {
    #[test]
    fn random_translations_keep_checksums_valid(
        s in any::<u32>(), d in any::<u32>(), sp in any::<u16>(), dp in any::<u16>(),
        s2 in any::<u32>(), d2 in any::<u32>(), sp2 in any::<u16>(), dp2 in any::<u16>(),
        is_tcp in any::<bool>(), payload in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let from = (SocketAddrV4::new(s.into(), sp), SocketAddrV4::new(d.into(), dp));
        let to = (SocketAddrV4::new(s2.into(), sp2), SocketAddrV4::new(d2.into(), dp2));
        let mut p = if is_tcp { tcp(from.0, from.1, &payload) } else { udp(from.0, from.1, &payload) };
        prop_assume!(valid(&p));
        rewrite(&mut p, to.0, to.1, L4Checksum::Full).unwrap();
        prop_assert!(valid(&p));
        prop_assert_eq!(endpoints(&p).unwrap(), (p[9], to.0, to.1));
    }
}
