//! Manifests of the model: Namespaces, Pods, NetworkPolicies (built the
//! way upstream's policies.go composes them), Services and EndpointSlices,
//! as JSON objects that `twill apply` reads (a `kind: List`).
//!
//! Pure data: nothing here touches the cluster.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use serde_json::{json, Map, Value};

use super::model::{port_name, Protocol, PORTS};

/// Labels, in a stable order.
pub type Labels = BTreeMap<String, String>;

/// `labels(&[("pod", "a")])`.
pub fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// The label the API server puts on every namespace.
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// A namespace's labels in the model: `ns: NAME` and the automatic
/// `kubernetes.io/metadata.name: NAME`.
pub fn default_namespace_labels(ns: &str) -> Labels {
    labels(&[("ns", ns), (NAMESPACE_NAME_LABEL, ns)])
}

/// A pod's labels in the model: `pod: NAME`.
pub fn default_pod_labels(pod: &str) -> Labels {
    labels(&[("pod", pod)])
}

/// A `v1 Namespace`.
pub fn namespace_object(ns: &str, labels: &Labels) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": { "name": ns, "labels": labels },
    })
}

/// A `v1 Pod` as the API server would show it: labels, the node, one
/// container serving ports 80 and 81 on TCP and UDP under upstream's
/// names, and its address.
pub fn pod_object(ns: &str, pod: &str, labels: &Labels, node: &str, ip: Ipv4Addr) -> Value {
    let mut ports = Vec::new();
    for protocol in [Protocol::Tcp, Protocol::Udp] {
        for port in PORTS {
            ports.push(json!({
                "name": port_name(port, protocol),
                "containerPort": port,
                "protocol": protocol.k8s(),
            }));
        }
    }
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": { "name": pod, "namespace": ns, "labels": labels },
        "spec": {
            "nodeName": node,
            "containers": [{ "name": "cont-80-81", "image": "agnhost", "ports": ports }],
        },
        "status": {
            "phase": "Running",
            "podIP": ip.to_string(),
            "podIPs": [{ "ip": ip.to_string() }],
        },
    })
}

/// A `kind: List` of `items`.
pub fn list(items: Vec<Value>) -> Value {
    json!({ "apiVersion": "v1", "kind": "List", "items": items })
}

/// A label selector.
#[derive(Debug, Clone, PartialEq)]
pub struct Selector(Value);

impl Selector {
    /// `{}`: everything.
    pub fn all() -> Selector {
        Selector(json!({}))
    }

    /// `matchLabels`.
    pub fn labels(pairs: &[(&str, &str)]) -> Selector {
        Selector(json!({ "matchLabels": labels(pairs) }))
    }

    /// One `matchExpressions` requirement (`In`, `NotIn`, `Exists`, …).
    pub fn expr(key: &str, operator: &str, values: &[&str]) -> Selector {
        let mut req = json!({ "key": key, "operator": operator });
        if !values.is_empty() {
            req["values"] = json!(values);
        }
        Selector(json!({ "matchExpressions": [req] }))
    }
}

/// One peer of a rule (`from` / `to` entry).
#[derive(Debug, Clone, PartialEq)]
pub struct Peer(Value);

impl Peer {
    /// `podSelector` alone: pods of the policy's namespace.
    pub fn pods(sel: Selector) -> Peer {
        Peer(json!({ "podSelector": sel.0 }))
    }

    /// `namespaceSelector` alone: every pod of the matching namespaces.
    pub fn namespaces(sel: Selector) -> Peer {
        Peer(json!({ "namespaceSelector": sel.0 }))
    }

    /// Both in one peer: pods matching `pods` in namespaces matching `ns`.
    pub fn pods_in(ns: Selector, pods: Selector) -> Peer {
        Peer(json!({ "namespaceSelector": ns.0, "podSelector": pods.0 }))
    }

    /// `ipBlock`.
    pub fn ip_block(cidr: &str, except: &[&str]) -> Peer {
        let mut b = json!({ "cidr": cidr });
        if !except.is_empty() {
            b["except"] = json!(except);
        }
        Peer(json!({ "ipBlock": b }))
    }
}

