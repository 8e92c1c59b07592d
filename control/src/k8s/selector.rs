//! Labels and `metav1.LabelSelector`: what NetworkPolicies select pods and
//! namespaces by, read from the object and matched with the API's
//! semantics (k8s.io/apimachinery `labels.Requirement.Matches`,
//! `metav1.LabelSelectorAsSelector`). No I/O.

use std::collections::BTreeMap;

use super::{invalid, At, FResult};

/// An object's `metadata.labels`.
pub type Labels = BTreeMap<String, String>;

/// A `metav1.LabelSelector`: every `matchLabels` entry and every
/// `matchExpressions` requirement must hold (ANDed). An empty selector
/// selects everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector {
    /// `matchLabels`: each key must be present with exactly this value.
    pub match_labels: Labels,
    /// `matchExpressions`.
    pub match_expressions: Vec<Requirement>,
}

/// One of `matchExpressions`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    /// `key`, a label key.
    pub key: String,
    /// `operator`.
    pub operator: Operator,
    /// `values`: at least one for `In` and `NotIn`, none for `Exists` and
    /// `DoesNotExist` (checked when read).
    pub values: Vec<String>,
}

/// A requirement's `operator`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operator {
    /// The key is present and its value is one of `values`.
    In,
    /// The key is absent, or its value is none of `values`.
    NotIn,
    /// The key is present (any value).
    Exists,
    /// The key is absent.
    DoesNotExist,
}

impl Requirement {
    /// Whether `labels` satisfy this requirement.
    pub fn matches(&self, labels: &Labels) -> bool {
        let value = labels.get(&self.key);
        let listed = || value.is_some_and(|v| self.values.iter().any(|x| x == v));
        match self.operator {
            Operator::In => listed(),
            Operator::NotIn => !listed(),
            Operator::Exists => value.is_some(),
            Operator::DoesNotExist => value.is_none(),
        }
    }
}

impl LabelSelector {
    /// The selector that selects everything (`{}`).
    pub fn everything() -> Self {
        LabelSelector::default()
    }

    /// Whether it has neither `matchLabels` nor `matchExpressions` (and so
    /// selects everything).
    pub fn is_empty(&self) -> bool {
        self.match_labels.is_empty() && self.match_expressions.is_empty()
    }

    /// Whether `labels` satisfy every `matchLabels` entry and every
    /// requirement; true for an empty selector.
    pub fn matches(&self, labels: &Labels) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
            && self.match_expressions.iter().all(|r| r.matches(labels))
    }
}

/// Reads a `LabelSelector` object, validated as the API server does
/// (`ValidateLabelSelector`): label keys are qualified names, values label
/// values, `In`/`NotIn` need values and `Exists`/`DoesNotExist` none.
pub(crate) fn read_selector(at: &At<'_>) -> FResult<LabelSelector> {
    at.object()?;
    let match_labels = match at.get("matchLabels") {
        Some(m) => read_label_map(&m)?,
        None => Labels::new(),
    };
    let match_expressions = at
        .opt_items("matchExpressions")?
        .iter()
        .map(read_requirement)
        .collect::<FResult<_>>()?;
    Ok(LabelSelector {
        match_labels,
        match_expressions,
    })
}

fn read_requirement(at: &At<'_>) -> FResult<Requirement> {
    at.object()?;
    let key = at
        .opt_str("key")?
        .ok_or_else(|| invalid(&at.join("key"), "is missing"))?;
    check_key(&at.join("key"), key)?;
    let operator = match at.opt_str("operator")? {
        Some("In") => Operator::In,
        Some("NotIn") => Operator::NotIn,
        Some("Exists") => Operator::Exists,
        Some("DoesNotExist") => Operator::DoesNotExist,
        Some(o) => {
            return Err(invalid(
                &at.join("operator"),
                format_args!("{o:?} is not In, NotIn, Exists or DoesNotExist"),
            ))
        }
        None => return Err(invalid(&at.join("operator"), "is missing")),
    };
    let mut values = Vec::new();
    for v in at.opt_items("values")? {
        let s = v.str()?;
        check_value(&v.path, s)?;
        values.push(s.to_owned());
    }
    let field = at.join("values");
    match operator {
        Operator::In | Operator::NotIn if values.is_empty() => Err(invalid(
            &field,
            "must be specified when operator is In or NotIn",
        )),
        Operator::Exists | Operator::DoesNotExist if !values.is_empty() => Err(invalid(
            &field,
            "may not be specified when operator is Exists or DoesNotExist",
        )),
        _ => Ok(Requirement {
            key: key.to_owned(),
            operator,
            values,
        }),
    }
}

