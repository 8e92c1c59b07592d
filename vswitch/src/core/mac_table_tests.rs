#![allow(clippy::unwrap_used, clippy::expect_used)]
use super::*;
use proptest::prelude::*;

const P1: PortId = PortId(1);
const P2: PortId = PortId(2);
const P3: PortId = PortId(3);
const S: Duration = Duration::from_secs(1);

/// Index 0 is the zero MAC, 1 a multicast one, the rest unicast.
fn mac(n: u8) -> MacAddr {
    match n {
        0 => MacAddr::ZERO,
        1 => MacAddr([0x01, 0, 0x5e, 0, 0, 1]),
        n => MacAddr([0x02, 0x42, 0, 0, 0, n]),
    }
}

fn table(max_entries: usize, max_per_port: usize) -> (MacTable, Instant) {
    let cfg = MacTableConfig {
        max_entries,
        max_per_port,
        aging: 10 * S,
    };
    (MacTable::with_seed(cfg, 7), Instant::now())
}

/// Learns each (mac, port) at `now`, expecting a new entry.
fn learn_new(t: &mut MacTable, now: Instant, macs: &[(u8, PortId)]) {
    for &(n, p) in macs {
        assert_eq!(t.learn(mac(n), p, now), Learn::New, "mac {n}");
    }
}

#[test]
fn learn_then_lookup() {
    let (mut t, now) = table(16, 16);
    learn_new(&mut t, now, &[(2, P1), (3, P2)]);
    assert_eq!(t.learn(mac(2), P1, now), Learn::Refreshed);
    assert_eq!((t.lookup(mac(2)), t.lookup(mac(3))), (Some(P1), Some(P2)));
    assert_eq!(t.lookup(mac(4)), None);
    assert_eq!((t.len(), t.port_len(P1), t.port_len(P3)), (2, 1, 0));
    assert_eq!(t.check_invariants(), Ok(()));
}

#[test]
fn multicast_broadcast_and_zero_are_not_learned() {
    let (mut t, now) = table(16, 16);
    for m in [MacAddr::BROADCAST, mac(0), mac(1)] {
        assert_eq!(t.learn(m, P1, now), Learn::NotLearnable);
        assert!(!t.insert_static(m, P1));
        assert_eq!(t.lookup(m), None);
    }
    assert!(t.is_empty());
    assert_eq!(t.counters(), MacCounters::default());
}

#[test]
fn refresh_keeps_an_entry_past_its_first_deadline() {
    let (mut t, t0) = table(16, 16);
    learn_new(&mut t, t0, &[(2, P1), (3, P1)]);
    assert_eq!(t.learn(mac(2), P1, t0 + 6 * S), Learn::Refreshed);
    assert_eq!(t.run(t0 + 10 * S), Some(t0 + 16 * S));
    assert_eq!((t.lookup(mac(2)), t.lookup(mac(3))), (Some(P1), None));
    assert_eq!(t.check_invariants(), Ok(()));
}

#[test]
fn aging_expires_exactly_at_aging_and_run_returns_the_next_deadline() {
    let (mut t, t0) = table(16, 16);
    assert_eq!(t.run(t0), None);
    learn_new(&mut t, t0, &[(2, P1)]);
    learn_new(&mut t, t0 + 3 * S, &[(3, P2)]);
    let just_before = t0 + 10 * S - Duration::from_nanos(1);
    assert_eq!(t.run(just_before), Some(t0 + 10 * S));
    assert_eq!(t.len(), 2);
    assert_eq!(t.run(t0 + 10 * S), Some(t0 + 13 * S));
    assert_eq!((t.lookup(mac(2)), t.lookup(mac(3))), (None, Some(P2)));
    assert_eq!(t.run(t0 + 13 * S), None);
    assert!(t.is_empty());
    assert_eq!(t.counters().expired, 2);
}

#[test]
fn a_move_between_ports_counts_moved() {
    let (mut t, now) = table(16, 16);
    learn_new(&mut t, now, &[(2, P1)]);
    assert_eq!(t.learn(mac(2), P2, now), Learn::Moved { from: P1 });
    assert_eq!(t.lookup(mac(2)), Some(P2));
    assert_eq!((t.port_len(P1), t.port_len(P2), t.len()), (0, 1, 1));
    let want = MacCounters {
        learned: 1,
        moved: 1,
        ..Default::default()
    };
    assert_eq!(t.counters(), want);
}

#[test]
fn static_entries_never_age_move_or_get_evicted() {
    let (mut t, t0) = table(2, 2);
    learn_new(&mut t, t0, &[(2, P1)]);
    assert!(t.insert_static(mac(2), P2), "overrides the dynamic entry");
    assert_eq!(t.lookup(mac(2)), Some(P2));
    assert_eq!((t.port_len(P1), t.port_len(P2)), (0, 0));
    assert_eq!(t.learn(mac(2), P3, t0), Learn::Static { port: P2 });
    assert_eq!(t.learn(mac(2), P2, t0), Learn::Static { port: P2 });
    for n in 3..12 {
        let _ = t.learn(mac(n), P2, t0); // fills and churns both caps
    }
    assert_eq!(t.run(t0 + 100 * S), None);
    assert!(t.iter().eq([(mac(2), P2, true)]));
    assert_eq!(t.counters().moved, 0);
    assert_eq!(t.check_invariants(), Ok(()));
}

