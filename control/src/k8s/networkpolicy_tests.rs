use std::net::Ipv4Addr;

use serde_json::json;

use super::*;
use crate::k8s::Labels;

const EXAMPLE: &str = include_str!("fixtures/networkpolicy.yaml");
const FULL: &str = include_str!("fixtures/networkpolicy-full.yaml");

fn yaml(text: &str) -> Value {
    serde_norway::from_str(text).unwrap()
}

fn policy(spec: Value) -> Value {
    json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "p", "namespace": "ns"}, "spec": spec})
}

fn read(spec: Value) -> NetworkPolicy {
    NetworkPolicy::from_value(policy(spec)).unwrap()
}

/// The field an invalid spec is refused for.
fn invalid_field(spec: Value) -> String {
    match NetworkPolicy::from_value(policy(spec.clone())) {
        Err(K8sError::Invalid { field, .. }) => field,
        other => panic!("{spec}: expected invalid, got {other:?}"),
    }
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn labels(pairs: &[(&str, &str)]) -> LabelSelector {
    LabelSelector {
        match_labels: pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect::<Labels>(),
        match_expressions: Vec::new(),
    }
}

fn tcp(port: u16) -> PolicyPort {
    PolicyPort {
        protocol: Protocol::Tcp,
        port: Some(PortRef::Number(port)),
        end_port: None,
    }
}

#[test]
fn reads_the_upstream_example() {
    let p = NetworkPolicy::from_value(yaml(EXAMPLE)).unwrap();
    assert_eq!(
        (p.namespace(), p.name()),
        ("default", "test-network-policy")
    );
    assert_eq!(p.pod_selector(), &labels(&[("role", "db")]));
    let ingress = p.ingress().unwrap();
    assert_eq!(
        ingress,
        [PolicyRule {
            ports: vec![tcp(6379)],
            peers: vec![
                Peer::IpBlock(IpBlock {
                    cidr: net("172.17.0.0/16"),
                    except: vec![net("172.17.1.0/24")],
                }),
                Peer::Pods {
                    pod_selector: None,
                    namespace_selector: Some(labels(&[("project", "myproject")])),
                },
                Peer::Pods {
                    pod_selector: Some(labels(&[("role", "frontend")])),
                    namespace_selector: None,
                },
            ],
        }]
    );
    assert_eq!(
        p.egress().unwrap(),
        [PolicyRule {
            ports: vec![tcp(5978)],
            peers: vec![Peer::IpBlock(IpBlock {
                cidr: net("10.0.0.0/24"),
                except: vec![],
            })],
        }]
    );
    assert_eq!(p.value(), &yaml(EXAMPLE));
}

#[test]
fn reads_every_field() {
    let p = NetworkPolicy::from_value(yaml(FULL)).unwrap();
    let ingress = p.ingress().unwrap();
    assert_eq!(ingress.len(), 2);
    assert_eq!(
        ingress[0].ports,
        [
            PolicyPort {
                protocol: Protocol::Tcp,
                port: Some(PortRef::Name("http".into())),
                end_port: None,
            },
            PolicyPort {
                protocol: Protocol::Tcp,
                port: Some(PortRef::Name("metrics".into())),
                end_port: None,
            },
        ]
    );
    let Peer::Pods {
        pod_selector: Some(pods),
        namespace_selector: None,
    } = &ingress[0].peers[0]
    else {
        panic!("{:?}", ingress[0].peers[0]);
    };
    assert_eq!(pods.match_expressions.len(), 2);
    assert_eq!(pods.match_expressions[0].operator, crate::k8s::Operator::In);
    assert_eq!(pods.match_expressions[0].values, ["frontend", "edge"]);
    // A rule without peers: from anywhere, UDP on every port.
    assert_eq!(
        ingress[1],
        PolicyRule {
            ports: vec![PolicyPort {
                protocol: Protocol::Udp,
                port: None,
                end_port: None
            }],
            peers: vec![],
        }
    );
    let egress = p.egress().unwrap();
    assert_eq!(egress.len(), 3);
    assert!(matches!(
        &egress[0].peers[0],
        Peer::Pods {
            pod_selector: Some(_),
            namespace_selector: Some(_)
        }
    ));
    assert_eq!(
        egress[1].ports,
        [PolicyPort {
            protocol: Protocol::Tcp,
            port: Some(PortRef::Number(32000)),
            end_port: Some(32768),
        }]
    );
    let Peer::IpBlock(all) = &egress[1].peers[0] else {
        panic!()
    };
    assert!(all.contains(Ipv4Addr::new(8, 8, 8, 8).into()));
    assert!(!all.contains(Ipv4Addr::new(10, 1, 2, 3).into()));
    assert!(!all.contains(Ipv4Addr::new(169, 254, 169, 254).into()));
    assert!(!all.contains("2001:db8::1".parse().unwrap()));
    assert_eq!(
        egress[1].peers[1],
        Peer::IpBlock(IpBlock {
            cidr: net("2001:db8::/32"),
            except: vec![]
        })
    );
    assert_eq!(
        egress[2],
        PolicyRule {
            ports: vec![],
            peers: vec![]
        }
    );
}

#[test]
fn policy_types_default_to_ingress_only_without_egress_rules() {
    let p = read(json!({"podSelector": {}}));
    assert!(p.pod_selector().is_empty());
    assert_eq!(p.ingress(), Some(&[][..]), "deny all ingress");
    assert_eq!(p.egress(), None);
    let p = read(json!({"ingress": [{}], "egress": []}));
    assert_eq!(p.ingress().map(<[_]>::len), Some(1));
    assert_eq!(p.egress(), None);
    // No spec at all: still an ingress policy for every pod.
    let p = NetworkPolicy::from_value(json!({"apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy", "metadata": {"name": "p"}}))
    .unwrap();
    assert_eq!(
        (p.namespace(), p.ingress(), p.egress()),
        ("default", Some(&[][..]), None)
    );
}

#[test]
fn policy_types_default_to_ingress_and_egress_when_egress_rules_exist() {
    let p = read(json!({"egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8"}}]}]}));
    assert_eq!(p.ingress(), Some(&[][..]));
    assert_eq!(p.egress().map(<[_]>::len), Some(1));
    let p = read(json!({"policyTypes": [], "egress": [{}]}));
    assert!(p.ingress().is_some() && p.egress().is_some());
}

