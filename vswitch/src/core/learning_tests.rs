//! Tests of the shared learning tables: they keep the MAC table's rules, and
//! what one worker learns every other one sees.

use std::sync::Arc;

use proptest::prelude::*;

use super::*;

fn mac(n: u8) -> MacAddr {
    MacAddr([0x0a, 0x58, 0, 0, 0, n])
}

fn cfg(max_entries: usize, max_per_port: usize, aging_secs: u64) -> MacTableConfig {
    MacTableConfig {
        max_entries,
        max_per_port,
        aging: Duration::from_secs(aging_secs),
    }
}

const P1: PortId = PortId(1);
const P2: PortId = PortId(2);

#[test]
fn keeps_the_mac_tables_answers() {
    let t = SharedMacTable::with_seed(cfg(8, 8, 300), 7);
    let now = Instant::now();
    assert_eq!(t.learn(mac(1), P1, now), Learn::New);
    assert_eq!(t.learn(mac(1), P1, now), Learn::Refreshed);
    assert_eq!(t.learn(mac(1), P2, now), Learn::Moved { from: P1 });
    assert_eq!(t.lookup(mac(1)), Some(P2));
    assert_eq!(t.learn(MacAddr::BROADCAST, P1, now), Learn::NotLearnable);
    assert!(t.insert_static(mac(9), P1));
    assert_eq!(t.learn(mac(9), P2, now), Learn::Static { port: P1 });
    assert_eq!(t.lookup(mac(9)), Some(P1), "a static entry never moves");
    assert_eq!(t.counters().learned, 1);
    assert_eq!(t.counters().moved, 1);
    assert_eq!(t.flush_port(P2), 1);
    assert_eq!(t.lookup(mac(1)), None);
    assert!(t.remove(mac(9)));
    assert!(t.is_empty());
    assert_eq!(t.check_invariants(), Ok(()));
}

#[test]
fn a_fresh_entry_is_not_refreshed_in_the_policy_and_a_stale_one_is() {
    // Aging 4 s: refresh interval 1 s.
    let t = SharedMacTable::with_seed(cfg(8, 8, 4), 7);
    let t0 = Instant::now();
    let at = |ms: u64| t0 + Duration::from_millis(ms);
    assert_eq!(t.learn(mac(1), P1, t0), Learn::New);
    assert_eq!(t.learn(mac(2), P1, t0), Learn::New);
    // mac(1) seen again within the interval: nothing written, so the
    // policy still ages it from t0 (at most one interval early).
    assert_eq!(t.learn(mac(1), P1, at(900)), Learn::Refreshed);
    // mac(2) seen again after the interval: the policy refreshes it.
    assert_eq!(t.learn(mac(2), P1, at(1500)), Learn::Refreshed);
    assert_eq!(t.run(at(4000)), Some(at(5500)));
    assert_eq!(t.lookup(mac(1)), None, "aged from its last policy refresh");
    assert_eq!(t.lookup(mac(2)), Some(P1));
    assert_eq!(t.run(at(5500)), None);
    assert_eq!(t.lookup(mac(2)), None);
    assert_eq!(t.counters().expired, 2);
    assert_eq!(t.check_invariants(), Ok(()));
}

#[test]
fn an_active_mac_never_ages_out() {
    let t = SharedMacTable::with_seed(cfg(8, 8, 4), 7);
    let t0 = Instant::now();
    assert_eq!(t.learn(mac(1), P1, t0), Learn::New);
    for ms in (100..60_000).step_by(100) {
        let now = t0 + Duration::from_millis(ms);
        assert_eq!(t.learn(mac(1), P1, now), Learn::Refreshed);
        let _ = t.run(now);
        assert_eq!(t.lookup(mac(1)), Some(P1), "at {ms} ms");
    }
}

#[test]
fn evictions_leave_the_mirror() {
    let t = SharedMacTable::with_seed(cfg(4, 3, 300), 7);
    let now = Instant::now();
    for n in 0..6 {
        let _ = t.learn(mac(n), P1, now);
    }
    // The per-port cap (3) recycled port 1's oldest entries.
    assert_eq!(t.len(), 3);
    for n in 0..3 {
        assert_eq!(t.lookup(mac(n)), None);
    }
    for n in 10..13 {
        let _ = t.learn(mac(n), P2, now);
    }
    // The global cap (4): the busiest port loses its least recently used.
    assert_eq!(t.len(), 4);
    assert_eq!(t.counters().evicted, 5);
    assert_eq!(t.check_invariants(), Ok(()));
}