#[test]
fn the_per_port_cap_evicts_that_ports_lru() {
    let (mut t, t0) = table(16, 3);
    learn_new(&mut t, t0, &[(9, P2), (2, P1), (3, P1), (4, P1)]);
    assert_eq!(t.learn(mac(2), P1, t0 + S), Learn::Refreshed); // mac(3) is P1's LRU
    assert_eq!(t.learn(mac(5), P1, t0 + S), Learn::New);
    assert_eq!((t.lookup(mac(3)), t.lookup(mac(9))), (None, Some(P2)));
    // Moving into a full port evicts that port's LRU too.
    assert_eq!(t.learn(mac(9), P1, t0 + S), Learn::Moved { from: P2 });
    assert_eq!((t.lookup(mac(4)), t.port_len(P1)), (None, 3));
    assert_eq!(t.counters().evicted, 2);
    assert_eq!(t.check_invariants(), Ok(()));
}

#[test]
fn the_global_cap_evicts_from_the_busiest_port() {
    let (mut t, t0) = table(7, 16);
    learn_new(&mut t, t0, &[(20, P2), (21, P2)]); // the global LRU
    let p1: Vec<_> = (2..7).map(|n| (n, P1)).collect();
    learn_new(&mut t, t0 + S, &p1);
    assert_eq!((t.port_len(P1), t.port_len(P2), t.len()), (5, 2, 7));
    learn_new(&mut t, t0 + 2 * S, &[(22, P2)]);
    assert_eq!(t.lookup(mac(2)), None, "P1's LRU goes");
    assert_eq!((t.lookup(mac(20)), t.lookup(mac(21))), (Some(P2), Some(P2)));
    assert_eq!((t.port_len(P1), t.port_len(P2), t.len()), (4, 3, 7));
    learn_new(&mut t, t0 + 2 * S, &[(23, P3)]);
    assert_eq!(t.lookup(mac(3)), None);
    assert_eq!((t.port_len(P1), t.port_len(P2)), (3, 3));
    // P1 and P2 tie at 3: the lower PortId loses.
    learn_new(&mut t, t0 + 2 * S, &[(24, P3)]);
    assert_eq!((t.lookup(mac(4)), t.lookup(mac(20))), (None, Some(P2)));
    assert_eq!((t.port_len(P1), t.port_len(P2), t.port_len(P3)), (2, 3, 2));
    assert_eq!(t.counters().evicted, 3);
    assert_eq!(t.check_invariants(), Ok(()));
}

#[test]
fn flush_port_and_remove() {
    let (mut t, now) = table(16, 16);
    learn_new(&mut t, now, &[(2, P1), (3, P1), (4, P2)]);
    assert!(t.insert_static(mac(5), P1));
    assert_eq!(t.flush_port(P1), 3);
    assert_eq!((t.flush_port(P1), t.flush_port(P3), t.len()), (0, 0, 1));
    assert_eq!((t.lookup(mac(5)), t.lookup(mac(4))), (None, Some(P2)));
    assert_eq!((t.remove(mac(4)), t.remove(mac(4))), (true, false));
    assert!(t.is_empty() && t.run(now).is_none());
    learn_new(&mut t, now, &[(2, P1)]);
    assert_eq!(t.slab.len(), 4, "freed slots are reused");
    assert_eq!(t.check_invariants(), Ok(()));
}

#[test]
fn counters_add_up() {
    let (mut t, t0) = table(2, 16);
    learn_new(&mut t, t0, &[(2, P1), (3, P1), (4, P1)]); // evicts mac(2)
    assert_eq!(t.learn(mac(4), P2, t0), Learn::Moved { from: P1 });
    assert_eq!(t.learn(mac(4), P2, t0), Learn::Refreshed);
    assert_eq!(t.run(t0 + 10 * S), None);
    let want = MacCounters {
        learned: 3,
        expired: 2,
        evicted: 1,
        moved: 1,
    };
    assert_eq!(t.counters(), want);
}

#[test]
fn the_hash_spreads_macs_that_share_a_prefix() {
    // hashbrown picks the bucket from the low bits: they must depend on
    // every byte, not only on the last ones.
    let b = MacHashBuilder::new(0);
    for at in [2, 5] {
        let mut m = [0x02, 0x42, 0, 0, 0x12, 0x34];
        let low: std::collections::HashSet<_> = (0..=255)
            .map(|n| {
                b.hash_one(mac_key(MacAddr({
                    m[at] = n;
                    m
                }))) & 0xff
            })
            .collect();
        assert!(low.len() > 128, "byte {at}: {} of 256 buckets", low.len());
    }
}

