//! Kubernetes manifests (`control::k8s`): what `twill service apply -f`,
//! the stores and a static node's manifest directory read from users.
//!
//! Checked: parsing never panics; every object it yields reads back as the
//! same object from its stored JSON (what the stores keep and the agents
//! read), passes the stores' check under its own key, and resolves with
//! the manifest's EndpointSlices without panicking, to ports whose
//! endpoints carry the ports and addresses of those slices. The policy
//! kinds hold what their readers promise: a Namespace carries its name
//! label, a NetworkPolicy's port ranges do not run backwards and its
//! `except`s lie strictly inside their `cidr`, and every selector can be
//! matched against every pod's and namespace's labels.
#![no_main]

use control::k8s::{
    self, EndpointSlice, LabelSelector, Labels, NetworkPolicy, Object, Peer, PortRef, Service,
    NAMESPACE_NAME_LABEL,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let Ok(m) = k8s::parse_manifests(&text) else {
        return;
    };
    let mut services: Vec<Service> = Vec::new();
    let mut slices: Vec<EndpointSlice> = Vec::new();
    let mut policies: Vec<NetworkPolicy> = Vec::new();
    let mut label_sets: Vec<Labels> = vec![Labels::new()];
    for o in m.objects {
        let key = o.key();
        let again = Object::from_value(o.value().clone()).expect("a parsed object reads back");
        assert_eq!(again.key(), key);
        k8s::check_stored(&key, o.value()).expect("a parsed object passes the stores' check");
        assert_eq!(key.namespace.is_empty(), !key.kind.namespaced());
        match o {
            Object::Service(s) => services.push(s),
            Object::EndpointSlice(s) => slices.push(s),
            Object::Pod(p) => {
                for port in p.container_ports() {
                    assert_ne!(port.port, 0);
                    if let Some(name) = &port.name {
                        assert!(p.named_port(name, port.protocol).is_some());
                    }
                }
                label_sets.push(p.labels().clone());
            }
            Object::Namespace(n) => {
                assert_eq!(
                    n.labels().get(NAMESPACE_NAME_LABEL).map(String::as_str),
                    Some(n.name())
                );
                label_sets.push(n.labels().clone());
            }
            Object::NetworkPolicy(p) => policies.push(p),
            Object::PodAddress(a) => assert!(!a.node().is_empty()),
        }
    }
    let refs: Vec<&EndpointSlice> = slices.iter().collect();
    for s in &services {
        for p in k8s::resolve(s, &refs) {
            assert!(p.name.starts_with(&format!("{}/{}", s.namespace(), s.name())));
            for e in &p.endpoints {
                assert_ne!(e.addr.port(), 0);
            }
        }
    }
    for p in &policies {
        check_policy(p, &label_sets);
    }
});

fn check_policy(p: &NetworkPolicy, label_sets: &[Labels]) {
    assert!(p.ingress().is_some() || p.egress().is_some());
    let matches = |s: &LabelSelector| {
        for l in label_sets {
            let hit = s.matches(l);
            assert!(!s.is_empty() || hit, "an empty selector matches everything");
        }
    };
    matches(p.pod_selector());
    let rules = p.ingress().unwrap_or_default().iter();
    for rule in rules.chain(p.egress().unwrap_or_default()) {
        for port in &rule.ports {
            if let Some(end) = port.end_port {
                assert!(matches!(port.port, Some(PortRef::Number(start)) if start <= end));
            }
        }
        for peer in &rule.peers {
            match peer {
                Peer::Pods {
                    pod_selector,
                    namespace_selector,
                } => {
                    assert!(pod_selector.is_some() || namespace_selector.is_some());
                    pod_selector
                        .iter()
                        .chain(namespace_selector)
                        .for_each(matches);
                }
                Peer::IpBlock(b) => {
                    for e in &b.except {
                        assert!(b.cidr.contains(e) && e.prefix_len() > b.cidr.prefix_len());
                        assert!(!b.contains(e.network()));
                    }
                }
            }
        }
    }
}
