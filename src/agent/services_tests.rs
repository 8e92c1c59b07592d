use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use control::objects::{Kind, ObjectChange, ObjectKey, StoredObject};
use serde_json::{json, Value};
use vswitch::core::service::{Proto, Scope};

use super::Catalog;

const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 1);

fn catalog() -> Catalog {
    Catalog::new("node-a", GATEWAY)
}

fn key(kind: Kind, name: &str) -> ObjectKey {
    ObjectKey {
        kind,
        namespace: "default".into(),
        name: name.into(),
    }
}

fn put(c: &mut Catalog, kind: Kind, name: &str, object: Value) {
    c.apply(ObjectChange::Put {
        object: StoredObject {
            key: key(kind, name),
            revision: 1,
            object,
        },
    });
}

fn service(name: &str, ip: &str, extra: Value) -> Value {
    let mut v = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"clusterIP": ip, "clusterIPs": [ip], "selector": {"app": name},
                 "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}]}
    });
    if let (Some(spec), Some(extra)) = (v["spec"].as_object_mut(), extra.as_object()) {
        for (k, x) in extra {
            spec.insert(k.clone(), x.clone());
        }
    }
    v
}

fn slice(name: &str, service: &str, endpoints: Value) -> Value {
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": name, "namespace": "default",
                     "labels": {"kubernetes.io/service-name": service}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": endpoints,
    })
}

fn ep(ip: &str, node: &str) -> Value {
    json!({"addresses": [ip], "conditions": {"ready": true}, "nodeName": node})
}

fn vip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn backends(c: &Catalog, ip: &str, port: u16, scope: Scope) -> Vec<SocketAddr> {
    let (p, _) = c
        .table()
        .lookup(vip(ip), port, Proto::Tcp)
        .expect("frontend");
    p.pool(scope).backends.clone()
}

#[test]
fn a_service_and_its_slice_compile_to_a_balanced_port() {
    let mut c = catalog();
    put(
        &mut c,
        Kind::Service,
        "web",
        service("web", "10.96.0.10", json!({})),
    );
    // No slice yet: the port exists and rejects.
    assert!(backends(&c, "10.96.0.10", 80, Scope::Internal).is_empty());
    put(
        &mut c,
        Kind::EndpointSlice,
        "web-abc",
        slice(
            "web-abc",
            "web",
            json!([ep("10.244.1.3", "node-a"), ep("10.244.2.3", "node-b")]),
        ),
    );
    assert!(c.rejected().is_empty(), "{:?}", c.rejected());
    let b = backends(&c, "10.96.0.10", 80, Scope::Internal);
    assert_eq!(b.len(), 2);
    let (p, _) = c.table().lookup(vip("10.96.0.10"), 80, Proto::Tcp).unwrap();
    let local: Vec<bool> = p.spec.endpoints.iter().map(|e| e.local).collect();
    assert_eq!(local, vec![true, false], "nodeName node-a is this node");
    assert_eq!(p.spec.name, "default/web:http");
}

#[test]
fn a_slice_that_arrives_before_its_service_is_used_when_the_service_comes() {
    let mut c = catalog();
    put(
        &mut c,
        Kind::EndpointSlice,
        "web-1",
        slice("web-1", "web", json!([ep("10.244.1.3", "node-a")])),
    );
    assert!(c.table().is_empty());
    put(
        &mut c,
        Kind::Service,
        "web",
        service("web", "10.96.0.10", json!({})),
    );
    assert_eq!(backends(&c, "10.96.0.10", 80, Scope::Internal).len(), 1);
}

#[test]
fn deleting_the_service_removes_its_frontends_and_deleting_the_slice_its_backends() {
    let mut c = catalog();
    put(
        &mut c,
        Kind::Service,
        "web",
        service("web", "10.96.0.10", json!({})),
    );
    put(
        &mut c,
        Kind::EndpointSlice,
        "web-1",
        slice("web-1", "web", json!([ep("10.244.1.3", "node-a")])),
    );
    c.apply(ObjectChange::Deleted {
        key: key(Kind::EndpointSlice, "web-1"),
    });
    assert!(backends(&c, "10.96.0.10", 80, Scope::Internal).is_empty());
    c.apply(ObjectChange::Deleted {
        key: key(Kind::Service, "web"),
    });
    assert!(c.table().is_empty());
}