/// The same rules the slow, obvious way: (mac, port, static, used, seq).
/// Global and per-port LRU order agree, as every touch moves an entry to
/// both tails at once, so one sequence number orders both.
#[derive(Default)]
struct Model(Vec<(MacAddr, PortId, bool, Instant, u64)>, u64, MacCounters);

impl Model {
    fn find(&self, m: MacAddr) -> Option<usize> {
        self.0.iter().position(|x| x.0 == m)
    }
    fn count(&self, p: PortId) -> usize {
        self.0.iter().filter(|x| !x.2 && x.1 == p).count()
    }
    fn evict_lru_of(&mut self, p: PortId) {
        let on_p = self.0.iter().enumerate().filter(|(_, x)| !x.2 && x.1 == p);
        let i = on_p.min_by_key(|(_, x)| x.4).unwrap().0;
        self.0.remove(i);
        self.2.evicted += 1;
    }
    fn learn(&mut self, cfg: &MacTableConfig, m: MacAddr, p: PortId, now: Instant) -> Learn {
        if !m.is_unicast() {
            return Learn::NotLearnable;
        }
        self.1 += 1;
        let res = match self.find(m).map(|i| self.0[i]) {
            Some((_, from, true, _, _)) => return Learn::Static { port: from },
            Some((_, from, _, _, _)) if from == p => Learn::Refreshed,
            Some((_, from, _, _, _)) => {
                if self.count(p) >= cfg.max_per_port {
                    self.evict_lru_of(p);
                }
                self.2.moved += 1;
                Learn::Moved { from }
            }
            None if self.count(p) >= cfg.max_per_port => {
                self.evict_lru_of(p);
                Learn::New
            }
            None => {
                let dynamic = self.0.iter().filter(|x| !x.2).map(|x| x.1);
                if dynamic.clone().count() >= cfg.max_entries {
                    let key = |&q: &PortId| (self.count(q), std::cmp::Reverse(q));
                    self.evict_lru_of(dynamic.max_by_key(key).unwrap());
                }
                Learn::New
            }
        };
        self.0.retain(|x| x.0 != m);
        self.0.push((m, p, false, now, self.1));
        self.2.learned += u64::from(res == Learn::New);
        res
    }
}

proptest! {
    #[test]
    fn matches_a_reference_model(
        max_entries in 1..8usize,
        max_per_port in 1..6usize,
        seed: u64,
        // (what, mac, port, milliseconds to advance the clock)
        ops in prop::collection::vec((0..13u8, 0..14u8, 1..5u16, 0..3000u64), 1..200),
    ) {
        let cfg = MacTableConfig { max_entries, max_per_port, aging: 10 * S };
        let (mut t, mut m) = (MacTable::with_seed(cfg, seed), Model::default());
        let mut now = Instant::now();
        for (what, n, p, ms) in ops {
            match what {
                0..=7 => {
                    now += Duration::from_millis(ms);
                    let want = m.learn(&cfg, mac(n), PortId(p), now);
                    prop_assert_eq!(t.learn(mac(n), PortId(p), now), want);
                }
                8 => {
                    let i = m.find(mac(n));
                    i.map(|i| m.0.remove(i));
                    prop_assert_eq!(t.remove(mac(n)), i.is_some());
                }
                9 | 10 => {
                    now += Duration::from_millis(2 * ms);
                    let before = m.0.len();
                    m.0.retain(|x| x.2 || now.saturating_duration_since(x.3) < cfg.aging);
                    m.2.expired += (before - m.0.len()) as u64;
                    let next = m.0.iter().filter(|x| !x.2).map(|x| x.3 + cfg.aging).min();
                    prop_assert_eq!(t.run(now), next);
                }
                11 => {
                    prop_assert_eq!(t.insert_static(mac(n), PortId(p)), n > 1);
                    if n > 1 {
                        m.0.retain(|x| x.0 != mac(n));
                        m.0.push((mac(n), PortId(p), true, now, 0));
                    }
                }
                _ => {
                    let before = m.0.len();
                    m.0.retain(|x| x.1 != PortId(p));
                    prop_assert_eq!(t.flush_port(PortId(p)), before - m.0.len());
                }
            }
            prop_assert_eq!(t.check_invariants(), Ok(()));
            let statics = m.0.iter().filter(|x| x.2).count();
            prop_assert!(t.len() <= max_entries + statics);
            prop_assert_eq!((t.len(), t.counters()), (m.0.len(), m.2));
            for p in (1..5).map(PortId) {
                prop_assert!(t.port_len(p) <= max_per_port);
                prop_assert_eq!(t.port_len(p), m.count(p));
            }
            for n in 0..14 {
                prop_assert_eq!(t.lookup(mac(n)), m.find(mac(n)).map(|i| m.0[i].1));
            }
        }
    }
}
