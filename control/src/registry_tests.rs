use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ipnet::Ipv4Net;
use proptest::prelude::*;

use super::*;
use crate::lease::{LeaseAttrs, LeaseBackend};
use crate::netconf::NetConf;
use crate::objects::{ObjectChange, ObjectEvent, ObjectKey, StoredObject};

const SMALL: &str = r#"{"Network":"10.244.0.0/22","SubnetLen":24,"Backend":{"Type":"vxlan"}}"#;

fn conf(json: &str) -> NetConf {
    NetConf::parse(json).unwrap()
}

fn net(s: &str) -> Ipv4Net {
    s.parse().unwrap()
}

fn ip(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(192, 168, 100, n)
}

fn attrs(n: u8) -> LeaseAttrs {
    LeaseAttrs {
        public_ip: ip(n),
        backend: LeaseBackend::Vxlan {
            vni: Some(1),
            vtep_mac: encap::MacAddr([2, 0, 0, 0, 0, n]),
        },
    }
}

fn req(n: u8, previous: Option<Ipv4Net>, ttl_secs: u64) -> AcquireRequest {
    AcquireRequest {
        attrs: attrs(n),
        previous,
        ttl_secs,
    }
}

/// 2023-11-14T22:13:20Z, plus `ms` milliseconds.
fn at(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_700_000_000) + Duration::from_millis(ms)
}

/// Applies events to a table, as a watcher does.
fn replay(table: &mut BTreeMap<Ipv4Net, Lease>, events: &[WatchEvent]) {
    for e in events {
        match &e.event {
            LeaseEvent::Added { lease } => {
                table.insert(lease.subnet, lease.clone());
            }
            LeaseEvent::Removed { subnet } => {
                table.remove(subnet);
            }
        }
    }
}

#[test]
fn acquire_reuses_the_lease_of_the_same_public_ip() {
    let mut r = Registry::new(conf(SMALL));
    let a = r.acquire(&req(1, None, 10), at(0)).unwrap();
    assert_eq!(r.revision(), 1);
    let mut changed = req(1, None, 20);
    changed.attrs.backend = LeaseBackend::Udp;
    let b = r.acquire(&changed, at(500)).unwrap();
    assert_eq!(a.subnet, b.subnet);
    assert_eq!(b.attrs.backend, LeaseBackend::Udp);
    assert_eq!(
        b.expiration,
        1_700_000_000 + 1 + 20,
        "rounded up to the second"
    );
    assert_eq!(r.len(), 1);
    assert_eq!(r.revision(), 2);
    // The same lease again changes nothing and logs nothing.
    r.acquire(&changed, at(500)).unwrap();
    assert_eq!(r.revision(), 2);
}

#[test]
fn acquire_takes_back_the_previous_subnet_and_runs_out() {
    let mut r = Registry::new(conf(SMALL));
    let a = r
        .acquire(&req(1, Some(net("10.244.3.0/24")), 10), at(0))
        .unwrap();
    assert_eq!(a.subnet, net("10.244.3.0/24"));
    r.acquire(&req(2, None, 10), at(0)).unwrap();
    r.acquire(&req(3, None, 10), at(0)).unwrap();
    let e = r.acquire(&req(4, None, 10), at(0)).unwrap_err();
    assert!(
        matches!(e, StoreError::OutOfSubnets { count: 3, .. }),
        "{e}"
    );
    assert_eq!(r.revision(), 3, "a failed acquire changes nothing");
    // Once node 1's lease expired, its subnet goes to node 4.
    let d = r.acquire(&req(4, None, 10), at(10_000)).unwrap();
    assert_eq!(d.subnet, a.subnet);
}

