use serde_json::json;

use super::*;

const FIXTURE: &str = include_str!("fixtures/pod.yaml");

fn fixture() -> Value {
    serde_norway::from_str(FIXTURE).unwrap()
}

fn pod(v: Value) -> Pod {
    Pod::from_value(v).unwrap()
}

fn minimal() -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}})
}

fn field_of(v: Value) -> String {
    match Pod::from_value(v) {
        Err(K8sError::Invalid { field, .. }) => field,
        other => panic!("expected an invalid field, got {other:?}"),
    }
}

#[test]
fn reads_the_fixture() {
    let p = pod(fixture());
    assert_eq!((p.namespace(), p.name()), ("prod", "db-7c9d5b8f6d-x2k9p"));
    assert_eq!(p.labels()["role"], "db");
    assert_eq!(p.node_name(), Some("node-a"));
    assert!(!p.host_network());
    assert_eq!(p.ips(), [Ipv4Addr::new(10, 244, 1, 5)]);
    let ports: Vec<(Option<&str>, u16, Protocol)> = p
        .container_ports()
        .iter()
        .map(|c| (c.name.as_deref(), c.port, c.protocol))
        .collect();
    assert_eq!(
        ports,
        [
            (Some("redis"), 6379, Protocol::Tcp),
            (Some("metrics"), 9121, Protocol::Tcp),
            (Some("dns"), 5353, Protocol::Udp),
            (Some("proxy"), 15001, Protocol::Tcp),
        ]
    );
    assert_eq!(p.value(), &fixture());
}

/// podutil.FindPort: containers, then init containers with
/// `restartPolicy: Always` (sidecars); name and protocol must both match.
#[test]
fn named_ports_resolve_in_containers_and_sidecars() {
    let p = pod(fixture());
    assert_eq!(p.named_port("redis", Protocol::Tcp), Some(6379));
    assert_eq!(p.named_port("redis", Protocol::Udp), None);
    assert_eq!(p.named_port("dns", Protocol::Udp), Some(5353));
    assert_eq!(p.named_port("proxy", Protocol::Tcp), Some(15001));
    assert_eq!(
        p.named_port("never-served", Protocol::Tcp),
        None,
        "a plain init container"
    );
    assert_eq!(
        p.named_port("diameter", Protocol::Tcp),
        None,
        "SCTP is left out"
    );
    assert_eq!(p.named_port("nope", Protocol::Tcp), None);
}

#[test]
fn the_first_container_wins_a_name_used_twice() {
    let mut v = minimal();
    v["spec"] = json!({"containers": [
        {"name": "a", "ports": [{"containerPort": 80, "name": "http"}]},
        {"name": "b", "ports": [{"containerPort": 8080, "name": "http"}]}]});
    assert_eq!(pod(v).named_port("http", Protocol::Tcp), Some(80));
}

#[test]
fn pod_ip_is_read_when_pod_ips_is_absent_and_ipv6_is_dropped() {
    let mut v = minimal();
    v["status"] = json!({"podIP": "10.244.2.7"});
    assert_eq!(pod(v.clone()).ips(), [Ipv4Addr::new(10, 244, 2, 7)]);
    v["status"] = json!({"podIP": "fd00::7", "podIPs": [{"ip": "fd00::7"}]});
    assert!(pod(v.clone()).ips().is_empty());
    v["status"] = json!({"podIP": ""});
    assert!(pod(v.clone()).ips().is_empty());
    v["status"] = json!({"podIPs": [{"ip": "10.0.0.300"}]});
    assert_eq!(field_of(v), "status.podIPs[0].ip");
}

#[test]
fn a_pod_without_spec_or_status_has_nothing() {
    let p = pod(minimal());
    assert_eq!(p.namespace(), "default");
    assert!(p.labels().is_empty() && p.ips().is_empty() && p.container_ports().is_empty());
    assert_eq!(p.node_name(), None);
    let mut v = minimal();
    v["spec"] = json!({"hostNetwork": true, "nodeName": ""});
    let p = pod(v);
    assert!(p.host_network());
    assert_eq!(p.node_name(), None);
}

/// validateContainerPorts: containerPort 1 to 65535, names IANA service
/// names unique within the container, protocol TCP, UDP or SCTP.
#[test]
fn container_ports_are_validated() {
    let with_ports = |ports: Value| {
        let mut v = minimal();
        v["spec"] = json!({"containers": [{"name": "c", "ports": ports}]});
        v
    };
    for (ports, field) in [
        (
            json!([{"name": "x"}]),
            "spec.containers[0].ports[0].containerPort",
        ),
        (
            json!([{"containerPort": 0}]),
            "spec.containers[0].ports[0].containerPort",
        ),
        (
            json!([{"containerPort": 65536}]),
            "spec.containers[0].ports[0].containerPort",
        ),
        (
            json!([{"containerPort": 80, "name": "HTTP"}]),
            "spec.containers[0].ports[0].name",
        ),
        (
            json!([{"containerPort": 80, "name": "1234"}]),
            "spec.containers[0].ports[0].name",
        ),
        (
            json!([{"containerPort": 80, "name": "a-very-long-name"}]),
            "spec.containers[0].ports[0].name",
        ),
        (
            json!([{"containerPort": 80, "name": "a"}, {"containerPort": 81, "name": "a"}]),
            "spec.containers[0].ports[1].name",
        ),
        (
            json!([{"containerPort": 80, "protocol": "ICMP"}]),
            "spec.containers[0].ports[0].protocol",
        ),
    ] {
        assert_eq!(field_of(with_ports(ports.clone())), field, "{ports}");
    }
    let mut v = minimal();
    v["metadata"]["labels"] = json!({"app": "-x"});
    assert_eq!(field_of(v), "metadata.labels.app");
    let mut v = minimal();
    v["spec"] = json!({"hostNetwork": "yes"});
    assert_eq!(field_of(v), "spec.hostNetwork");
}
