use std::collections::HashSet;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use proptest::prelude::*;

use super::*;
use crate::netconf::NetConf;

fn conf(json: &str) -> NetConf {
    NetConf::parse(json).unwrap()
}

fn net(s: &str) -> Ipv4Net {
    s.parse().unwrap()
}

fn ip(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(192, 168, 100, n)
}

const SMALL: &str = r#"{"Network":"10.244.0.0/22","SubnetLen":24}"#;

#[test]
fn reuses_the_lease_carrying_our_public_ip() {
    let c = conf(SMALL);
    let leased = [(net("10.244.2.0/24"), ip(1)), (net("10.244.3.0/24"), ip(2))];
    let got = choose_subnet(&c, &leased, ip(2), Some(net("10.244.1.0/24"))).unwrap();
    assert_eq!(got, Choice::Existing(net("10.244.3.0/24")));
}

#[test]
fn takes_back_the_previous_subnet_when_free() {
    let c = conf(SMALL);
    let leased = [(net("10.244.2.0/24"), ip(1))];
    let got = choose_subnet(&c, &leased, ip(9), Some(net("10.244.3.0/24"))).unwrap();
    assert_eq!(got, Choice::Previous(net("10.244.3.0/24")));
}

#[test]
fn previous_subnet_held_by_another_node_is_not_taken() {
    let c = conf(SMALL);
    let leased = [(net("10.244.3.0/24"), ip(1))];
    let got = choose_subnet(&c, &leased, ip(9), Some(net("10.244.3.0/24"))).unwrap();
    match got {
        Choice::Fresh(s) => assert!(s == net("10.244.1.0/24") || s == net("10.244.2.0/24")),
        other => panic!("{other:?}"),
    }
}

#[test]
fn previous_subnet_outside_the_range_is_not_taken() {
    // SubnetMin defaults to the second subnet: 10.244.0.0/24 is never leased.
    let c = conf(SMALL);
    let got = choose_subnet(&c, &[], ip(9), Some(net("10.244.0.0/24"))).unwrap();
    assert!(matches!(got, Choice::Fresh(s) if s != net("10.244.0.0/24")));
    // Nor one of another length, or not on its boundary.
    let got = choose_subnet(&c, &[], ip(9), Some(net("10.244.1.0/25"))).unwrap();
    assert!(matches!(got, Choice::Fresh(_)));
}

#[test]
fn a_lease_outside_the_range_is_not_reused() {
    let c = conf(SMALL);
    let leased = [(net("10.250.0.0/24"), ip(1))];
    let got = choose_subnet(&c, &leased, ip(1), None).unwrap();
    assert!(matches!(got, Choice::Fresh(_)));
}

#[test]
fn out_of_subnets_is_a_clear_error() {
    let c = conf(SMALL);
    let leased = [
        (net("10.244.1.0/24"), ip(1)),
        (net("10.244.2.0/24"), ip(2)),
        (net("10.244.3.0/24"), ip(3)),
    ];
    let err = choose_subnet(&c, &leased, ip(4), None).unwrap_err();
    assert!(
        matches!(err, StoreError::OutOfSubnets { count: 3, .. }),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        "out of subnets: all 3 subnets of 10.244.0.0/22 (/24) are leased"
    );
    // The node that holds one still gets its own back.
    assert_eq!(
        choose_subnet(&c, &leased, ip(2), None).unwrap(),
        Choice::Existing(net("10.244.2.0/24"))
    );
}

#[test]
fn respects_subnet_min_and_max() {
    let c =
        conf(r#"{"Network":"10.244.0.0/16","SubnetMin":"10.244.10.0","SubnetMax":"10.244.12.0"}"#);
    let mut leased = Vec::new();
    for n in 1..=3u8 {
        let s = choose_subnet(&c, &leased, ip(n), None).unwrap().subnet();
        assert!(
            (net("10.244.10.0/24")..=net("10.244.12.0/24")).contains(&s),
            "{s}"
        );
        leased.push((s, ip(n)));
    }
    assert!(matches!(
        choose_subnet(&c, &leased, ip(4), None),
        Err(StoreError::OutOfSubnets { count: 3, .. })
    ));
}

#[test]
fn nodes_joining_at_once_mostly_start_apart() {
    // With no leases at all, different public IPs should mostly choose
    // different subnets, so that concurrent atomic claims rarely collide.
    let c = conf(r#"{"Network":"10.244.0.0/16"}"#);
    let firsts: HashSet<Ipv4Net> = (1..=50u8)
        .map(|n| choose_subnet(&c, &[], ip(n), None).unwrap().subnet())
        .collect();
    assert!(firsts.len() > 40, "{} distinct of 50", firsts.len());
}

proptest! {
    /// Allocating for many nodes in turn never hands out a leased subnet,
    /// never leaves the range, gives a node that already holds a lease that
    /// lease, and runs out exactly when every subnet is taken.
    #[test]
    fn allocation_never_double_assigns(
        len in 20u8..=26,
        nodes in proptest::collection::vec(any::<u32>(), 1..80),
        previous in proptest::collection::vec(any::<Option<u8>>(), 80),
    ) {
        let c = NetConf::parse(&format!(
            r#"{{"Network":"10.244.0.0/18","SubnetLen":{len}}}"#
        )).unwrap();
        let all: Vec<Ipv4Net> = c.subnets().collect();
        let mut leased: Vec<(Ipv4Net, Ipv4Addr)> = Vec::new();
        for (i, raw) in nodes.iter().enumerate() {
            let public = Ipv4Addr::from(*raw);
            let prev = previous[i].map(|k| all[usize::from(k) % all.len()]);
            match choose_subnet(&c, &leased, public, prev) {
                Ok(Choice::Existing(s)) => {
                    prop_assert!(leased.contains(&(s, public)));
                }
                Ok(choice) => {
                    let s = choice.subnet();
                    prop_assert!(c.contains_subnet(&s));
                    prop_assert!(leased.iter().all(|(t, _)| *t != s));
                    if let (Choice::Fresh(_), Some(p)) = (choice, prev) {
                        prop_assert!(leased.iter().any(|(t, _)| *t == p));
                    }
                    leased.push((s, public));
                }
                Err(StoreError::OutOfSubnets { count, .. }) => {
                    prop_assert_eq!(count as usize, all.len());
                    prop_assert_eq!(leased.len(), all.len());
                }
                Err(e) => prop_assert!(false, "{e}"),
            }
        }
    }
}
