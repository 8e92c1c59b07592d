use serde_json::json;

use super::*;
use crate::k8s::{parse_manifests, Object};

fn yaml(text: &str) -> Value {
    serde_norway::from_str(text).unwrap()
}

fn svc(v: Value) -> Service {
    Service::from_value(v).unwrap()
}

fn err(v: Value) -> String {
    Service::from_value(v).unwrap_err().to_string()
}

/// A minimal valid Service with `spec` replaced.
fn with_spec(spec: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"}, "spec": spec})
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn clusterip_fixture_two_named_ports_one_target_by_name() {
    let s = svc(yaml(include_str!("fixtures/clusterip.yaml")));
    assert_eq!((s.namespace(), s.name()), ("default", "web"));
    let spec = s.spec();
    assert_eq!(spec.service_type, ServiceType::ClusterIp);
    assert_eq!(spec.cluster_ip, ClusterIp::Ips(vec![ip("10.96.41.17")]));
    assert_eq!(spec.ports.len(), 2);
    assert_eq!(spec.ports[0].name, "http");
    assert_eq!(spec.ports[0].target_port, TargetPort::Name("http".into()));
    assert_eq!(spec.ports[1].target_port, TargetPort::Number(9090));
    assert_eq!(spec.affinity_timeout, None);
    assert_eq!(
        spec.selector
            .as_ref()
            .unwrap()
            .get("app")
            .map(String::as_str),
        Some("web")
    );
    // Unknown fields are kept in the stored value.
    assert!(s.value()["metadata"]["managedFields"].is_array());
}

#[test]
fn nodeport_fixture_udp_local_with_client_ip_affinity() {
    let s = svc(serde_json::from_str(include_str!("fixtures/nodeport.json")).unwrap());
    let spec = s.spec();
    assert_eq!(s.namespace(), "edge");
    assert_eq!(spec.service_type, ServiceType::NodePort);
    assert_eq!(spec.ports[0].protocol, Protocol::Udp);
    assert_eq!(spec.ports[0].node_port, Some(30053));
    assert_eq!(spec.ports[0].name, "");
    assert_eq!(spec.external_traffic_policy, TrafficPolicy::Local);
    assert_eq!(spec.affinity_timeout, Some(Duration::from_secs(600)));
}

#[test]
fn loadbalancer_fixture_takes_vip_ingress_not_proxy_mode_or_hostnames() {
    let s = svc(yaml(include_str!("fixtures/loadbalancer.yaml")));
    let spec = s.spec();
    assert_eq!(spec.service_type, ServiceType::LoadBalancer);
    assert_eq!(spec.load_balancer_ips, vec![ip("192.168.100.240")]);
    assert_eq!(spec.external_ips, vec![ip("192.168.100.50")]);
    assert_eq!(spec.ports[1].node_port, Some(31443));
}

#[test]
fn headless_and_externalname_fixtures() {
    let h = svc(yaml(include_str!("fixtures/headless.yaml")));
    assert_eq!(h.spec().cluster_ip, ClusterIp::Headless);
    let e = svc(yaml(include_str!("fixtures/externalname.yaml")));
    assert_eq!(e.spec().service_type, ServiceType::ExternalName);
    assert_eq!(
        e.spec().external_name.as_deref(),
        Some("billing.corp.example.com")
    );
    assert!(e.spec().ports.is_empty());
    assert_eq!(e.spec().cluster_ip, ClusterIp::Unset);
}

#[test]
fn defaults_as_the_api_server_sets_them() {
    let s = svc(with_spec(
        json!({"clusterIP": "10.96.0.5", "ports": [{"port": 80}]}),
    ));
    assert_eq!(s.namespace(), "default");
    let spec = s.spec();
    assert_eq!(spec.service_type, ServiceType::ClusterIp);
    assert_eq!(spec.ports[0].protocol, Protocol::Tcp);
    assert_eq!(spec.ports[0].target_port, TargetPort::Number(80));
    assert_eq!(spec.internal_traffic_policy, TrafficPolicy::Cluster);
    assert_eq!(spec.external_traffic_policy, TrafficPolicy::Cluster);
    assert_eq!(spec.selector, None);
    let a = svc(with_spec(
        json!({"ports": [{"port": 80}], "sessionAffinity": "ClientIP"}),
    ));
    assert_eq!(a.spec().affinity_timeout, Some(DEFAULT_AFFINITY_TIMEOUT));
}

#[test]
fn sctp_is_refused_naming_the_port() {
    let e = err(with_spec(json!({"ports": [
        {"name": "a", "port": 80},
        {"name": "b", "port": 90, "protocol": "SCTP"},
    ]})));
    assert_eq!(
        e,
        "Service default/web: spec.ports[1].protocol: SCTP is not supported (twill balances TCP and UDP)"
    );
    let v = json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"ports": [{"port": 80, "protocol": "SCTP"}]}});
    assert!(matches!(
        Service::from_value(v),
        Err(K8sError::Unsupported { .. })
    ));
}

