use super::*;

#[test]
fn new_reads_back_from_its_value() {
    let a = PodAddress::new("prod", "web-0", "node-a", Ipv4Addr::new(10, 244, 1, 5));
    assert_eq!(
        a.value(),
        &json!({"apiVersion": "networking.twill.dev/v1", "kind": "PodAddress",
            "metadata": {"name": "web-0", "namespace": "prod"},
            "spec": {"node": "node-a", "ip": "10.244.1.5"}})
    );
    let b = PodAddress::from_value(a.value().clone()).unwrap();
    assert_eq!(b, a);
    assert_eq!(
        (b.namespace(), b.name(), b.node()),
        ("prod", "web-0", "node-a")
    );
    assert_eq!(b.ip(), Ipv4Addr::new(10, 244, 1, 5));
    assert_eq!(b.into_value(), a.into_value());
}

#[test]
fn node_and_an_ipv4_address_are_required() {
    let base = PodAddress::new("prod", "web-0", "node-a", Ipv4Addr::LOCALHOST).into_value();
    let with = |f: &dyn Fn(&mut Value)| {
        let mut v = base.clone();
        f(&mut v);
        match PodAddress::from_value(v) {
            Err(K8sError::Invalid { field, .. }) => field,
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(with(&|v| v["spec"]["ip"] = json!("fd00::5")), "spec.ip");
    assert_eq!(with(&|v| v["spec"]["ip"] = json!("10.0.0")), "spec.ip");
    assert_eq!(with(&|v| v["spec"]["ip"] = json!(5)), "spec.ip");
    assert_eq!(with(&|v| v["spec"]["node"] = json!("Node A")), "spec.node");
    assert_eq!(
        with(&|v| v["spec"] = json!({"ip": "10.0.0.1"})),
        "spec.node"
    );
    assert_eq!(with(&|v| v["spec"] = json!({"node": "n"})), "spec.ip");
    assert_eq!(with(&|v| v["spec"] = Value::Null), "spec");
    assert_eq!(with(&|v| v["apiVersion"] = json!("v1")), "apiVersion");
}