#[test]
fn a_slice_relabelled_to_another_service_moves_its_endpoints() {
    let mut c = catalog();
    put(
        &mut c,
        Kind::Service,
        "a",
        service("a", "10.96.0.10", json!({})),
    );
    put(
        &mut c,
        Kind::Service,
        "b",
        service("b", "10.96.0.11", json!({})),
    );
    put(
        &mut c,
        Kind::EndpointSlice,
        "s",
        slice("s", "a", json!([ep("10.244.1.3", "node-a")])),
    );
    assert_eq!(backends(&c, "10.96.0.10", 80, Scope::Internal).len(), 1);
    put(
        &mut c,
        Kind::EndpointSlice,
        "s",
        slice("s", "b", json!([ep("10.244.1.3", "node-a")])),
    );
    assert!(backends(&c, "10.96.0.10", 80, Scope::Internal).is_empty());
    assert_eq!(backends(&c, "10.96.0.11", 80, Scope::Internal).len(), 1);
}

#[test]
fn a_node_port_is_reached_at_the_gateway_and_external_ips_as_given() {
    let mut c = catalog();
    let extra = json!({"type": "NodePort", "externalIPs": ["192.0.2.7"], "externalTrafficPolicy": "Local",
        "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080, "nodePort": 30080}]});
    put(
        &mut c,
        Kind::Service,
        "web",
        service("web", "10.96.0.10", extra),
    );
    put(
        &mut c,
        Kind::EndpointSlice,
        "web-1",
        slice(
            "web-1",
            "web",
            json!([ep("10.244.1.3", "node-a"), ep("10.244.2.3", "node-b")]),
        ),
    );
    let (_, scope) = c
        .table()
        .lookup(IpAddr::V4(GATEWAY), 30080, Proto::Tcp)
        .unwrap();
    assert_eq!(scope, Scope::External);
    // externalTrafficPolicy Local: only this node's endpoint for external traffic.
    assert_eq!(backends(&c, "192.0.2.7", 80, Scope::External).len(), 1);
    assert_eq!(backends(&c, "10.96.0.10", 80, Scope::Internal).len(), 2);
}

#[test]
fn a_bad_edit_is_refused_and_the_last_good_version_stays() {
    let mut c = catalog();
    put(
        &mut c,
        Kind::Service,
        "web",
        service("web", "10.96.0.10", json!({})),
    );
    let bad = service(
        "web",
        "10.96.0.10",
        json!({"ports": [{"port": 80, "protocol": "SCTP"}]}),
    );
    put(&mut c, Kind::Service, "web", bad);
    assert!(c.rejected().contains_key(&key(Kind::Service, "web")));
    assert!(c
        .table()
        .lookup(vip("10.96.0.10"), 80, Proto::Tcp)
        .is_some());
    // A good version clears the refusal.
    put(
        &mut c,
        Kind::Service,
        "web",
        service("web", "10.96.0.10", json!({})),
    );
    assert!(c.rejected().is_empty());
}

#[test]
fn an_object_stored_under_another_key_is_refused() {
    let mut c = catalog();
    put(
        &mut c,
        Kind::Service,
        "other",
        service("web", "10.96.0.10", json!({})),
    );
    assert!(c.rejected().contains_key(&key(Kind::Service, "other")));
    assert!(c.table().is_empty());
}

#[test]
fn reset_replaces_everything() {
    let mut c = catalog();
    put(
        &mut c,
        Kind::Service,
        "web",
        service("web", "10.96.0.10", json!({})),
    );
    c.reset(vec![StoredObject {
        key: key(Kind::Service, "db"),
        revision: 5,
        object: service("db", "10.96.0.20", json!({})),
    }]);
    assert!(c
        .table()
        .lookup(vip("10.96.0.10"), 80, Proto::Tcp)
        .is_none());
    assert!(c
        .table()
        .lookup(vip("10.96.0.20"), 80, Proto::Tcp)
        .is_some());
}