#[test]
fn concurrent_learning_keeps_mirror_and_caps() {
    let t = Arc::new(SharedMacTable::with_seed(cfg(64, 48, 300), 7));
    let t0 = Instant::now();
    let workers: Vec<_> = (0..2u16)
        .map(|w| {
            let t = t.clone();
            std::thread::spawn(move || {
                for i in 0..20_000u32 {
                    let m = MacAddr([0x0a, 0, 0, 0, (i % 3) as u8, (i % 97) as u8]);
                    let port = PortId(1 + (i % 3) as u16 + w);
                    let now = t0 + Duration::from_micros(u64::from(i) * 200);
                    let _ = t.learn(m, port, now);
                    let _ = t.lookup(m);
                    if i % 5000 == 0 {
                        let _ = t.run(now);
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    assert_eq!(t.check_invariants(), Ok(()));
    assert!(t.len() <= 64);
}

#[derive(Debug, Clone)]
enum Op {
    Learn(u8, u16, u16),
    Static(u8, u16),
    Flush(u16),
    Remove(u8),
    Run(u16),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..24u8, 1..5u16, 0..800u16).prop_map(|(m, p, dt)| Op::Learn(m, p, dt)),
        1 => (0..24u8, 1..5u16).prop_map(|(m, p)| Op::Static(m, p)),
        1 => (1..5u16).prop_map(Op::Flush),
        1 => (0..24u8).prop_map(Op::Remove),
        1 => (0..3000u16).prop_map(Op::Run),
    ]
}

proptest! {
    /// Whatever happens, the mirror holds exactly the policy's entries.
    #[test]
    fn the_mirror_always_matches_the_policy(ops in prop::collection::vec(op(), 1..200)) {
        let t = SharedMacTable::with_seed(cfg(8, 5, 2), 7);
        let mut now = Instant::now();
        for o in ops {
            match o {
                Op::Learn(m, p, dt) => {
                    now += Duration::from_millis(u64::from(dt));
                    let _ = t.learn(mac(m), PortId(p), now);
                }
                Op::Static(m, p) => {
                    let _ = t.insert_static(mac(m), PortId(p));
                }
                Op::Flush(p) => {
                    let _ = t.flush_port(PortId(p));
                }
                Op::Remove(m) => {
                    let _ = t.remove(mac(m));
                }
                Op::Run(dt) => {
                    now += Duration::from_millis(u64::from(dt));
                    let _ = t.run(now);
                }
            }
            prop_assert_eq!(t.check_invariants(), Ok(()));
        }
    }
}

#[test]
fn neighbors_mirror_observations_attachments_and_aging() {
    let n = SharedNeighbors::new(4, Duration::from_secs(10));
    let t0 = Instant::now();
    let (a, b) = (Ipv4Addr::new(10, 244, 1, 3), Ipv4Addr::new(10, 244, 1, 4));
    n.insert_fixed(a, mac(3), t0);
    assert_eq!(n.observe(a, mac(9), t0), NeighborUpdate::Refused);
    assert_eq!(n.lookup(a), Some(mac(3)));
    assert_eq!(n.observe(b, mac(4), t0), NeighborUpdate::Learned);
    assert_eq!(n.lookup(b), Some(mac(4)));
    assert_eq!(n.observe(b, mac(5), t0), NeighborUpdate::Learned);
    assert_eq!(n.lookup(b), Some(mac(5)), "a learned neighbor follows ARP");
    assert_eq!(
        n.run(t0 + Duration::from_secs(10)),
        None,
        "nothing learned remains"
    );
    assert_eq!(n.lookup(b), None);
    n.remove_if(a, mac(9));
    assert_eq!(n.lookup(a), Some(mac(3)), "another MAC's removal leaves it");
    n.remove_if(a, mac(3));
    assert_eq!(n.lookup(a), None);
    assert!(n.may_ask(b, t0));
    assert!(!n.may_ask(b, t0));
    assert!(n.is_empty());
}