#[test]
fn renew_extends_only_the_holders_lease() {
    let mut r = Registry::new(conf(SMALL));
    let a = r.acquire(&req(1, None, 10), at(0)).unwrap();
    let b = r.renew(a.subnet, ip(1), None, 100, at(5_000)).unwrap();
    assert_eq!(b.expiration, 1_700_000_105);
    assert_eq!(b.attrs, a.attrs);
    let lost = r.renew(a.subnet, ip(2), None, 100, at(5_000)).unwrap_err();
    assert!(matches!(lost, StoreError::LeaseLost { subnet } if subnet == a.subnet));
    // Attrs with another public IP cannot move the lease.
    assert!(r
        .renew(a.subnet, ip(1), Some(attrs(2)), 100, at(5_000))
        .is_err());
    // New attrs of the holder replace the value.
    let mut udp = attrs(1);
    udp.backend = LeaseBackend::Udp;
    let c = r.renew(a.subnet, ip(1), Some(udp), 100, at(5_000)).unwrap();
    assert_eq!(c.attrs, udp);
    // Expired: lost.
    let e = r
        .renew(a.subnet, ip(1), None, 100, at(200_000))
        .unwrap_err();
    assert!(matches!(e, StoreError::LeaseLost { .. }));
    assert!(r.is_empty());
}

#[test]
fn release_is_idempotent_and_only_by_the_holder() {
    let mut r = Registry::new(conf(SMALL));
    let a = r.acquire(&req(1, None, 10), at(0)).unwrap();
    assert!(!r.release(a.subnet, ip(2), at(0)), "not the holder");
    assert_eq!(r.len(), 1);
    assert!(r.release(a.subnet, ip(1), at(0)));
    assert!(!r.release(a.subnet, ip(1), at(0)));
    assert_eq!(r.revision(), 2);
    let ev = r.events_after(0).unwrap();
    assert_eq!(ev.len(), 2);
    assert_eq!(
        ev[1],
        WatchEvent {
            revision: 2,
            event: LeaseEvent::Removed { subnet: a.subnet }
        }
    );
}

#[test]
fn expire_removes_due_leases_and_tells_the_next_expiry() {
    let mut r = Registry::new(conf(SMALL));
    assert_eq!(r.next_expiry(), None);
    let a = r.acquire(&req(1, None, 5), at(0)).unwrap();
    let b = r.acquire(&req(2, None, 3), at(0)).unwrap();
    assert_eq!(r.next_expiry(), Some(b.expires_at()));
    assert_eq!(r.expire(at(2_999)), 0);
    assert!(!b.expired(at(2_999)));
    assert_eq!(r.expire(at(3_000)), 1);
    assert!(b.expired(at(3_000)));
    assert_eq!(r.next_expiry(), Some(a.expires_at()));
    assert_eq!(r.expire(at(60_000)), 1);
    assert_eq!(r.next_expiry(), None);
    let removed: Vec<Ipv4Net> = r
        .events_after(2)
        .unwrap()
        .iter()
        .map(|e| e.event.subnet())
        .collect();
    assert_eq!(removed, vec![b.subnet, a.subnet], "in order of expiration");
}

#[test]
fn events_after_bounds() {
    let mut r = Registry::new(conf(SMALL)).with_log_capacity(3);
    assert_eq!(r.events_after(0).unwrap(), vec![]);
    let gone = r.events_after(1).unwrap_err();
    assert!(
        matches!(
            gone,
            StoreError::Compacted {
                requested: 1,
                oldest: 0
            }
        ),
        "a future revision: {gone}"
    );
    for n in 1..=5 {
        r.acquire(&req(n, None, 10), at(0)).ok();
        r.release(net("10.244.1.0/24"), ip(n), at(0));
    }
    let rev = r.revision();
    assert_eq!(r.oldest_revision(), rev - 3);
    assert_eq!(r.events_after(rev - 3).unwrap().len(), 3);
    assert_eq!(r.events_after(rev).unwrap(), vec![]);
    let e = r.events_after(rev - 4).unwrap_err();
    assert!(
        matches!(e, StoreError::Compacted { requested, oldest } if requested == rev - 4 && oldest == rev - 3)
    );
    assert!(r.events_after(rev + 1).is_err());
}