#[test]
fn ipv6_and_dual_stack_are_refused() {
    for (spec, field) in [
        (
            json!({"ipFamilies": ["IPv4", "IPv6"], "ports": [{"port": 1}]}),
            "spec.ipFamilies[1]",
        ),
        (
            json!({"ipFamilyPolicy": "RequireDualStack", "ports": [{"port": 1}]}),
            "spec.ipFamilyPolicy",
        ),
        (
            json!({"clusterIP": "fd00::1", "ports": [{"port": 1}]}),
            "spec.clusterIP",
        ),
        (
            json!({"clusterIP": "10.96.0.1", "clusterIPs": ["10.96.0.1", "fd00::1"], "ports": [{"port": 1}]}),
            "spec.clusterIPs[1]",
        ),
        (
            json!({"externalIPs": ["2001:db8::1"], "ports": [{"port": 1}]}),
            "spec.externalIPs[0]",
        ),
    ] {
        match Service::from_value(with_spec(spec)) {
            Err(K8sError::Unsupported { field: f, .. }) => assert_eq!(f, field),
            other => panic!("{field}: {other:?}"),
        }
    }
    // PreferDualStack on an IPv4 cluster is single-stack.
    svc(with_spec(
        json!({"ipFamilyPolicy": "PreferDualStack", "ports": [{"port": 1}]}),
    ));
}

#[test]
fn load_balancer_source_ranges_are_refused() {
    let e = err(with_spec(json!({"type": "LoadBalancer",
        "loadBalancerSourceRanges": ["10.0.0.0/8"], "ports": [{"port": 1}]})));
    assert!(
        e.contains("spec.loadBalancerSourceRanges: is not supported"),
        "{e}"
    );
    svc(with_spec(
        json!({"loadBalancerSourceRanges": [], "ports": [{"port": 1}]}),
    ));
    // Any source allowed: no firewall to enforce.
    svc(with_spec(
        json!({"loadBalancerSourceRanges": [" 10.0.0.0/8", "0.0.0.0/0 "],
        "ports": [{"port": 1}]}),
    ));
    let e = err(with_spec(
        json!({"loadBalancerSourceRanges": ["ten"], "ports": [{"port": 1}]}),
    ));
    assert!(
        e.contains("spec.loadBalancerSourceRanges[0]: \"ten\" is not a CIDR"),
        "{e}"
    );
    // The cloud's annotation is not kube-proxy's business.
    let mut v = with_spec(json!({"ports": [{"port": 1}]}));
    v["metadata"]["annotations"] =
        json!({"service.beta.kubernetes.io/load-balancer-source-ranges": "10.0.0.0/8"});
    svc(v);
}

#[test]
fn ignored_fields_are_accepted() {
    svc(with_spec(json!({
        "type": "LoadBalancer",
        "healthCheckNodePort": 32000,
        "publishNotReadyAddresses": true,
        "trafficDistribution": "PreferClose",
        "loadBalancerClass": "example.com/lb",
        "ports": [{"port": 80, "appProtocol": "kubernetes.io/h2c"}],
        "somethingNew": {"x": 1},
    })));
}

