use serde_json::json;

use super::*;

const FIXTURE: &str = include_str!("fixtures/namespace.yaml");

fn parse(text: &str) -> Namespace {
    let v: Value = serde_norway::from_str(text).unwrap();
    Namespace::from_value(v).unwrap()
}

#[test]
fn reads_the_fixture() {
    let ns = parse(FIXTURE);
    assert_eq!(ns.name(), "prod");
    assert_eq!(
        ns.labels(),
        &Labels::from([
            ("kubernetes.io/metadata.name".to_owned(), "prod".to_owned()),
            ("team".to_owned(), "payments".to_owned()),
        ])
    );
    assert_eq!(ns.value()["status"]["phase"], "Active");
}

/// The API server's namespace strategy sets `kubernetes.io/metadata.name`
/// on every create and update.
#[test]
fn the_name_label_is_always_there_and_always_the_name() {
    let ns = Namespace::from_value(
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "dev"}}),
    )
    .unwrap();
    assert_eq!(ns.labels(), &default_labels("dev"));
    let ns = Namespace::from_value(json!({"apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": "dev", "labels": {NAMESPACE_NAME_LABEL: "prod"}}}))
    .unwrap();
    assert_eq!(ns.labels()[NAMESPACE_NAME_LABEL], "dev");
    assert_eq!(default_labels("x").len(), 1);
}

#[test]
fn a_namespace_is_cluster_scoped_and_named_by_a_dns_label() {
    let ok = |meta: Value| {
        Namespace::from_value(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": meta}))
    };
    assert!(ok(json!({"name": "a", "namespace": ""})).is_ok());
    assert!(ok(json!({"name": "a", "namespace": null})).is_ok());
    for (meta, field) in [
        (
            json!({"name": "a", "namespace": "default"}),
            "metadata.namespace",
        ),
        (json!({"name": "a.b"}), "metadata.name"),
        (json!({"name": "A"}), "metadata.name"),
        (json!({"name": "a".repeat(64)}), "metadata.name"),
        (json!({}), "metadata.name"),
        (
            json!({"name": "a", "labels": {"a": "-"}}),
            "metadata.labels.a",
        ),
    ] {
        match ok(meta.clone()) {
            Err(K8sError::Invalid { field: f, .. }) => assert_eq!(f, field, "{meta}"),
            other => panic!("{meta}: {other:?}"),
        }
    }
    let e = ok(json!({"name": "a", "namespace": "x"})).unwrap_err();
    assert_eq!(
        e.to_string(),
        "Namespace a: metadata.namespace: a Namespace is cluster-scoped; \"x\" must be empty"
    );
}
