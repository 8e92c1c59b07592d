//! Tests of the connection table alone, with explicit time.

use super::*;

fn key(s: &str, d: &str) -> FlowKey {
    FlowKey {
        proto: 6,
        src: s.parse().unwrap(),
        dst: d.parse().unwrap(),
    }
}

const SYN: TcpFlags = TcpFlags {
    syn: true,
    ack: false,
    fin: false,
    rst: false,
};
const SYNACK: TcpFlags = TcpFlags {
    syn: true,
    ack: true,
    fin: false,
    rst: false,
};
const ACK: TcpFlags = TcpFlags {
    syn: false,
    ack: true,
    fin: false,
    rst: false,
};
const FIN: TcpFlags = TcpFlags {
    syn: false,
    ack: true,
    fin: true,
    rst: false,
};
const RST: TcpFlags = TcpFlags {
    syn: false,
    ack: false,
    fin: false,
    rst: true,
};

fn conn(ct: &Conntrack, n: u16, seen: Seen, now: Instant) -> (FlowKey, FlowKey) {
    let orig = key(&format!("10.244.1.3:{n}"), "10.96.0.10:80");
    let reply = key("10.244.2.7:8080", &format!("10.244.1.3:{n}"));
    ct.insert(orig, reply, 1, seen, now).unwrap();
    (orig, reply)
}

fn state(ct: &Conntrack, k: &FlowKey, now: Instant) -> Option<TcpState> {
    ct.with(k, now, |c, _| c.tcp_state())
}

fn step(ct: &Conntrack, k: &FlowKey, f: TcpFlags, now: Instant) {
    ct.with(k, now, |c, d| ct.observe(c, d, Seen::Tcp(f), now));
}

#[test]
fn both_keys_find_one_entry_with_directions() {
    let ct = Conntrack::new(ConntrackConfig::default());
    let t0 = Instant::now();
    let (o, r) = conn(&ct, 40000, Seen::Tcp(SYN), t0);
    assert_eq!(ct.len(), 1);
    assert_eq!(
        ct.with(&o, t0, |c, d| (d, c.out(d))),
        Some((Dir::Original, r.reversed()))
    );
    assert_eq!(
        ct.with(&r, t0, |c, d| (d, c.out(d))),
        Some((Dir::Reply, o.reversed()))
    );
    assert_eq!(
        ct.insert(
            o,
            key("10.244.2.8:8080", "10.244.1.3:40000"),
            1,
            Seen::Udp,
            t0
        ),
        Err(InsertError::Exists)
    );
    assert_eq!(
        ct.insert(key("10.244.1.4:1", "10.96.0.10:80"), r, 1, Seen::Udp, t0),
        Err(InsertError::ReplyTaken)
    );
    assert_eq!(ct.len(), 1);
}

#[test]
fn handshake_and_close_follow_linux_timeouts() {
    let ct = Conntrack::new(ConntrackConfig::default());
    let t0 = Instant::now();
    let (o, r) = conn(&ct, 40000, Seen::Tcp(SYN), t0);
    assert_eq!(state(&ct, &o, t0), Some(TcpState::SynSent));
    step(&ct, &r, SYNACK, t0);
    assert_eq!(state(&ct, &o, t0), Some(TcpState::SynRecv));
    step(&ct, &o, ACK, t0);
    assert_eq!(state(&ct, &o, t0), Some(TcpState::Established));
    assert!(ct.get(&o).unwrap().is_assured());
    // Established lives 5 days.
    let day = Duration::from_secs(86_400);
    assert_eq!(state(&ct, &o, t0 + day), Some(TcpState::Established));
    step(&ct, &o, FIN, t0 + day);
    assert_eq!(state(&ct, &o, t0 + day), Some(TcpState::FinWait));
    step(&ct, &r, ACK, t0 + day);
    assert_eq!(state(&ct, &o, t0 + day), Some(TcpState::CloseWait));
    step(&ct, &r, FIN, t0 + day);
    assert_eq!(state(&ct, &o, t0 + day), Some(TcpState::LastAck));
    step(&ct, &o, ACK, t0 + day);
    assert_eq!(state(&ct, &o, t0 + day), Some(TcpState::TimeWait));
    // TIME_WAIT: 120 s.
    assert!(state(&ct, &o, t0 + day + Duration::from_secs(119)).is_some());
    assert_eq!(ct.sweep_all(t0 + day + Duration::from_secs(121)), 1);
    assert!(ct.is_empty());
    assert!(!ct.contains(&r));
}

