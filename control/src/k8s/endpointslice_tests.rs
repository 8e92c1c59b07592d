use serde_json::json;

use super::*;

fn slice(extra: Value) -> Value {
    let mut v = json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": "web-abc", "namespace": "default",
            "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080}],
        "endpoints": [{"addresses": ["10.244.1.2"]}],
    });
    if let (Value::Object(m), Value::Object(e)) = (&mut v, extra) {
        m.extend(e);
    }
    v
}

fn err(v: Value) -> String {
    EndpointSlice::from_value(v).unwrap_err().to_string()
}

#[test]
fn fixture_with_ready_terminating_and_node_names() {
    let v: Value = serde_norway::from_str(include_str!("fixtures/endpointslice.yaml")).unwrap();
    let s = EndpointSlice::from_value(v).unwrap();
    assert_eq!(
        (s.namespace(), s.name(), s.service_name()),
        ("default", "web-8x7kz", "web")
    );
    assert_eq!(s.ports().len(), 2);
    assert_eq!(s.ports()[0].port, Some(8080));
    let e = s.endpoints();
    assert_eq!(e.len(), 3);
    assert_eq!(e[0].node_name.as_deref(), Some("node-a"));
    assert!(e[0].ready && e[0].serving && !e[0].terminating);
    assert!(!e[1].ready && e[1].serving && e[1].terminating);
    assert!(!e[2].ready && !e[2].serving && !e[2].terminating);
}

/// k8s.io/api discovery/v1 EndpointConditions: ready nil ⇒ true, serving
/// nil ⇒ true, terminating nil ⇒ false.
#[test]
fn absent_conditions_default_as_the_api_reference_says() {
    let s = EndpointSlice::from_value(slice(json!({"endpoints": [
        {"addresses": ["10.244.1.2"]},
        {"addresses": ["10.244.1.3"], "conditions": {}},
        {"addresses": ["10.244.1.4"], "conditions": {"ready": false}},
        {"addresses": ["10.244.1.5"], "conditions": {"terminating": true}},
        {"addresses": ["10.244.1.6"], "conditions": {"ready": null, "serving": false}},
    ]})))
    .unwrap();
    let flags: Vec<_> = s
        .endpoints()
        .iter()
        .map(|e| (e.ready, e.serving, e.terminating))
        .collect();
    assert_eq!(
        flags,
        [
            (true, true, false),
            (true, true, false),
            (false, true, false),
            (true, true, true),
            (true, false, false),
        ]
    );
}

#[test]
fn the_service_name_label_is_required() {
    let mut v = slice(json!({}));
    v["metadata"]["labels"] = json!({"app": "web"});
    assert_eq!(
        err(v),
        "EndpointSlice default/web-abc: metadata.labels[\"kubernetes.io/service-name\"]: is missing: the slice would belong to no Service"
    );
}

#[test]
fn non_ipv4_address_types_and_sctp_are_refused() {
    for t in ["IPv6", "FQDN"] {
        let e = EndpointSlice::from_value(slice(json!({"addressType": t}))).unwrap_err();
        assert!(matches!(e, K8sError::Unsupported { .. }), "{e}");
        assert!(e.to_string().contains("addressType: "), "{e}");
    }
    let e = err(slice(json!({"ports": [{"port": 1, "protocol": "SCTP"}]})));
    assert!(e.ends_with("ports[0].protocol: SCTP is not supported (twill balances TCP and UDP)"));
}

#[test]
fn malformed_slices_name_the_field() {
    for (extra, want) in [
        (json!({"addressType": null}), "addressType: is missing"),
        (
            json!({"endpoints": [{"addresses": []}]}),
            "endpoints[0].addresses: needs at least one address",
        ),
        (
            json!({"endpoints": [{"addresses": ["x"]}]}),
            "endpoints[0].addresses[0]: \"x\" is not an IP address",
        ),
        (
            json!({"endpoints": [{"addresses": ["fd00::1"]}]}),
            "endpoints[0].addresses[0]: fd00::1 is IPv6",
        ),
        (
            json!({"endpoints": [{"addresses": ["10.0.0.1"], "conditions": {"ready": "yes"}}]}),
            "endpoints[0].conditions.ready: expected true or false, found a string",
        ),
        (
            json!({"ports": [{"port": 0}]}),
            "ports[0].port: 0 is not a port",
        ),
        (
            json!({"ports": [{"port": 1}, {"port": 2}]}),
            "ports[1].name: \"\" is used by two ports",
        ),
    ] {
        let e = err(slice(extra));
        assert!(
            e.starts_with(&format!("EndpointSlice default/web-abc: {want}")),
            "{e}\nwanted: {want}"
        );
    }
}

#[test]
fn a_port_without_number_and_hints_zone_are_accepted() {
    let s = EndpointSlice::from_value(slice(json!({
        "ports": [{"name": "any"}],
        "endpoints": [{"addresses": ["10.244.1.2", "10.244.9.9"], "zone": "a",
            "hints": {"forZones": [{"name": "a"}]}}],
    })))
    .unwrap();
    assert_eq!(s.ports()[0].port, None);
    assert_eq!(s.endpoints()[0].address.to_string(), "10.244.1.2");
}