/// One entry of a rule's `ports`.
#[derive(Debug, Clone, PartialEq)]
pub struct Port(Value);

impl Port {
    /// A number with an explicit protocol.
    pub fn number(port: u16, protocol: Protocol) -> Port {
        Port(json!({ "port": port, "protocol": protocol.k8s() }))
    }

    /// A number, protocol left to the API's default (TCP).
    pub fn number_any(port: u16) -> Port {
        Port(json!({ "port": port }))
    }

    /// A container port name, protocol left to the API's default (TCP).
    pub fn named(name: &str) -> Port {
        Port(json!({ "port": name }))
    }

    /// A container port name with an explicit protocol.
    pub fn named_proto(name: &str, protocol: Protocol) -> Port {
        Port(json!({ "port": name, "protocol": protocol.k8s() }))
    }

    /// A protocol, every port.
    pub fn protocol(protocol: &str) -> Port {
        Port(json!({ "protocol": protocol }))
    }

    /// A number with a protocol spelled as given (e.g. `SCTP`).
    pub fn number_raw(port: u16, protocol: &str) -> Port {
        Port(json!({ "port": port, "protocol": protocol }))
    }

    /// `port` … `end_port` with an explicit protocol.
    pub fn range(port: u16, end_port: u16, protocol: Protocol) -> Port {
        Port(json!({ "port": port, "endPort": end_port, "protocol": protocol.k8s() }))
    }
}

/// One ingress or egress rule: peers (none: everyone) and ports (none:
/// every port).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Rule {
    peers: Vec<Peer>,
    ports: Vec<Port>,
}

impl Rule {
    /// The empty rule: everyone, every port.
    pub fn all() -> Rule {
        Rule::default()
    }

    /// Only these peers.
    pub fn peers(peers: Vec<Peer>) -> Rule {
        Rule {
            peers,
            ports: Vec::new(),
        }
    }

    /// Only these ports (any peer, unless [`Rule::peers`] came first).
    pub fn ports(mut self, ports: Vec<Port>) -> Rule {
        self.ports = ports;
        self
    }

    /// Shorthand for `Rule::all().ports(ports)`.
    pub fn on(ports: Vec<Port>) -> Rule {
        Rule::all().ports(ports)
    }

    fn to_json(&self, peers_key: &str) -> Value {
        let mut m = Map::new();
        if !self.peers.is_empty() {
            m.insert(
                peers_key.into(),
                Value::Array(self.peers.iter().map(|p| p.0.clone()).collect()),
            );
        }
        if !self.ports.is_empty() {
            m.insert(
                "ports".into(),
                Value::Array(self.ports.iter().map(|p| p.0.clone()).collect()),
            );
        }
        Value::Object(m)
    }
}

/// A `networking.k8s.io/v1 NetworkPolicy`. `ingress: Some(vec![])` is
/// upstream's `SetSpecIngressRules()` with no rule: the selected pods are
/// isolated for ingress and nothing is allowed in. `policyTypes` lists
/// every direction that is `Some`.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub namespace: String,
    pub name: String,
    pub pod_selector: Selector,
    pub ingress: Option<Vec<Rule>>,
    pub egress: Option<Vec<Rule>>,
}

impl Policy {
    /// A policy in `namespace` on the pods `pod_selector` selects, with no
    /// direction yet.
    pub fn new(namespace: &str, name: &str, pod_selector: Selector) -> Policy {
        Policy {
            namespace: namespace.into(),
            name: name.into(),
            pod_selector,
            ingress: None,
            egress: None,
        }
    }

    /// Isolates for ingress, allowing what `rules` allow (none: nothing).
    pub fn ingress(mut self, rules: Vec<Rule>) -> Policy {
        self.ingress = Some(rules);
        self
    }

    /// Isolates for egress, allowing what `rules` allow (none: nothing).
    pub fn egress(mut self, rules: Vec<Rule>) -> Policy {
        self.egress = Some(rules);
        self
    }