#[test]
fn explicit_policy_types_decide_the_directions() {
    let p = read(json!({"policyTypes": ["Egress"], "ingress": [{}]}));
    assert_eq!(
        p.ingress(),
        None,
        "ingress rules of an egress-only policy are ignored"
    );
    assert_eq!(p.egress(), Some(&[][..]), "deny all egress");
    let p = read(json!({"policyTypes": ["Ingress", "Egress"]}));
    assert_eq!((p.ingress(), p.egress()), (Some(&[][..]), Some(&[][..])));
    let p = read(json!({"policyTypes": ["Ingress", "Ingress"]}));
    assert_eq!((p.ingress(), p.egress()), (Some(&[][..]), None));
}

#[test]
fn invalid_policy_types_are_refused() {
    assert_eq!(
        invalid_field(json!({"policyTypes": ["foo"]})),
        "spec.policyTypes[0]"
    );
    assert_eq!(
        invalid_field(json!({"policyTypes": ["ingress"]})),
        "spec.policyTypes[0]"
    );
    assert_eq!(
        invalid_field(json!({"policyTypes": ["Ingress", "Egress", "Ingress"]})),
        "spec.policyTypes"
    );
    assert_eq!(
        invalid_field(json!({"policyTypes": "Ingress"})),
        "spec.policyTypes"
    );
}

