use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use super::*;

fn ip(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(a, b, c, d))
}

fn ep(d: u8, local: bool, ready: bool, serving: bool, terminating: bool) -> Endpoint {
    Endpoint {
        addr: SocketAddr::new(ip(10, 244, 1, d), 8080),
        local,
        ready,
        serving,
        terminating,
    }
}

fn spec(name: &str, vip: IpAddr, endpoints: Vec<Endpoint>) -> ServicePortSpec {
    ServicePortSpec {
        name: name.into(),
        proto: Proto::Tcp,
        frontends: vec![Frontend {
            ip: vip,
            port: 80,
            proto: Proto::Tcp,
            scope: Scope::Internal,
        }],
        endpoints,
        affinity: None,
        internal_local: false,
        external_local: false,
    }
}

#[test]
fn ready_endpoints_are_used_and_terminating_ones_only_when_none_is_ready() {
    // KEP-1669: serving+terminating endpoints take traffic only when no
    // endpoint is ready.
    let p = Pool::new(
        &[
            ep(3, true, true, true, false),
            ep(4, true, false, true, true),
        ],
        false,
    );
    assert_eq!(p.backends, vec![SocketAddr::new(ip(10, 244, 1, 3), 8080)]);
    let p = Pool::new(
        &[
            ep(4, true, false, true, true),
            ep(5, true, false, false, true),
        ],
        false,
    );
    assert_eq!(p.backends, vec![SocketAddr::new(ip(10, 244, 1, 4), 8080)]);
    let p = Pool::new(&[ep(5, true, false, false, true)], false);
    assert!(p.backends.is_empty());
    assert_eq!(p.pick(7), None);
}

#[test]
fn local_policy_uses_only_local_endpoints_without_fallback() {
    let p = Pool::new(&[ep(3, false, true, true, false)], true);
    assert!(p.backends.is_empty());
    let p = Pool::new(
        &[
            ep(3, false, true, true, false),
            ep(4, true, true, true, false),
        ],
        true,
    );
    assert_eq!(p.backends, vec![SocketAddr::new(ip(10, 244, 1, 4), 8080)]);
}

#[test]
fn frontends_are_found_and_removed_with_their_port() {
    let mut t = ServiceTable::default();
    assert!(t.is_empty());
    let vip = ip(10, 96, 0, 10);
    assert!(t
        .upsert(spec(
            "default/web",
            vip,
            vec![ep(3, true, true, true, false)]
        ))
        .is_empty());
    assert!(t.has_addr(vip));
    let (p, scope) = t.lookup(vip, 80, Proto::Tcp).unwrap();
    assert_eq!(scope, Scope::Internal);
    assert_eq!(
        p.pick(scope, 1),
        Some(SocketAddr::new(ip(10, 244, 1, 3), 8080))
    );
    assert!(t.lookup(vip, 80, Proto::Udp).is_none());
    assert!(t.remove("default/web"));
    assert!(t.is_empty());
    assert!(!t.has_addr(vip));
}

#[test]
fn a_claimed_frontend_moves_and_is_reported() {
    let mut t = ServiceTable::default();
    let vip = ip(192, 0, 2, 7);
    t.upsert(spec("a/one", vip, vec![]));
    let c = t.upsert(spec("b/two", vip, vec![]));
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].previous, "a/one");
    assert_eq!(t.lookup(vip, 80, Proto::Tcp).unwrap().0.spec.name, "b/two");
    // Removing the loser leaves the winner's frontend in place.
    t.remove("a/one");
    assert!(t.lookup(vip, 80, Proto::Tcp).is_some());
    t.remove("b/two");
    assert!(!t.has_addr(vip));
}

#[test]
fn an_updated_port_keeps_its_id() {
    let mut t = ServiceTable::default();
    let vip = ip(10, 96, 0, 10);
    t.upsert(spec(
        "default/web",
        vip,
        vec![ep(3, true, true, true, false)],
    ));
    let id = t.get("default/web").unwrap().id;
    t.upsert(spec(
        "default/web",
        vip,
        vec![ep(4, true, true, true, false)],
    ));
    assert_eq!(t.get("default/web").unwrap().id, id);
    t.upsert(spec("default/db", ip(10, 96, 0, 11), vec![]));
    assert_ne!(t.get("default/db").unwrap().id, id);
}
