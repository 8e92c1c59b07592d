use super::*;
use crate::objects::Kind;

fn keys(m: &Manifests) -> Vec<String> {
    m.objects.iter().map(|o| o.key().to_string()).collect()
}

#[test]
fn a_kubectl_list_in_json() {
    let m = parse_manifests(include_str!("fixtures/list.json")).unwrap();
    assert_eq!(
        keys(&m),
        [
            "Service default/kubernetes",
            "EndpointSlice default/kubernetes",
            "Service kube-system/kube-dns"
        ]
    );
    assert!(m.skipped.is_empty());
}

#[test]
fn multi_document_yaml_skips_other_kinds_and_empty_documents() {
    let m = parse_manifests(include_str!("fixtures/multidoc.yaml")).unwrap();
    assert_eq!(
        keys(&m),
        ["Service shop/web", "EndpointSlice shop/web-manual"]
    );
    assert_eq!(m.skipped, ["Deployment shop/web"]);
}

#[test]
fn every_fixture_parses() {
    for text in [
        include_str!("fixtures/clusterip.yaml"),
        include_str!("fixtures/nodeport.json"),
        include_str!("fixtures/loadbalancer.yaml"),
        include_str!("fixtures/headless.yaml"),
        include_str!("fixtures/externalname.yaml"),
        include_str!("fixtures/endpointslice.yaml"),
        include_str!("fixtures/pod.yaml"),
        include_str!("fixtures/namespace.yaml"),
        include_str!("fixtures/networkpolicy.yaml"),
        include_str!("fixtures/networkpolicy-full.yaml"),
    ] {
        let m = parse_manifests(text).unwrap();
        assert_eq!(m.objects.len(), 1);
        // The stored value is the object as given.
        assert!(m.objects[0].value()["metadata"]["uid"].is_string());
    }
}

#[test]
fn a_list_mixing_policy_kinds_with_a_service() {
    let m = parse_manifests(include_str!("fixtures/policy-list.yaml")).unwrap();
    assert_eq!(
        keys(&m),
        [
            "Namespace prod",
            "Service prod/db",
            "Pod prod/db-0",
            "NetworkPolicy prod/db-from-frontend"
        ]
    );
    assert_eq!(m.skipped, ["Deployment prod/frontend"]);
    let ns = m.objects[0].key();
    assert_eq!((ns.kind, ns.namespace.as_str()), (Kind::Namespace, ""));
    for o in &m.objects {
        assert_eq!(crate::k8s::check_stored(&o.key(), o.value()), Ok(()));
    }
    let Object::Pod(pod) = &m.objects[2] else {
        panic!("{:?}", m.objects[2]);
    };
    assert_eq!(
        pod.named_port("redis", crate::k8s::Protocol::Tcp),
        Some(6379)
    );
}

#[test]
fn a_pod_address_reads_from_a_manifest() {
    let text = r#"{"apiVersion":"networking.twill.dev/v1","kind":"PodAddress","metadata":{"name":"a","namespace":"x"},"spec":{"node":"node-a","ip":"10.244.1.5"}}"#;
    let m = parse_manifests(text).unwrap();
    assert_eq!(keys(&m), ["PodAddress x/a"]);
    // Another group's PodAddress is not twill's.
    let other = text.replace("networking.twill.dev/v1", "example.com/v1");
    let m = parse_manifests(&other).unwrap();
    assert_eq!(m.skipped, ["example.com/v1 PodAddress x/a"]);
}

#[test]
fn a_namespace_with_a_namespace_is_refused() {
    let text = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: prod\n  namespace: default\n";
    let e = parse_manifests(text).unwrap_err();
    assert_eq!(
        e.to_string(),
        "document 1: Namespace prod: metadata.namespace: a Namespace is cluster-scoped; \"default\" must be empty"
    );
}

#[test]
fn a_typed_list_without_item_kinds_gets_them() {
    let text = r#"{"apiVersion": "v1", "kind": "ServiceList", "metadata": {},
        "items": [{"metadata": {"name": "a"}, "spec": {"clusterIP": "10.96.0.3", "ports": [{"port": 80}]}}]}"#;
    let m = parse_manifests(text).unwrap();
    assert_eq!(keys(&m), ["Service default/a"]);
    assert_eq!(m.objects[0].value()["kind"], "Service");
    assert_eq!(m.objects[0].value()["apiVersion"], "v1");
}

#[test]
fn yaml_lists_and_concatenated_json() {
    let yaml = "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Service\n  metadata: {name: a}\n  spec: {ports: [{port: 1}]}\n- apiVersion: v1\n  kind: ConfigMap\n  metadata: {name: c, namespace: x}\n";
    let m = parse_manifests(yaml).unwrap();
    assert_eq!(keys(&m), ["Service default/a"]);
    assert_eq!(m.skipped, ["ConfigMap x/c"]);
    let json = r#"{"apiVersion":"v1","kind":"Service","metadata":{"name":"a"},"spec":{"ports":[{"port":1}]}}
{"apiVersion":"v1","kind":"Service","metadata":{"name":"b"},"spec":{"ports":[{"port":1}]}}"#;
    assert_eq!(
        keys(&parse_manifests(json).unwrap()),
        ["Service default/a", "Service default/b"]
    );
    assert_eq!(parse_manifests("").unwrap(), Manifests::default());
    assert_eq!(
        parse_manifests("---\n# nothing\n---\n").unwrap(),
        Manifests::default()
    );
}

#[test]
fn errors_name_the_document_item_and_field() {
    let yaml = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n  ports:\n  - {port: 1, name: a}\n  - {port: 2, name: b, protocol: SCTP}\n";
    let e = parse_manifests(yaml).unwrap_err();
    assert_eq!(
        e.to_string(),
        "document 2: Service default/web: spec.ports[1].protocol: SCTP is not supported (twill balances TCP and UDP)"
    );
    let list = r#"{"apiVersion":"v1","kind":"List","items":[{"apiVersion":"v1","kind":"Service","metadata":{"name":"a"},"spec":{"ports":[{"port":1}]}},{"apiVersion":"v1","kind":"Service","metadata":{"name":"b","namespace":"x"},"spec":{"ports":[{"port":0}]}}]}"#;
    assert_eq!(
        parse_manifests(list).unwrap_err().to_string(),
        "document 1: items[1]: Service x/b: spec.ports[0].port: 0 is not a port (1 to 65535)"
    );
    let e = parse_manifests("kind: Service\nmetadata: {name: a\n").unwrap_err();
    assert!(matches!(e, K8sError::Yaml { index: 1, .. }), "{e}");
    let e = parse_manifests("{\"kind\": }").unwrap_err();
    assert!(e.to_string().starts_with("JSON: "), "{e}");
    let e = parse_manifests("- a\n- b\n").unwrap_err();
    assert_eq!(
        e.to_string(),
        "document 1: top level: expected an object with apiVersion and kind, found a list"
    );
    let e = parse_manifests("metadata: {name: a}\n").unwrap_err();
    assert_eq!(
        e.to_string(),
        "document 1: object without kind a: kind: is missing"
    );
}

#[test]
fn object_key_and_kind() {
    let m = parse_manifests(include_str!("fixtures/endpointslice.yaml")).unwrap();
    let key = m.objects[0].key();
    assert_eq!(key.kind, Kind::EndpointSlice);
    assert_eq!(key.path(), "endpointslices/default/web-8x7kz");
}