#[test]
fn syn_sent_expires_after_120s_and_rst_closes_in_10s() {
    let ct = Conntrack::new(ConntrackConfig::default());
    let t0 = Instant::now();
    let (o, _) = conn(&ct, 1, Seen::Tcp(SYN), t0);
    let (o2, r2) = conn(&ct, 2, Seen::Tcp(SYN), t0);
    step(&ct, &r2, RST, t0);
    assert_eq!(state(&ct, &o2, t0), Some(TcpState::Close));
    assert_eq!(ct.sweep_all(t0 + Duration::from_secs(11)), 1);
    assert!(state(&ct, &o, t0 + Duration::from_secs(119)).is_some());
    assert!(
        state(&ct, &o, t0 + Duration::from_secs(121)).is_none(),
        "expired on lookup"
    );
    assert!(ct.is_empty());
    assert_eq!(ct.expired(), 2);
}

#[test]
fn mid_stream_pickup_is_established_but_not_assured_until_a_reply() {
    let ct = Conntrack::new(ConntrackConfig::default());
    let t0 = Instant::now();
    let (o, r) = conn(&ct, 1, Seen::Tcp(ACK), t0);
    assert_eq!(state(&ct, &o, t0), Some(TcpState::Established));
    assert!(!ct.get(&o).unwrap().is_assured());
    step(&ct, &r, ACK, t0);
    assert!(ct.get(&o).unwrap().is_assured());
}

#[test]
fn udp_is_30s_unreplied_then_120s() {
    let ct = Conntrack::new(ConntrackConfig::default());
    let t0 = Instant::now();
    let (o, r) = conn(&ct, 1, Seen::Udp, t0);
    let s = Duration::from_secs;
    assert!(ct.with(&o, t0 + s(29), |_, _| ()).is_some());
    ct.with(&r, t0 + s(29), |c, d| {
        ct.observe(c, d, Seen::Udp, t0 + s(29))
    });
    assert!(ct.with(&o, t0 + s(29 + 119), |_, _| ()).is_some());
    assert!(ct.with(&o, t0 + s(29 + 121), |_, _| ()).is_none());
    let (o2, _) = conn(&ct, 2, Seen::Udp, t0);
    assert!(ct.with(&o2, t0 + s(31), |_, _| ()).is_none());
}

#[test]
fn expiry_is_written_at_most_about_once_a_second() {
    let ct = Conntrack::new(ConntrackConfig::default());
    let t0 = Instant::now();
    let (o, _) = conn(&ct, 1, Seen::Udp, t0);
    let c = ct.get(&o).unwrap();
    let e0 = c.expires.load(Relaxed);
    ct.observe(
        &c,
        Dir::Original,
        Seen::Udp,
        t0 + Duration::from_millis(900),
    );
    assert_eq!(c.expires.load(Relaxed), e0);
    ct.observe(
        &c,
        Dir::Original,
        Seen::Udp,
        t0 + Duration::from_millis(1100),
    );
    assert_eq!(c.expires.load(Relaxed), e0 + 1100);
}

#[test]
fn full_table_early_drops_unassured_else_refuses() {
    let cfg = ConntrackConfig {
        max_entries: 4,
        ..ConntrackConfig::default()
    };
    let ct = Conntrack::new(cfg);
    let t0 = Instant::now();
    let keys: Vec<_> = (1..=4).map(|n| conn(&ct, n, Seen::Udp, t0)).collect();
    // Unassured entries: one is dropped for the newcomer.
    let orig = key("10.244.1.3:5", "10.96.0.10:80");
    let reply = key("10.244.2.7:8080", "10.244.1.3:5");
    assert_eq!(ct.insert(orig, reply, 1, Seen::Udp, t0), Ok(true));
    assert_eq!(ct.len(), 4);
    // All assured: refused.
    for (o, r) in keys.iter().chain([(orig, reply)].iter()) {
        let _ = o;
        ct.with(r, t0, |c, d| ct.observe(c, d, Seen::Udp, t0));
    }
    let orig = key("10.244.1.3:6", "10.96.0.10:80");
    let reply = key("10.244.2.7:8080", "10.244.1.3:6");
    assert_eq!(
        ct.insert(orig, reply, 1, Seen::Udp, t0),
        Err(InsertError::Full)
    );
}

#[test]
fn affinity_pins_until_timeout() {
    let ct = Conntrack::new(ConntrackConfig::default());
    let t0 = Instant::now();
    let c: IpAddr = "10.244.1.3".parse().unwrap();
    let b: SocketAddr = "10.244.2.7:8080".parse().unwrap();
    ct.set_affinity(c, 1, b, Duration::from_secs(10), t0);
    assert_eq!(ct.affinity(c, 1, t0 + Duration::from_secs(9)), Some(b));
    assert_eq!(ct.affinity(c, 2, t0), None);
    assert_eq!(ct.affinity(c, 1, t0 + Duration::from_secs(10)), None);
}
