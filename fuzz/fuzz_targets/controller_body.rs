//! The controller's request bodies and wire documents
//! (`control::controller::wire`, `control::store`), deserialized as the
//! HTTP API does it (`serde_json::from_slice`) and applied to a registry
//! with explicit time, plus the subnet keys of its paths and its state
//! file.
//!
//! Input: byte 0 picks the document and the network, bytes 1..9 the time
//! (seconds since the epoch, little-endian, mod 2^35), the rest is the body.
//!
//! Checked: every document that parses serializes and parses back to
//! itself; an acquired lease is a leasable subnet of the network holding
//! the request's value, acquiring again for the same node gives the same
//! subnet, the node can renew and release it; a renewal names the holder
//! the API's rule gives (`RenewRequest::holder`) and renews a lease that
//! holder has; a subnet key reads back to itself; a state file that loads
//! writes out a state file that loads to the same registry.
#![no_main]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use control::controller::wire::{ErrorBody, ReleaseQuery, RenewRequest, WatchQuery};
use control::registry::Registry;
use control::store::{AcquireRequest, Snapshot, WatchEvent};
use control::{parse_subnet_key, subnet_key, LeaseAttrs, LeaseBackend, NetConf};
use libfuzzer_sys::fuzz_target;
use serde::de::DeserializeOwned;
use serde::Serialize;
use twill_fuzz::Reader;

/// Parses `body`; if it parses, checks that it serializes and parses back
/// to the same value.
fn identity<T>(body: &[u8]) -> Option<T>
where
    T: DeserializeOwned + Serialize + PartialEq + std::fmt::Debug,
{
    let v: T = serde_json::from_slice(body).ok()?;
    let again = serde_json::to_vec(&v).expect("serialize");
    let w: T = serde_json::from_slice(&again).expect("what was written reads back");
    assert_eq!(v, w);
    Some(v)
}

fn network(sel: u8) -> NetConf {
    let (net, len) = match sel % 3 {
        0 => ("10.244.0.0/16", 24),
        1 => ("10.0.0.0/28", 30),
        _ => ("192.168.0.0/24", 26),
    };
    NetConf::parse(&format!(
        "{{\"Network\":\"{net}\",\"SubnetLen\":{len},\"Backend\":{{\"Type\":\"vxlan\"}}}}"
    ))
    .expect("fixture net-conf")
}

fn acquire(reg: &mut Registry, req: &AcquireRequest, now: SystemTime) {
    let Ok(lease) = reg.acquire(req, now) else {
        return;
    };
    let conf = *reg.config();
    assert!(
        conf.contains_subnet(&lease.subnet),
        "{} leased",
        lease.subnet
    );
    assert_eq!(lease.attrs, req.attrs);
    let again = reg.acquire(req, now).expect("the same node acquires again");
    assert_eq!(again.subnet, lease.subnet, "a node's lease moved");
    let ip = req.attrs.public_ip;
    let renewed = reg
        .renew(lease.subnet, ip, None, req.ttl_secs, now)
        .expect("the holder renews");
    assert_eq!(renewed.attrs, lease.attrs);
    assert!(reg.release(lease.subnet, ip, now));
    assert!(reg.get(&lease.subnet).is_none());
}

fn renew(reg: &mut Registry, req: &RenewRequest, now: SystemTime) {
    let Ok(holder) = req.holder() else {
        assert!(match (req.attrs, req.public_ip) {
            (None, None) => true,
            (Some(a), Some(ip)) => a.public_ip != ip,
            _ => false,
        });
        return;
    };
    assert!(req.attrs.map(|a| a.public_ip) == Some(holder) || req.public_ip == Some(holder));
    let attrs = LeaseAttrs {
        public_ip: holder,
        backend: LeaseBackend::Udp,
    };
    let acq = AcquireRequest {
        attrs,
        previous: None,
        ttl_secs: 60,
    };
    let lease = reg.acquire(&acq, now).expect("an empty registry leases");
    let renewed = reg
        .renew(lease.subnet, holder, req.attrs, req.ttl_secs, now)
        .expect("the holder renews");
    assert_eq!(renewed.subnet, lease.subnet);
    assert_eq!(renewed.attrs, req.attrs.unwrap_or(attrs));
}

fuzz_target!(|data: &[u8]| {
    let mut r = Reader::new(data);
    let sel = r.u8();
    // Up to the year 3058: the registry caps expirations near the year 4011
    // (`u32::MAX * 15` s), so a later clock would see every lease expired.
    let secs = u64::from_le_bytes(r.array::<8>()) % (1 << 35);
    let now = UNIX_EPOCH + Duration::from_secs(secs);
    let body = r.bytes(usize::MAX);
    let mut reg = Registry::new(network(sel >> 3));
    match sel % 8 {
        0 => {
            if let Some(req) = identity::<AcquireRequest>(body) {
                acquire(&mut reg, &req, now);
            }
        }
        1 => {
            if let Some(req) = identity::<RenewRequest>(body) {
                renew(&mut reg, &req, now);
            }
        }
        2 => {
            identity::<ErrorBody>(body);
        }
        3 => {
            if let Ok(s) = parse_subnet_key(&String::from_utf8_lossy(body)) {
                assert_eq!(
                    parse_subnet_key(&subnet_key(&s)).expect("key reads back"),
                    s
                );
            }
        }
        4 => {
            if let Ok(reg) = Registry::from_json(body) {
                let out = reg.to_json().expect("state writes");
                let back = Registry::from_json(&out).expect("state reads back");
                assert_eq!(back.to_json().expect("state writes"), out);
                assert_eq!(back.list(), reg.list());
            }
        }
        5 => {
            identity::<Snapshot>(body);
        }
        6 => {
            identity::<WatchEvent>(body);
        }
        _ => {
            identity::<ReleaseQuery>(body);
            identity::<WatchQuery>(body);
        }
    }
});