#[test]
fn state_round_trips_without_the_log() {
    let mut r = Registry::new(conf(SMALL));
    let a = r.acquire(&req(1, None, 10), at(0)).unwrap();
    let b = r.acquire(&req(2, None, 10), at(0)).unwrap();
    r.release(b.subnet, ip(2), at(0));
    let bytes = r.to_json().unwrap();
    let s = Registry::from_json(&bytes).unwrap();
    assert_eq!(s.config(), r.config());
    assert_eq!(s.list(), r.list());
    assert_eq!(s.revision(), 3);
    assert_eq!(s.get(&a.subnet), Some(&a));
    assert_eq!(s.events_after(3).unwrap(), vec![]);
    assert!(matches!(
        s.events_after(2),
        Err(StoreError::Compacted {
            requested: 2,
            oldest: 3
        })
    ));
    assert_eq!(s.next_expiry(), Some(a.expires_at()));
    // The stored lease value is flannel's.
    let text = String::from_utf8(bytes).unwrap();
    assert!(text.contains(r#""PublicIP": "192.168.100.1""#), "{text}");
}

#[test]
fn bad_state_is_a_clear_error() {
    let mut r = Registry::new(conf(SMALL));
    r.acquire(&req(1, None, 10), at(0)).unwrap();
    let text = String::from_utf8(r.to_json().unwrap()).unwrap();
    let v2 = text.replace("\"version\": 1", "\"version\": 2");
    assert!(matches!(
        Registry::from_json(v2.as_bytes()),
        Err(StateError::Version(2))
    ));
    let mut doc: serde_json::Value = serde_json::from_str(&text).unwrap();
    let lease = doc["leases"][0].clone();
    doc["leases"].as_array_mut().unwrap().push(lease);
    let e = Registry::from_json(doc.to_string().as_bytes()).unwrap_err();
    assert!(matches!(e, StateError::DuplicateLease(_)), "{e}");
    let e = Registry::from_json(b"{\"version\":1}").unwrap_err();
    assert!(
        e.to_string().starts_with("controller state: missing field"),
        "{e}"
    );
    assert!(Registry::from_json(b"").is_err());
}

fn svc_key(name: &str) -> ObjectKey {
    ObjectKey {
        kind: crate::objects::Kind::Service,
        namespace: "default".into(),
        name: name.into(),
    }
}

fn svc(name: &str, port: u16) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"ports": [{"port": port}]},
    })
}

#[test]
fn objects_share_the_lease_revisions_and_have_their_own_log() {
    let mut r = Registry::new(conf(SMALL));
    r.acquire(&req(1, None, 60), at(0)).unwrap(); // 1
    assert_eq!(r.put_object(svc_key("web"), svc("web", 80)).unwrap(), 2);
    r.acquire(&req(2, None, 60), at(0)).unwrap(); // 3
    assert_eq!(r.put_object(svc_key("db"), svc("db", 5432)).unwrap(), 4);
    assert!(r.delete_object(&svc_key("web"))); // 5
    assert!(!r.delete_object(&svc_key("web")), "absent: no change");
    assert_eq!(r.revision(), 5);
    let revs = |v: Vec<ObjectEvent>| v.iter().map(|e| e.revision).collect::<Vec<_>>();
    assert_eq!(revs(r.object_events_after(0).unwrap()), [2, 4, 5]);
    assert_eq!(revs(r.object_events_after(2).unwrap()), [4, 5]);
    assert_eq!(revs(r.object_events_after(3).unwrap()), [4, 5]);
    assert_eq!(revs(r.object_events_after(5).unwrap()), Vec::<u64>::new());
    assert!(matches!(
        r.object_events_after(6),
        Err(StoreError::Compacted { requested: 6, .. })
    ));
    // The lease log skips the object revisions.
    let lease_revs: Vec<u64> = r
        .events_after(0)
        .unwrap()
        .iter()
        .map(|e| e.revision)
        .collect();
    assert_eq!(lease_revs, [1, 3]);
    assert_eq!(r.events_after(2).unwrap().len(), 1);
    assert_eq!(r.events_after(4).unwrap().len(), 0);
    let list = r.list_objects();
    assert_eq!(list.revision, 5);
    assert_eq!(list.objects.len(), 1);
    assert_eq!(list.objects[0].key, svc_key("db"));
    assert_eq!(list.objects[0].revision, 4);
    assert_eq!(list.objects[0].object, svc("db", 5432));
    let e = r.object_events_after(4).unwrap();
    assert_eq!(
        e[0].change,
        ObjectChange::Deleted {
            key: svc_key("web")
        }
    );
}

