use serde_json::{json, Value};

use super::*;

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn selector(v: Value) -> LabelSelector {
    read_selector(&At::root(&v)).unwrap()
}

fn field_of(v: Value) -> String {
    read_selector(&At::root(&v)).unwrap_err().field
}

#[test]
fn empty_selector_matches_everything() {
    let s = selector(json!({}));
    assert!(s.is_empty());
    assert_eq!(s, LabelSelector::everything());
    assert!(s.matches(&Labels::new()));
    assert!(s.matches(&labels(&[("app", "web")])));
    let s = selector(json!({"matchLabels": {}, "matchExpressions": []}));
    assert!(s.is_empty());
}

#[test]
fn match_labels_need_every_pair() {
    let s = selector(json!({"matchLabels": {"app": "web", "tier": "front"}}));
    assert!(!s.is_empty());
    assert!(s.matches(&labels(&[("app", "web"), ("tier", "front"), ("x", "y")])));
    assert!(!s.matches(&labels(&[("app", "web")])));
    assert!(!s.matches(&labels(&[("app", "web"), ("tier", "back")])));
}

#[test]
fn in_matches_a_listed_value_of_a_present_key() {
    let s = selector(json!({"matchExpressions": [
        {"key": "env", "operator": "In", "values": ["prod", "staging"]}]}));
    assert!(s.matches(&labels(&[("env", "prod")])));
    assert!(s.matches(&labels(&[("env", "staging")])));
    assert!(!s.matches(&labels(&[("env", "dev")])));
    assert!(!s.matches(&Labels::new()));
}

#[test]
fn not_in_matches_when_the_key_is_absent() {
    let s = selector(json!({"matchExpressions": [
        {"key": "env", "operator": "NotIn", "values": ["prod"]}]}));
    assert!(s.matches(&Labels::new()));
    assert!(s.matches(&labels(&[("env", "dev")])));
    assert!(!s.matches(&labels(&[("env", "prod")])));
}

#[test]
fn exists_and_does_not_exist_look_at_the_key_only() {
    let exists = selector(json!({"matchExpressions": [{"key": "app", "operator": "Exists"}]}));
    let absent =
        selector(json!({"matchExpressions": [{"key": "app", "operator": "DoesNotExist"}]}));
    for l in [labels(&[("app", "")]), labels(&[("app", "web")])] {
        assert!(exists.matches(&l) && !absent.matches(&l));
    }
    assert!(!exists.matches(&Labels::new()) && absent.matches(&Labels::new()));
}

#[test]
fn requirements_are_anded() {
    let s = selector(json!({
        "matchLabels": {"app": "web"},
        "matchExpressions": [
            {"key": "env", "operator": "In", "values": ["prod"]},
            {"key": "canary", "operator": "DoesNotExist"}]}));
    assert!(s.matches(&labels(&[("app", "web"), ("env", "prod")])));
    assert!(!s.matches(&labels(&[("app", "web"), ("env", "prod"), ("canary", "1")])));
    assert!(!s.matches(&labels(&[("app", "db"), ("env", "prod")])));
}

/// ValidateLabelSelectorRequirement: values required for In/NotIn,
/// forbidden for Exists/DoesNotExist; the operator is one of four.
#[test]
fn operator_values_are_validated() {
    let exprs = |e: Value| json!({"matchExpressions": [e]});
    for (e, field) in [
        (
            json!({"key": "a", "operator": "In"}),
            "matchExpressions[0].values",
        ),
        (
            json!({"key": "a", "operator": "In", "values": []}),
            "matchExpressions[0].values",
        ),
        (
            json!({"key": "a", "operator": "NotIn", "values": []}),
            "matchExpressions[0].values",
        ),
        (
            json!({"key": "a", "operator": "Exists", "values": ["x"]}),
            "matchExpressions[0].values",
        ),
        (
            json!({"key": "a", "operator": "DoesNotExist", "values": ["x"]}),
            "matchExpressions[0].values",
        ),
        (
            json!({"key": "a", "operator": "Gt", "values": ["1"]}),
            "matchExpressions[0].operator",
        ),
        (json!({"key": "a"}), "matchExpressions[0].operator"),
        (json!({"operator": "Exists"}), "matchExpressions[0].key"),
        (
            json!({"key": "-a", "operator": "Exists"}),
            "matchExpressions[0].key",
        ),
        (
            json!({"key": "a", "operator": "In", "values": ["-x"]}),
            "matchExpressions[0].values[0]",
        ),
    ] {
        assert_eq!(field_of(exprs(e.clone())), field, "{e}");
    }
    assert_eq!(
        field_of(json!({"matchLabels": {"a b": "x"}})),
        "matchLabels[\"a b\"]"
    );
    assert_eq!(
        field_of(json!({"matchLabels": {"a": "x y"}})),
        "matchLabels.a"
    );
    assert_eq!(field_of(json!({"matchLabels": {"a": 1}})), "matchLabels.a");
    assert_eq!(field_of(json!({"matchLabels": []})), "matchLabels");
    assert_eq!(field_of(json!([])), "");
}

/// IsQualifiedName / IsValidLabelValue (apimachinery validation_test.go).
#[test]
fn label_keys_and_values_are_validated_as_kubernetes_does() {
    for good in [
        "simple",
        "now-with-dashes",
        "1-starts-with-num",
        "1234",
        "simple/simple",
        "now-with-dashes/simple",
        "now-with-dashes/now-with-dashes",
        "now.with.dots/simple",
        "now-with.dashes-and.dots/simple",
        "1-num.2-num/3-num",
        "1234/5678",
        "1.2.3.4/5678",
        "Uppercase_Is_OK_123",
        "example.com/Uppercase_Is_OK_123",
        "kubernetes.io/metadata.name",
        &"a".repeat(63),
        &format!("{}/{}", "a".repeat(253), "b".repeat(63)),
    ] {
        assert_eq!(qualified_name(good), Ok(()), "{good}");
    }
    for bad in [
        "",
        "nospecialchars%^=@",
        "cantendwithadash-",
        "-cantstartwithadash-",
        "only/one/slash",
        "Example.com/abc",
        "example_com/abc",
        "example.com/",
        "/simple",
        &"a".repeat(64),
        &format!("{}/b", "a".repeat(254)),
    ] {
        assert!(qualified_name(bad).is_err(), "{bad}");
    }
    for good in [
        "",
        "simple",
        "now-with-dashes",
        "1-starts",
        "a.b_c-D",
        &"x".repeat(63),
    ] {
        assert_eq!(label_value(good), Ok(()), "{good}");
    }
    for bad in ["-a", "a-", "a b", "a/b", "_a", &"x".repeat(64)] {
        assert!(label_value(bad).is_err(), "{bad}");
    }
}