#[test]
fn ports_are_validated_as_the_api_server_does() {
    for (spec, want) in [
        (
            json!({"ports": [{"port": 0}]}),
            "spec.ports[0].port: 0 is not a port (1 to 65535)",
        ),
        (
            json!({"ports": [{"port": 65536}]}),
            "spec.ports[0].port: 65536 is not a port",
        ),
        (
            json!({"ports": [{"port": "80"}]}),
            "spec.ports[0].port: expected an integer, found a string",
        ),
        (
            json!({"ports": [{"name": "x"}]}),
            "spec.ports[0].port: is missing",
        ),
        (
            json!({"ports": [{"port": 80}, {"port": 81}]}),
            "spec.ports[0].name: is required when a Service has more than one port",
        ),
        (
            json!({"ports": [{"name": "a", "port": 80}, {"name": "a", "port": 81}]}),
            "spec.ports[1].name: \"a\" is used by two ports",
        ),
        (
            json!({"ports": [{"name": "a", "port": 80}, {"name": "b", "port": 80}]}),
            "spec.ports[1].port: 80/TCP is used by two ports",
        ),
        (
            json!({"ports": [{"name": "Web", "port": 80}]}),
            "spec.ports[0].name: \"Web\" is not a DNS label",
        ),
        (
            json!({"ports": [{"port": 80, "protocol": "ICMP"}]}),
            "spec.ports[0].protocol: \"ICMP\" is not a protocol",
        ),
        (
            json!({"ports": [{"port": 80, "targetPort": 70000}]}),
            "spec.ports[0].targetPort: 70000 is not a port",
        ),
        (
            json!({"ports": [{"port": 80, "targetPort": "8080"}]}),
            "spec.ports[0].targetPort: \"8080\" is a number in quotes",
        ),
        (
            json!({"ports": [{"port": 80, "nodePort": 30000}]}),
            "spec.ports[0].nodePort: may only be set for type NodePort or LoadBalancer",
        ),
        (
            json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 70000}]}),
            "spec.ports[0].nodePort: 70000 is not a port",
        ),
        (json!({"clusterIP": "10.96.0.1"}), "spec.ports: is required"),
        (
            json!({"ports": {"port": 80}}),
            "spec.ports: expected a list, found an object",
        ),
    ] {
        let e = err(with_spec(spec));
        assert!(
            e.starts_with(&format!("Service default/web: {want}")),
            "{e}\nwanted: {want}"
        );
    }
    // Outside the default range, still a port: the range is cluster
    // configuration.
    let s = svc(with_spec(
        json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 80}]}),
    ));
    assert_eq!(s.spec().ports[0].node_port, Some(80));
}