#[test]
fn an_identical_put_is_no_change() {
    let mut r = Registry::new(conf(SMALL));
    assert_eq!(r.put_object(svc_key("web"), svc("web", 80)).unwrap(), 1);
    assert_eq!(r.put_object(svc_key("web"), svc("web", 80)).unwrap(), 1);
    assert_eq!(r.revision(), 1);
    assert_eq!(r.object_events_after(0).unwrap().len(), 1);
    assert_eq!(r.put_object(svc_key("web"), svc("web", 81)).unwrap(), 2);
    assert_eq!(r.object_events_after(0).unwrap().len(), 2);
}

#[test]
fn objects_are_checked_against_their_key_and_bounded() {
    let mut r = Registry::new(conf(SMALL)).with_max_objects(2);
    assert!(matches!(
        r.put_object(svc_key("web"), svc("db", 80)),
        Err(StoreError::InvalidObject(_))
    ));
    assert_eq!(r.revision(), 0);
    r.put_object(svc_key("a"), svc("a", 1)).unwrap();
    r.put_object(svc_key("b"), svc("b", 1)).unwrap();
    assert!(matches!(
        r.put_object(svc_key("c"), svc("c", 1)),
        Err(StoreError::TooManyObjects { limit: 2 })
    ));
    // Replacing one is still allowed at the limit.
    assert_eq!(r.put_object(svc_key("a"), svc("a", 2)).unwrap(), 3);
    assert!(r.delete_object(&svc_key("b")));
    assert!(r.put_object(svc_key("c"), svc("c", 1)).is_ok());
    assert_eq!(r.object_count(), 2);
}

#[test]
fn the_object_log_is_compacted() {
    let mut r = Registry::new(conf(SMALL)).with_log_capacity(2);
    for p in 1..=4 {
        r.put_object(svc_key("web"), svc("web", p)).unwrap();
        r.acquire(&req(1, None, 60 + u64::from(p)), at(0)).unwrap();
    }
    // Objects at 1, 3, 5, 7; leases at 2, 4, 6, 8. Two of each are kept.
    assert_eq!(r.oldest_object_revision(), 3);
    assert!(matches!(
        r.object_events_after(2),
        Err(StoreError::Compacted {
            requested: 2,
            oldest: 3
        })
    ));
    assert_eq!(r.object_events_after(3).unwrap().len(), 2);
    assert_eq!(r.object_events_after(4).unwrap().len(), 2);
    assert_eq!(r.object_events_after(5).unwrap().len(), 1);
    assert_eq!(r.oldest_revision(), 4);
    assert!(r.events_after(3).is_err());
    assert_eq!(r.events_after(4).unwrap().len(), 2);
    assert_eq!(r.events_after(5).unwrap().len(), 2);
}