#[test]
fn sctp_is_refused_naming_the_field() {
    let e = NetworkPolicy::from_value(policy(
        json!({"ingress": [{"ports": [{"port": 80}, {"protocol": "SCTP", "port": 7777}]}]}),
    ))
    .unwrap_err();
    match &e {
        K8sError::Unsupported { field, reason, .. } => {
            assert_eq!(field, "spec.ingress[0].ports[1].protocol");
            assert!(reason.contains("TCP and UDP only"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    assert!(e
        .to_string()
        .starts_with("NetworkPolicy ns/p: spec.ingress[0].ports[1].protocol: "));
}

/// validation_test.go: invalid ports.
#[test]
fn invalid_ports_are_refused() {
    let port = |p: Value| json!({"ingress": [{"ports": [p]}]});
    for (p, field) in [
        (
            json!({"protocol": "MAGIC", "port": 80}),
            "spec.ingress[0].ports[0].protocol",
        ),
        (json!({"port": 123456789}), "spec.ingress[0].ports[0].port"),
        (json!({"port": 0}), "spec.ingress[0].ports[0].port"),
        (json!({"port": "!@#$"}), "spec.ingress[0].ports[0].port"),
        (json!({"port": "80"}), "spec.ingress[0].ports[0].port"),
        (json!({"port": "-http"}), "spec.ingress[0].ports[0].port"),
        (json!({"port": "ht--tp"}), "spec.ingress[0].ports[0].port"),
        (
            json!({"port": "a-name-too-long1"}),
            "spec.ingress[0].ports[0].port",
        ),
        (json!({"port": true}), "spec.ingress[0].ports[0].port"),
    ] {
        assert_eq!(invalid_field(port(p.clone())), field, "{p}");
    }
    let p = read(port(json!({"port": "h-t-t-p-15chars"})));
    assert_eq!(
        p.ingress().unwrap()[0].ports[0].port,
        Some(PortRef::Name("h-t-t-p-15chars".into()))
    );
}

/// validation_test.go: "endPort defined with named/string port", "endPort
/// defined without port defined", "port is greater than endPort",
/// "invalid endport range defined".
#[test]
fn end_port_needs_a_numeric_port_not_above_it() {
    let port = |p: Value| json!({"egress": [{"ports": [{"port": 80}, p]}]});
    for p in [
        json!({"port": "http", "endPort": 90}),
        json!({"endPort": 90}),
        json!({"port": 91, "endPort": 90}),
        json!({"port": 80, "endPort": 65536}),
        json!({"port": 80, "endPort": "90"}),
    ] {
        assert_eq!(
            invalid_field(port(p.clone())),
            "spec.egress[0].ports[1].endPort",
            "{p}"
        );
    }
    let p = read(port(json!({"port": 90, "endPort": 90, "protocol": "UDP"})));
    assert_eq!(
        p.egress().unwrap()[0].ports[1],
        PolicyPort {
            protocol: Protocol::Udp,
            port: Some(PortRef::Number(90)),
            end_port: Some(90)
        }
    );
}

/// validation_test.go: "missing from and to type", and ipBlock beside a
/// selector.
#[test]
fn a_peer_needs_exactly_one_kind_of_peer() {
    assert_eq!(
        invalid_field(json!({"ingress": [{"from": [{}]}]})),
        "spec.ingress[0].from[0]"
    );
    assert_eq!(
        invalid_field(json!({"egress": [{"to": [{}]}]})),
        "spec.egress[0].to[0]"
    );
    for peer in [
        json!({"ipBlock": {"cidr": "10.0.0.0/8"}, "podSelector": {}}),
        json!({"ipBlock": {"cidr": "10.0.0.0/8"}, "namespaceSelector": {}}),
    ] {
        assert_eq!(
            invalid_field(json!({"ingress": [{"from": [peer]}]})),
            "spec.ingress[0].from[0]"
        );
    }
    let p = read(json!({"ingress": [{"from": [{"podSelector": {}, "namespaceSelector": {}}]}]}));
    assert_eq!(
        p.ingress().unwrap()[0].peers,
        [Peer::Pods {
            pod_selector: Some(LabelSelector::everything()),
            namespace_selector: Some(LabelSelector::everything()),
        }]
    );
}

#[test]
fn invalid_selectors_are_refused() {
    let bad = json!({"matchLabels": {"-": "x"}});
    assert_eq!(
        invalid_field(json!({"podSelector": bad})),
        "spec.podSelector.matchLabels.-"
    );
    assert_eq!(
        invalid_field(json!({"ingress": [{"from": [{"namespaceSelector": bad}]}]})),
        "spec.ingress[0].from[0].namespaceSelector.matchLabels.-"
    );
    assert_eq!(
        invalid_field(json!({"egress": [{"to": [{"podSelector":
            {"matchExpressions": [{"key": "a", "operator": "In"}]}}]}]})),
        "spec.egress[0].to[0].podSelector.matchExpressions[0].values"
    );
}

/// validation_test.go: "missing cidr field", "invalid cidr format",
/// "except field is an empty string".
#[test]
fn cidrs_must_parse() {
    let block = |b: Value| json!({"ingress": [{"from": [{"ipBlock": b}]}]});
    for (b, field) in [
        (json!({}), "spec.ingress[0].from[0].ipBlock.cidr"),
        (json!({"cidr": ""}), "spec.ingress[0].from[0].ipBlock.cidr"),
        (
            json!({"cidr": "192.168.5.6"}),
            "spec.ingress[0].from[0].ipBlock.cidr",
        ),
        (
            json!({"cidr": "fe80::/129"}),
            "spec.ingress[0].from[0].ipBlock.cidr",
        ),
        (
            json!({"cidr": "10.0.0.0/8", "except": [""]}),
            "spec.ingress[0].from[0].ipBlock.except[0]",
        ),
        (
            json!({"cidr": "10.0.0.0/8", "except": ["10.1.0.0"]}),
            "spec.ingress[0].from[0].ipBlock.except[0]",
        ),
    ] {
        assert_eq!(invalid_field(block(b.clone())), field, "{b}");
    }
    // Host bits are cleared, as ParseCIDRSloppy does.
    let p = read(block(
        json!({"cidr": "192.168.5.6/24", "except": ["192.168.5.7/30"]}),
    ));
    assert_eq!(
        p.ingress().unwrap()[0].peers,
        [Peer::IpBlock(IpBlock {
            cidr: net("192.168.5.0/24"),
            except: vec![net("192.168.5.4/30")]
        })]
    );
}

/// validation_test.go: "except IP is outside of CIDR range".
#[test]
fn except_outside_cidr_is_invalid() {
    let block = |cidr: &str, except: &str| json!({"egress": [{"to": [{"ipBlock": {"cidr": cidr, "except": ["10.0.0.0/9", except]}}]}]});
    for (cidr, except) in [
        ("10.0.0.0/8", "192.168.9.1/24"),
        ("10.0.0.0/8", "fe80::/64"),
        ("10.0.0.0/8", "0.0.0.0/0"),
        ("10.0.0.0/8", "10.0.0.0/8"),
    ] {
        assert_eq!(
            invalid_field(block(cidr, except)),
            "spec.egress[0].to[0].ipBlock.except[1]",
            "{cidr} except {except}"
        );
    }
}

/// validation_test.go: "except IP is not strictly within CIDR range", and
/// the IPv6 cases.
#[test]
fn except_must_be_strictly_inside() {
    let block = |cidr: &str, except: &str| json!({"ingress": [{"from": [{"ipBlock": {"cidr": cidr, "except": [except]}}]}]});
    assert!(NetworkPolicy::from_value(policy(block("192.168.0.0/24", "192.168.0.0/24"))).is_err());
    assert!(
        NetworkPolicy::from_value(policy(block("fd00:192:168::/48", "fd00:192:169::/64"))).is_err()
    );
    assert!(
        NetworkPolicy::from_value(policy(block("fd00:192:168::/48", "fd00:192:168:1::/64")))
            .is_ok()
    );
    assert!(NetworkPolicy::from_value(policy(block("192.168.0.0/24", "192.168.0.128/25"))).is_ok());
}

#[test]
fn rules_and_peers_must_be_objects_and_lists() {
    assert_eq!(invalid_field(json!({"ingress": {}})), "spec.ingress");
    assert_eq!(invalid_field(json!({"ingress": [[]]})), "spec.ingress[0]");
    assert_eq!(
        invalid_field(json!({"ingress": [{"from": {}}]})),
        "spec.ingress[0].from"
    );
    assert_eq!(
        invalid_field(json!({"egress": [{"ports": [7]}]})),
        "spec.egress[0].ports[0]"
    );
    assert_eq!(invalid_field(json!([])), "spec");
}