#[test]
fn spec_fields_are_validated() {
    for (spec, want) in [
        (
            json!({"type": "Magic", "ports": [{"port": 1}]}),
            "spec.type: \"Magic\" is not ClusterIP",
        ),
        (
            json!({"internalTrafficPolicy": "Node", "ports": [{"port": 1}]}),
            "spec.internalTrafficPolicy: \"Node\" is not Cluster or Local",
        ),
        (
            json!({"externalTrafficPolicy": "Global", "ports": [{"port": 1}]}),
            "spec.externalTrafficPolicy: \"Global\" is not Cluster or Local",
        ),
        (
            json!({"sessionAffinity": "Cookie", "ports": [{"port": 1}]}),
            "spec.sessionAffinity: \"Cookie\"",
        ),
        (
            json!({"sessionAffinity": "ClientIP", "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 0}}, "ports": [{"port": 1}]}),
            "spec.sessionAffinityConfig.clientIP.timeoutSeconds: 0 is out of range (1 to 86400)",
        ),
        (
            json!({"sessionAffinity": "ClientIP", "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 86401}}, "ports": [{"port": 1}]}),
            "spec.sessionAffinityConfig.clientIP.timeoutSeconds: 86401 is out of range",
        ),
        (
            json!({"clusterIP": "10.96.0.1", "clusterIPs": ["10.96.0.2"], "ports": [{"port": 1}]}),
            "spec.clusterIPs[0]: \"10.96.0.2\" must equal spec.clusterIP \"10.96.0.1\"",
        ),
        (
            json!({"clusterIP": "10.96.0.1", "clusterIPs": ["10.96.0.1", "10.96.0.2"], "ports": [{"port": 1}]}),
            "spec.clusterIPs[1]: a second cluster IP must be of the other family",
        ),
        (
            json!({"clusterIP": "ten", "ports": [{"port": 1}]}),
            "spec.clusterIP: \"ten\" is not an IP address",
        ),
        (
            json!({"type": "ExternalName"}),
            "spec.externalName: is required for type ExternalName",
        ),
        (
            json!({"type": "ExternalName", "externalName": "a.example", "clusterIP": "10.96.0.1"}),
            "spec.clusterIP: may not be set",
        ),
        (json!({"type": "LoadBalancer", "ports": [{"port": 1}]}), ""),
    ] {
        let r = Service::from_value(with_spec(spec));
        match (r, want) {
            (Ok(_), "") => {}
            (Err(e), w) if !w.is_empty() => {
                let e = e.to_string();
                assert!(
                    e.starts_with(&format!("Service default/web: {w}")),
                    "{e}\nwanted: {w}"
                );
            }
            (r, w) => panic!("{w}: {r:?}"),
        }
    }
    let s = svc(with_spec(
        json!({"clusterIPs": ["10.96.0.9"], "ports": [{"port": 1}]}),
    ));
    assert_eq!(s.spec().cluster_ip, ClusterIp::Ips(vec![ip("10.96.0.9")]));
    let s = svc(with_spec(json!({"sessionAffinity": "ClientIP",
        "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 86400}}, "ports": [{"port": 1}]})));
    assert_eq!(s.spec().affinity_timeout, Some(Duration::from_secs(86400)));
}

#[test]
fn metadata_is_validated() {
    let base = |meta: Value| json!({"apiVersion": "v1", "kind": "Service", "metadata": meta, "spec": {"ports": [{"port": 1}]}});
    for (meta, want) in [
        (
            json!({"name": "Web"}),
            "Service default/Web: metadata.name: \"Web\" is not a valid name",
        ),
        (
            json!({"name": "web", "namespace": "Prod"}),
            "Service Prod/web: metadata.namespace: \"Prod\" is not a valid namespace",
        ),
        (
            json!({"generateName": "web-"}),
            "Service without a name: metadata.name: is missing (generateName",
        ),
        (
            json!({}),
            "Service without a name: metadata.name: is missing",
        ),
    ] {
        let e = err(base(meta));
        assert!(e.starts_with(want), "{e}\nwanted: {want}");
    }
    let e = err(json!({"kind": "Service", "metadata": {"name": "web"}}));
    assert_eq!(
        e,
        "Service default/web: apiVersion: is missing (expected \"v1\")"
    );
    let s = svc(base(json!({"name": "web", "namespace": "prod"})));
    assert_eq!(s.namespace(), "prod");
}

#[test]
fn another_groups_service_kind_is_another_kind() {
    let v = json!({"apiVersion": "serving.knative.dev/v1", "kind": "Service",
        "metadata": {"name": "hello", "namespace": "default"}});
    match Object::from_value(v) {
        Err(K8sError::OtherKind { object }) => {
            assert_eq!(object, "serving.knative.dev/v1 Service default/hello")
        }
        other => panic!("{other:?}"),
    }
    let m = parse_manifests(
        "apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata: {name: hello}\n",
    )
    .unwrap();
    assert_eq!(m.skipped, ["serving.knative.dev/v1 Service hello"]);
}
