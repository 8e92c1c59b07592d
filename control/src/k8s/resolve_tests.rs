//! Named after the kube-proxy behaviour each test mirrors
//! (pkg/proxy/servicechangetracker.go, endpointslicecache.go,
//! pkg/api/v1/service's ExternalPolicyLocal).

use serde_json::{json, Value};

use super::*;

fn service(spec: Value) -> Service {
    Service::from_value(json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "web", "namespace": "shop"}, "spec": spec}))
    .unwrap()
}

fn slice_in(ns: &str, name: &str, svc: &str, ports: Value, endpoints: Value) -> EndpointSlice {
    EndpointSlice::from_value(json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": name, "namespace": ns,
            "labels": {"kubernetes.io/service-name": svc}},
        "addressType": "IPv4", "ports": ports, "endpoints": endpoints,
    }))
    .unwrap()
}

fn slice(name: &str, ports: Value, endpoints: Value) -> EndpointSlice {
    slice_in("shop", name, "web", ports, endpoints)
}

fn addrs(p: &ResolvedPort) -> Vec<String> {
    p.endpoints.iter().map(|e| e.addr.to_string()).collect()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn two_ports() -> Service {
    service(json!({"clusterIP": "10.96.1.1", "ports": [
        {"name": "http", "port": 80, "targetPort": "http"},
        {"name": "dns", "port": 53, "protocol": "UDP"},
    ]}))
}

#[test]
fn fixtures_resolve_to_the_slice_ports_numbers() {
    let svc = Service::from_value(
        serde_norway::from_str(include_str!("fixtures/clusterip.yaml")).unwrap(),
    )
    .unwrap();
    let es = EndpointSlice::from_value(
        serde_norway::from_str(include_str!("fixtures/endpointslice.yaml")).unwrap(),
    )
    .unwrap();
    let ports = resolve(&svc, &[&es]);
    assert_eq!(ports.len(), 2);
    assert_eq!(ports[0].name, "default/web:http");
    assert_eq!(ports[0].port, 80);
    assert_eq!(ports[0].cluster_ips, [ip("10.96.41.17")]);
    assert_eq!(
        addrs(&ports[0]),
        ["10.244.1.7:8080", "10.244.2.9:8080", "10.244.2.11:8080"]
    );
    let term = &ports[0].endpoints[1];
    assert!(term.terminating && term.serving && !term.ready);
    assert_eq!(term.node_name.as_deref(), Some("node-b"));
    assert_eq!(ports[1].name, "default/web:metrics");
    assert_eq!(ports[1].endpoints[0].addr.port(), 9090);
}

#[test]
fn should_skip_service_headless_externalname_and_without_cluster_ip() {
    let es = slice(
        "s",
        json!([{"port": 5432}]),
        json!([{"addresses": ["10.244.1.2"]}]),
    );
    for spec in [
        json!({"clusterIP": "None", "ports": [{"port": 5432}]}),
        json!({"type": "ExternalName", "externalName": "db.example.com", "ports": [{"port": 5432}]}),
        json!({"ports": [{"port": 5432}]}),
    ] {
        assert_eq!(resolve(&service(spec.clone()), &[&es]), [], "{spec}");
    }
}

#[test]
fn endpoint_port_matches_service_port_by_name_and_protocol() {
    let svc = two_ports();
    // "dns" in slice a is TCP (the default): it does not match the UDP port.
    let a = slice(
        "a",
        json!([{"name": "http", "port": 8080}, {"name": "dns", "port": 5353}]),
        json!([{"addresses": ["10.244.1.2"]}]),
    );
    let b = slice(
        "b",
        json!([{"name": "dns", "port": 53, "protocol": "UDP"}]),
        json!([{"addresses": ["10.244.1.3"]}]),
    );
    let ports = resolve(&svc, &[&a, &b]);
    assert_eq!(ports[0].name, "shop/web:http");
    assert_eq!(addrs(&ports[0]), ["10.244.1.2:8080"]);
    assert_eq!(ports[1].protocol, Protocol::Udp);
    assert_eq!(addrs(&ports[1]), ["10.244.1.3:53"]);
}

#[test]
fn unnamed_service_port_matches_the_unnamed_slice_port() {
    let svc =
        service(json!({"clusterIP": "10.96.1.1", "ports": [{"port": 80, "targetPort": 8080}]}));
    let es = slice(
        "a",
        json!([{"port": 8080}]),
        json!([{"addresses": ["10.244.1.2"]}]),
    );
    let named = slice(
        "b",
        json!([{"name": "http", "port": 9999}]),
        json!([{"addresses": ["10.244.1.9"]}]),
    );
    let ports = resolve(&svc, &[&es, &named]);
    assert_eq!(ports[0].name, "shop/web");
    assert_eq!(addrs(&ports[0]), ["10.244.1.2:8080"]);
}

#[test]
fn slices_belong_by_service_name_label_and_namespace() {
    let svc = service(json!({"clusterIP": "10.96.1.1", "ports": [{"port": 80}]}));
    let other_ns = slice_in(
        "other",
        "a",
        "web",
        json!([{"port": 80}]),
        json!([{"addresses": ["10.0.0.1"]}]),
    );
    let other_svc = slice_in(
        "shop",
        "b",
        "api",
        json!([{"port": 80}]),
        json!([{"addresses": ["10.0.0.2"]}]),
    );
    let mine = slice(
        "c",
        json!([{"port": 80}]),
        json!([{"addresses": ["10.0.0.3"]}]),
    );
    let ports = resolve(&svc, &[&other_ns, &other_svc, &mine]);
    assert_eq!(addrs(&ports[0]), ["10.0.0.3:80"]);
}

#[test]
fn endpoints_of_several_slices_are_merged_and_sorted() {
    let svc = service(json!({"clusterIP": "10.96.1.1", "ports": [{"port": 80}]}));
    let a = slice(
        "a",
        json!([{"port": 80}]),
        json!([{"addresses": ["10.0.0.9"]}, {"addresses": ["10.0.0.1"]}]),
    );
    let b = slice(
        "b",
        json!([{"port": 80}]),
        json!([{"addresses": ["10.0.0.5"]}]),
    );
    assert_eq!(
        addrs(&resolve(&svc, &[&a, &b])[0]),
        ["10.0.0.1:80", "10.0.0.5:80", "10.0.0.9:80"]
    );
}

#[test]
fn an_endpoint_in_two_slices_appears_once_preferring_the_non_terminating_copy() {
    // endpointslicecache.go addEndpoints: a pod IP reused before the old
    // Pod is gone; prefer the running pod over the terminating one, in
    // whichever order the slices come.
    let svc = service(json!({"clusterIP": "10.96.1.1", "ports": [{"port": 80}]}));
    let old = slice(
        "old",
        json!([{"port": 80}]),
        json!([{"addresses": ["10.0.0.1"], "nodeName": "n1",
        "conditions": {"ready": false, "serving": true, "terminating": true}}]),
    );
    let new = slice(
        "new",
        json!([{"port": 80}]),
        json!([{"addresses": ["10.0.0.1"], "nodeName": "n2"}]),
    );
    for order in [[&old, &new], [&new, &old]] {
        let p = &resolve(&svc, &order)[0];
        assert_eq!(p.endpoints.len(), 1);
        assert_eq!(p.endpoints[0].node_name.as_deref(), Some("n2"));
        assert!(p.endpoints[0].ready && !p.endpoints[0].terminating);
    }
}

#[test]
fn an_endpoint_moving_between_slices_appears_once_preferring_the_ready_copy() {
    let svc = service(json!({"clusterIP": "10.96.1.1", "ports": [{"port": 80}]}));
    let a = slice(
        "a",
        json!([{"port": 80}]),
        json!([{"addresses": ["10.0.0.1"], "conditions": {"ready": false}}]),
    );
    let b = slice(
        "b",
        json!([{"port": 80}]),
        json!([{"addresses": ["10.0.0.1"], "conditions": {"ready": true}}]),
    );
    for order in [[&a, &b], [&b, &a]] {
        let p = &resolve(&svc, &order)[0];
        assert_eq!(p.endpoints.len(), 1);
        assert!(p.endpoints[0].ready);
    }
}

#[test]
fn endpoint_address_is_the_first_of_addresses() {
    let svc = service(json!({"clusterIP": "10.96.1.1", "ports": [{"port": 80}]}));
    let es = slice(
        "a",
        json!([{"port": 80}]),
        json!([{"addresses": ["10.0.0.1", "10.0.0.2"]}]),
    );
    assert_eq!(addrs(&resolve(&svc, &[&es])[0]), ["10.0.0.1:80"]);
}

#[test]
fn selectorless_service_uses_the_slices_made_for_it() {
    let svc = service(json!({"clusterIP": "10.96.1.1", "ports": [{"name": "pg", "port": 5432}]}));
    assert_eq!(svc.spec().selector, None);
    let es = slice(
        "manual",
        json!([{"name": "pg", "port": 5432}]),
        json!([{"addresses": ["192.168.100.7"]}]),
    );
    assert_eq!(addrs(&resolve(&svc, &[&es])[0]), ["192.168.100.7:5432"]);
}

#[test]
fn service_port_without_matching_slice_port_has_no_endpoints() {
    let svc = two_ports();
    let es = slice(
        "a",
        json!([{"name": "http", "port": 8080}]),
        json!([{"addresses": ["10.0.0.1"]}]),
    );
    let ports = resolve(&svc, &[&es]);
    assert_eq!(ports.len(), 2);
    assert!(ports[1].endpoints.is_empty());
    assert_eq!(resolve(&svc, &[]).len(), 2);
}

#[test]
fn slice_port_without_a_number_is_ignored() {
    let svc = service(json!({"clusterIP": "10.96.1.1", "ports": [{"port": 80}]}));
    let es = slice("a", json!([{}]), json!([{"addresses": ["10.0.0.1"]}]));
    assert!(resolve(&svc, &[&es])[0].endpoints.is_empty());
}

#[test]
fn external_ips_and_vip_mode_load_balancer_ingress_are_frontends() {
    let svc = Service::from_value(
        serde_norway::from_str(include_str!("fixtures/loadbalancer.yaml")).unwrap(),
    )
    .unwrap();
    let p = &resolve(&svc, &[])[0];
    assert_eq!(
        p.external_ips,
        [ip("192.168.100.50"), ip("192.168.100.240")]
    );
    assert_eq!(p.node_port, Some(31080));
    assert_eq!(p.name, "ingress-nginx/ingress:http");
}

#[test]
fn load_balancer_ingress_vips_are_read_whatever_the_type() {
    // servicechangetracker.go reads status.loadBalancer.ingress without
    // looking at spec.type (a controller clears it when the type changes).
    let mut v: Value = serde_norway::from_str(include_str!("fixtures/loadbalancer.yaml")).unwrap();
    v["spec"]["type"] = json!("NodePort");
    let p = &resolve(&Service::from_value(v).unwrap(), &[])[0];
    assert_eq!(
        p.external_ips,
        [ip("192.168.100.50"), ip("192.168.100.240")]
    );
    assert_eq!(p.node_port, Some(31080));
}

#[test]
fn external_policy_local_only_with_an_external_frontend() {
    let local = |spec: Value| resolve(&service(spec), &[])[0].external_local;
    assert!(!local(
        json!({"clusterIP": "10.96.1.1", "externalTrafficPolicy": "Local", "ports": [{"port": 80}]})
    ));
    assert!(local(
        json!({"clusterIP": "10.96.1.1", "externalTrafficPolicy": "Local", "externalIPs": ["192.168.1.1"], "ports": [{"port": 80}]})
    ));
    assert!(local(
        json!({"type": "NodePort", "clusterIP": "10.96.1.1", "externalTrafficPolicy": "Local", "ports": [{"port": 80}]})
    ));
    assert!(!local(
        json!({"type": "NodePort", "clusterIP": "10.96.1.1", "ports": [{"port": 80}]})
    ));
}

#[test]
fn internal_policy_and_client_ip_affinity_are_carried() {
    let p = &resolve(
        &service(
            json!({"clusterIP": "10.96.1.1", "internalTrafficPolicy": "Local",
            "sessionAffinity": "ClientIP", "ports": [{"port": 80}]}),
        ),
        &[],
    )[0];
    assert!(p.internal_local);
    assert_eq!(p.affinity_timeout, Some(Duration::from_secs(10800)));
    let nodeport = serde_json::from_str::<Value>(include_str!("fixtures/nodeport.json")).unwrap();
    let p = &resolve(&Service::from_value(nodeport).unwrap(), &[])[0];
    assert_eq!(p.name, "edge/dns-edge");
    assert_eq!(p.affinity_timeout, Some(Duration::from_secs(600)));
    assert_eq!(
        (p.protocol, p.node_port, p.external_local),
        (Protocol::Udp, Some(30053), true)
    );
}