    /// The object.
    pub fn to_json(&self) -> Value {
        let mut spec = Map::new();
        spec.insert("podSelector".into(), self.pod_selector.0.clone());
        let mut types = Vec::new();
        if let Some(rules) = &self.ingress {
            types.push("Ingress");
            let r = rules.iter().map(|r| r.to_json("from")).collect();
            spec.insert("ingress".into(), Value::Array(r));
        }
        if let Some(rules) = &self.egress {
            types.push("Egress");
            let r = rules.iter().map(|r| r.to_json("to")).collect();
            spec.insert("egress".into(), Value::Array(r));
        }
        spec.insert("policyTypes".into(), json!(types));
        json!({
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": { "name": self.name, "namespace": self.namespace },
            "spec": spec,
        })
    }
}

/// A ClusterIP `v1 Service` in `ns` with one TCP port `port` → `target`.
pub fn service_object(ns: &str, name: &str, cluster_ip: Ipv4Addr, port: u16, target: u16) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": { "name": name, "namespace": ns },
        "spec": {
            "type": "ClusterIP",
            "clusterIP": cluster_ip.to_string(),
            "clusterIPs": [cluster_ip.to_string()],
            "ipFamilies": ["IPv4"],
            "ports": [{ "name": "tcp", "port": port, "protocol": "TCP", "targetPort": target }],
            "sessionAffinity": "None",
        },
    })
}

/// A hand-written EndpointSlice of service `ns/svc`: one ready endpoint
/// `ip` on `node`, TCP port `port`.
pub fn endpoint_slice_object(ns: &str, svc: &str, ip: Ipv4Addr, node: &str, port: u16) -> Value {
    json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "addressType": "IPv4",
        "metadata": {
            "name": format!("{svc}-abcde"),
            "namespace": ns,
            "labels": {
                "kubernetes.io/service-name": svc,
                "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io",
            },
        },
        "endpoints": [{
            "addresses": [ip.to_string()],
            "conditions": { "ready": true, "serving": true, "terminating": false },
            "nodeName": node,
        }],
        "ports": [{ "name": "tcp", "port": port, "protocol": "TCP" }],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_a_rule_less_ingress_policy_is_a_default_deny() {
        let p = Policy::new("x", "deny-ingress", Selector::all()).ingress(vec![]);
        assert_eq!(
            p.to_json()["spec"],
            json!({ "podSelector": {}, "ingress": [], "policyTypes": ["Ingress"] })
        );
    }

    #[test]
    fn model_peers_and_ports_land_where_the_api_puts_them() {
        let p = Policy::new("x", "p", Selector::labels(&[("pod", "a")]))
            .ingress(vec![Rule::peers(vec![Peer::pods_in(
                Selector::expr("ns", "NotIn", &["x"]),
                Selector::labels(&[("pod", "b")]),
            )])
            .ports(vec![Port::range(80, 81, Protocol::Tcp)])])
            .egress(vec![Rule::peers(vec![Peer::ip_block(
                "0.0.0.0/4",
                &["10.244.1.3/32"],
            )])]);
        assert_eq!(
            p.to_json()["spec"],
            json!({
                "podSelector": { "matchLabels": { "pod": "a" } },
                "ingress": [{
                    "from": [{
                        "namespaceSelector": { "matchExpressions": [
                            { "key": "ns", "operator": "NotIn", "values": ["x"] }
                        ] },
                        "podSelector": { "matchLabels": { "pod": "b" } },
                    }],
                    "ports": [{ "port": 80, "endPort": 81, "protocol": "TCP" }],
                }],
                "egress": [{ "to": [{ "ipBlock": { "cidr": "0.0.0.0/4", "except": ["10.244.1.3/32"] } }] }],
                "policyTypes": ["Ingress", "Egress"],
            })
        );
    }

    #[test]
    fn model_pods_carry_upstreams_port_names() {
        let pod = pod_object(
            "x",
            "a",
            &default_pod_labels("a"),
            "node-a",
            Ipv4Addr::new(10, 244, 1, 3),
        );
        let names: Vec<&str> = pod["spec"]["containers"][0]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "serve-80-tcp",
                "serve-81-tcp",
                "serve-80-udp",
                "serve-81-udp"
            ]
        );
        assert_eq!(pod["metadata"]["labels"], json!({ "pod": "a" }));
    }
}