/// Reads a map of labels (`metadata.labels`, `matchLabels`), every key
/// and value checked.
pub(crate) fn read_label_map(at: &At<'_>) -> FResult<Labels> {
    let map = at.object()?;
    let mut labels = Labels::new();
    for key in map.keys() {
        let field = at.join(key);
        check_key(&field, key)?;
        let value = at.get(key).map(|v| v.str()).transpose()?.unwrap_or("");
        check_value(&field, value)?;
        labels.insert(key.clone(), value.to_owned());
    }
    Ok(labels)
}

/// `metadata.labels` of an object (absent: none), checked.
pub(crate) fn read_labels(root: &At<'_>) -> FResult<Labels> {
    match root.get("metadata").and_then(|m| m.get("labels")) {
        Some(l) => read_label_map(&l),
        None => Ok(Labels::new()),
    }
}

fn check_key(field: &str, key: &str) -> FResult<()> {
    qualified_name(key).map_err(|why| {
        invalid(
            field,
            format_args!("{key:?} is not a valid label key: {why}"),
        )
    })
}

fn check_value(field: &str, value: &str) -> FResult<()> {
    label_value(value).map_err(|why| {
        invalid(
            field,
            format_args!("{value:?} is not a valid label value: {why}"),
        )
    })
}

/// Whether `s` is a qualified name (a label key): an optional DNS
/// subdomain prefix and `/`, then a name of at most 63 alphanumerics,
/// `-`, `_` or `.`, starting and ending alphanumeric
/// (`validation.IsQualifiedName`). Why not otherwise.
pub(crate) fn qualified_name(s: &str) -> Result<(), &'static str> {
    let (prefix, name) = match s.split_once('/') {
        None => (None, s),
        Some((p, n)) => (Some(p), n),
    };
    if let Some(p) = prefix {
        if p.is_empty() {
            return Err("the prefix before '/' must be non-empty");
        }
        if !dns_subdomain(p) {
            return Err(
                "the prefix must be a DNS subdomain (lower-case alphanumerics, '-' and '.')",
            );
        }
    }
    if name.is_empty() {
        return Err("the name part must be non-empty");
    }
    label_value(name)
}

/// Whether `s` is a label value: empty, or at most 63 alphanumerics, `-`,
/// `_` or `.`, starting and ending alphanumeric
/// (`validation.IsValidLabelValue`). Why not otherwise.
pub(crate) fn label_value(s: &str) -> Result<(), &'static str> {
    let alnum = |c: u8| c.is_ascii_alphanumeric();
    if s.is_empty() {
        return Ok(());
    }
    if s.len() > 63 {
        return Err("at most 63 characters");
    }
    let ok = s
        .bytes()
        .all(|c| alnum(c) || c == b'-' || c == b'_' || c == b'.')
        && s.bytes().next().is_some_and(alnum)
        && s.bytes().last().is_some_and(alnum);
    if ok {
        Ok(())
    } else {
        Err("alphanumerics, '-', '_' or '.', starting and ending alphanumeric")
    }
}

/// Whether `s` is a DNS-1123 subdomain: at most 253 characters, dot-separated
/// labels of lower-case alphanumerics and `-`, each starting and ending
/// alphanumeric.
pub(crate) fn dns_subdomain(s: &str) -> bool {
    let ok = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.bytes().all(|c| ok(c) || c == b'-')
                && l.bytes().next().is_some_and(ok)
                && l.bytes().last().is_some_and(ok)
        })
}

#[cfg(test)]
#[path = "selector_tests.rs"]
mod tests;