#[test]
fn objects_round_trip_through_the_state() {
    let mut r = Registry::new(conf(SMALL));
    r.acquire(&req(1, None, 60), at(0)).unwrap();
    r.put_object(svc_key("web"), svc("web", 80)).unwrap();
    r.put_object(svc_key("db"), svc("db", 5432)).unwrap();
    let s = Registry::from_json(&r.to_json().unwrap()).unwrap();
    assert_eq!(s.revision(), 3);
    assert_eq!(s.list_objects(), r.list_objects());
    assert_eq!(s.oldest_object_revision(), 3);
    assert!(s.object_events_after(2).is_err());
    assert_eq!(s.object_events_after(3).unwrap(), []);
    // Duplicates are refused.
    let mut doc: serde_json::Value = serde_json::from_slice(&r.to_json().unwrap()).unwrap();
    let first = doc["objects"][0].clone();
    doc["objects"].as_array_mut().unwrap().push(first);
    assert!(matches!(
        Registry::from_json(doc.to_string().as_bytes()),
        Err(StateError::DuplicateObject(_))
    ));
}

#[test]
fn a_state_file_without_objects_still_loads() {
    // What a controller wrote before objects existed.
    let old = r#"{
  "version": 1,
  "config": {"Network":"10.244.0.0/22","SubnetLen":24,"Backend":{"Type":"vxlan"}},
  "revision": 7,
  "leases": [
    {"subnet":"10.244.1.0/24","attrs":{"PublicIP":"192.168.100.1","BackendType":"udp"},"expiration":1700000060}
  ]
}"#;
    let mut r = Registry::from_json(old.as_bytes()).unwrap();
    assert_eq!(r.revision(), 7);
    assert_eq!(r.len(), 1);
    assert_eq!(r.object_count(), 0);
    assert_eq!(r.list_objects().revision, 7);
    assert_eq!(r.put_object(svc_key("web"), svc("web", 80)).unwrap(), 8);
    let again = Registry::from_json(&r.to_json().unwrap()).unwrap();
    assert_eq!(again.object_count(), 1);
}

#[test]
fn replace_config_drops_leases_it_does_not_allow() {
    let mut r = Registry::new(conf(SMALL));
    let a = r
        .acquire(&req(1, Some(net("10.244.1.0/24")), 10), at(0))
        .unwrap();
    let b = r
        .acquire(&req(2, Some(net("10.244.3.0/24")), 10), at(0))
        .unwrap();
    let narrower = conf(r#"{"Network":"10.244.0.0/22","SubnetLen":24,"SubnetMax":"10.244.2.0"}"#);
    assert_eq!(r.replace_config(narrower), 1);
    assert_eq!(r.config(), &narrower);
    assert!(r.get(&a.subnet).is_some());
    assert!(r.get(&b.subnet).is_none());
    assert_eq!(
        r.events_after(2).unwrap()[0].event,
        LeaseEvent::Removed { subnet: b.subnet }
    );
}

#[test]
fn huge_ttls_and_expirations_do_not_overflow() {
    let mut r = Registry::new(conf(SMALL));
    let a = r.acquire(&req(1, None, u64::MAX), at(0)).unwrap();
    assert_eq!(a.expiration, 1_700_000_000 + MAX_TTL_SECS);
    let far = Lease {
        expiration: u64::MAX,
        ..a.clone()
    };
    assert!(!far.expired(at(0)));
    assert!(far.expires_at() > at(0));
    let mut doc: serde_json::Value = serde_json::from_slice(&r.to_json().unwrap()).unwrap();
    doc["leases"][0]["expiration"] = u64::MAX.into();
    let s = Registry::from_json(doc.to_string().as_bytes()).unwrap();
    assert!(s.next_expiry().is_some());
}

/// One step of a random history.
#[derive(Debug, Clone)]
enum Op {
    Acquire {
        node: u8,
        prev: Option<u8>,
        ttl: u64,
    },
    Renew {
        node: u8,
        ttl: u64,
    },
    Release {
        node: u8,
    },
    Expire,
    Advance {
        ms: u64,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..16, proptest::option::of(0u8..16), 1u64..8)
            .prop_map(|(node, prev, ttl)| Op::Acquire { node, prev, ttl }),
        2 => (0u8..16, 1u64..8).prop_map(|(node, ttl)| Op::Renew { node, ttl }),
        1 => (0u8..16).prop_map(|node| Op::Release { node }),
        1 => Just(Op::Expire),
        3 => (0u64..4_000).prop_map(|ms| Op::Advance { ms }),
    ]
}

proptest! {
    /// Many nodes acquiring, renewing, releasing and expiring in any order:
    /// a subnet is never leased to two nodes while the first lease is live
    /// (not released, not past its expiration), each node holds at most one
    /// lease, renewals succeed exactly while the lease is the caller's and
    /// live, and the event log replayed from any earlier snapshot (or from
    /// the empty table) gives the current table.
    #[test]
    fn random_histories_keep_the_invariants(
        subnet_len in 24u8..=26,
        ops in proptest::collection::vec(op(), 1..120),
    ) {
        let c = NetConf::parse(&format!(r#"{{"Network":"10.244.0.0/22","SubnetLen":{subnet_len}}}"#)).unwrap();
        let all: Vec<Ipv4Net> = c.subnets().collect();
        let mut r = Registry::new(c);
        let mut now_ms = 0u64;
        // What every node was last told it holds.
        let mut held: HashMap<u8, Ipv4Net> = HashMap::new();
        // The last grant of each subnet: holder and expiration.
        let mut granted: HashMap<Ipv4Net, (Ipv4Addr, u64)> = HashMap::new();
        let mut snapshots = vec![r.list()];
        for op in ops {
            let now = at(now_ms);
            let live = |g: &HashMap<Ipv4Net, (Ipv4Addr, u64)>, s: &Ipv4Net| {
                g.get(s).filter(|(_, exp)| crate::store::unix_secs(now) < *exp).map(|(h, _)| *h)
            };
            match op {
                Op::Acquire { node, prev, ttl } => {
                    let prev = prev.map(|p| all[usize::from(p) % all.len()]);
                    match r.acquire(&req(node, prev, ttl), now) {
                        Ok(l) => {
                            prop_assert!(c.contains_subnet(&l.subnet));
                            if let Some(h) = live(&granted, &l.subnet) {
                                prop_assert_eq!(h, ip(node), "{} re-issued while live", l.subnet);
                            }
                            // A node holding a live lease gets that one.
                            if let Some(s) = held.get(&node) {
                                if live(&granted, s) == Some(ip(node)) {
                                    prop_assert_eq!(*s, l.subnet);
                                }
                            }
                            prop_assert!(!l.expired(now));
                            granted.insert(l.subnet, (ip(node), l.expiration));
                            held.insert(node, l.subnet);
                        }
                        Err(StoreError::OutOfSubnets { .. }) => {
                            let busy = all.iter().filter(|s| live(&granted, s).is_some()).count();
                            prop_assert_eq!(busy, all.len(), "out of subnets with free ones");
                        }
                        Err(e) => prop_assert!(false, "{}", e),
                    }
                }
                Op::Renew { node, ttl } => {
                    if let Some(&s) = held.get(&node) {
                        let ours = live(&granted, &s) == Some(ip(node));
                        match r.renew(s, ip(node), None, ttl, now) {
                            Ok(l) => {
                                prop_assert!(ours, "renewed a lease that was not ours");
                                granted.insert(s, (ip(node), l.expiration));
                            }
                            Err(StoreError::LeaseLost { subnet }) => {
                                prop_assert!(!ours, "lost a live lease");
                                prop_assert_eq!(subnet, s);
                            }
                            Err(e) => prop_assert!(false, "{}", e),
                        }
                    }
                }
                Op::Release { node } => {
                    if let Some(s) = held.remove(&node) {
                        let ours = live(&granted, &s) == Some(ip(node));
                        prop_assert_eq!(r.release(s, ip(node), now), ours);
                        if ours {
                            granted.remove(&s);
                        }
                    }
                }
                Op::Expire => {
                    r.expire(now);
                }
                Op::Advance { ms } => now_ms += ms,
            }
            // The table: one lease per node, each as last granted.
            let snap = r.list();
            let mut ips: Vec<Ipv4Addr> = snap.leases.iter().map(|l| l.attrs.public_ip).collect();
            ips.sort();
            ips.dedup();
            prop_assert_eq!(ips.len(), snap.leases.len(), "a node with two leases");
            for l in &snap.leases {
                prop_assert_eq!(granted.get(&l.subnet), Some(&(l.attrs.public_ip, l.expiration)));
            }
            snapshots.push(snap);
        }
        let now = r.list();
        for snap in &snapshots {
            let mut table: BTreeMap<Ipv4Net, Lease> =
                snap.leases.iter().map(|l| (l.subnet, l.clone())).collect();
            let events = r.events_after(snap.revision).unwrap();
            for w in events.windows(2) {
                prop_assert_eq!(w[0].revision + 1, w[1].revision);
            }
            prop_assert_eq!(events.last().map_or(snap.revision, |e| e.revision), now.revision);
            replay(&mut table, &events);
            prop_assert_eq!(table.into_values().collect::<Vec<_>>(), now.leases.clone());
        }
        // And the durable state reads back to the same table.
        let back = Registry::from_json(&r.to_json().unwrap()).unwrap();
        prop_assert_eq!(back.list(), now);
    }

    /// With a small log, a watch resumes from any revision the log still
    /// covers and is refused (Compacted) from any older one.
    #[test]
    fn compaction_refuses_exactly_the_lost_history(
        cap in 1usize..10,
        ops in proptest::collection::vec(op(), 1..60),
    ) {
        let mut r = Registry::new(conf(SMALL)).with_log_capacity(cap);
        let mut snapshots = vec![r.list()];
        let mut now_ms = 0;
        for op in ops {
            match op {
                Op::Acquire { node, prev, ttl } => {
                    let prev = prev.map(|p| net(&format!("10.244.{}.0/24", p % 4)));
                    let _ = r.acquire(&req(node, prev, ttl), at(now_ms));
                }
                Op::Renew { node, ttl } => {
                    for s in ["10.244.1.0/24", "10.244.2.0/24", "10.244.3.0/24"] {
                        let _ = r.renew(net(s), ip(node), None, ttl, at(now_ms));
                    }
                }
                Op::Release { node } => {
                    for s in ["10.244.1.0/24", "10.244.2.0/24", "10.244.3.0/24"] {
                        r.release(net(s), ip(node), at(now_ms));
                    }
                }
                Op::Expire => {
                    r.expire(at(now_ms));
                }
                Op::Advance { ms } => now_ms += ms,
            }
            snapshots.push(r.list());
        }
        let now = r.list();
        let oldest = r.oldest_revision();
        prop_assert!(now.revision - oldest <= cap as u64);
        for snap in &snapshots {
            match r.events_after(snap.revision) {
                Ok(events) => {
                    prop_assert!(snap.revision >= oldest);
                    let mut table: BTreeMap<Ipv4Net, Lease> =
                        snap.leases.iter().map(|l| (l.subnet, l.clone())).collect();
                    replay(&mut table, &events);
                    prop_assert_eq!(table.into_values().collect::<Vec<_>>(), now.leases.clone());
                }
                Err(StoreError::Compacted { requested, oldest: o }) => {
                    prop_assert_eq!(requested, snap.revision);
                    prop_assert_eq!(o, oldest);
                    prop_assert!(snap.revision < oldest);
                }
                Err(e) => prop_assert!(false, "{}", e),
            }
        }
    }
}

#[derive(Debug, Clone)]
enum MixedOp {
    Acquire { node: u8 },
    Release { node: u8 },
    Put { name: u8, port: u16 },
    Delete { name: u8 },
}

fn mixed_op() -> impl Strategy<Value = MixedOp> {
    prop_oneof![
        1 => (0u8..4).prop_map(|node| MixedOp::Acquire { node }),
        1 => (0u8..4).prop_map(|node| MixedOp::Release { node }),
        3 => (0u8..6, 1u16..4).prop_map(|(name, port)| MixedOp::Put { name, port }),
        1 => (0u8..6).prop_map(|name| MixedOp::Delete { name }),
    ]
}

proptest! {
    /// Leases and objects changing in any order, with small logs: each
    /// change adds exactly one to the one revision; from any earlier list,
    /// each kind's log either says Compacted or, replayed, gives the
    /// current table, with strictly growing revisions; and the state reads
    /// back to the same lists.
    #[test]
    fn mixed_histories_replay_to_the_current_tables(
        cap in 1usize..6,
        ops in proptest::collection::vec(mixed_op(), 1..80),
    ) {
        let mut r = Registry::new(conf(SMALL)).with_log_capacity(cap);
        let mut lists = vec![(r.list(), r.list_objects())];
        for op in ops {
            let before = r.revision();
            let changed = match op {
                MixedOp::Acquire { node } => {
                    r.acquire(&req(node, None, 3600), at(0)).is_ok() && r.revision() != before
                }
                MixedOp::Release { node } => r
                    .list()
                    .leases
                    .iter()
                    .find(|l| l.attrs.public_ip == ip(node))
                    .map(|l| l.subnet)
                    .is_some_and(|s| r.release(s, ip(node), at(0))),
                MixedOp::Put { name, port } => {
                    let name = format!("s{name}");
                    let same = r
                        .get_object(&svc_key(&name))
                        .filter(|o| o.object == svc(&name, port))
                        .map(|o| o.revision);
                    let rev = r.put_object(svc_key(&name), svc(&name, port)).unwrap();
                    // An identical put answers the stored revision.
                    prop_assert_eq!(rev, same.unwrap_or(r.revision()));
                    same.is_none()
                }
                MixedOp::Delete { name } => r.delete_object(&svc_key(&format!("s{name}"))),
            };
            prop_assert_eq!(r.revision(), before + u64::from(changed));
            lists.push((r.list(), r.list_objects()));
        }
        let (leases_now, objects_now) = (r.list(), r.list_objects());
        for (leases, objects) in &lists {
            if let Ok(events) = r.events_after(leases.revision) {
                let mut table: BTreeMap<Ipv4Net, Lease> =
                    leases.leases.iter().map(|l| (l.subnet, l.clone())).collect();
                replay(&mut table, &events);
                prop_assert_eq!(table.into_values().collect::<Vec<_>>(), leases_now.leases.clone());
            }
            match r.object_events_after(objects.revision) {
                Ok(events) => {
                    let mut table: BTreeMap<ObjectKey, StoredObject> =
                        objects.objects.iter().map(|o| (o.key.clone(), o.clone())).collect();
                    let mut last = objects.revision;
                    for e in events {
                        prop_assert!(e.revision > last);
                        last = e.revision;
                        match e.change {
                            ObjectChange::Put { object } => {
                                table.insert(object.key.clone(), object);
                            }
                            ObjectChange::Deleted { key } => {
                                table.remove(&key);
                            }
                        }
                    }
                    prop_assert_eq!(table.into_values().collect::<Vec<_>>(), objects_now.objects.clone());
                }
                Err(StoreError::Compacted { oldest, .. }) => {
                    prop_assert!(objects.revision < oldest);
                    prop_assert_eq!(oldest, r.oldest_object_revision());
                }
                Err(e) => prop_assert!(false, "{}", e),
            }
        }
        let back = Registry::from_json(&r.to_json().unwrap()).unwrap();
        prop_assert_eq!(back.list(), leases_now);
        prop_assert_eq!(back.list_objects(), objects_now);
    }
}
