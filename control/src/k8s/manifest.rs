//! Manifest files: one or many objects in JSON (`kubectl get -o json`,
//! concatenated objects too) or YAML (`---`-separated documents), each
//! document an object or a `kind: List` (or `ServiceList`, …) with
//! `items`. Objects of kinds twill does not read are skipped and named.

use serde::Deserialize;
use serde_json::Value;

use super::{describe, kind_of, K8sError, Object};

/// The objects of a manifest file.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Manifests {
    /// Every object of a kind twill reads ([`Object`]), in file order.
    pub objects: Vec<Object>,
    /// The objects of other kinds, named (`Deployment default/web`).
    pub skipped: Vec<String>,
}

/// Reads a manifest file's text: JSON when it starts with `{`, YAML
/// otherwise. Empty YAML documents are skipped. An error names the
/// document (counting from 1), the list item and the field.
pub fn parse_manifests(text: &str) -> Result<Manifests, K8sError> {
    let mut out = Manifests::default();
    if text.trim_start().starts_with('{') {
        let stream = serde_json::Deserializer::from_str(text).into_iter::<Value>();
        for (i, doc) in stream.enumerate() {
            let doc = doc.map_err(K8sError::Json)?;
            add_document(&mut out, doc).map_err(|e| in_document(i, e))?;
        }
    } else {
        for (i, doc) in serde_norway::Deserializer::from_str(text).enumerate() {
            let doc = Value::deserialize(doc).map_err(|error| K8sError::Yaml {
                index: i + 1,
                error,
            })?;
            if doc.is_null() {
                continue;
            }
            add_document(&mut out, doc).map_err(|e| in_document(i, e))?;
        }
    }
    Ok(out)
}

fn in_document(i: usize, error: K8sError) -> K8sError {
    K8sError::Document {
        index: i + 1,
        error: Box::new(error),
    }
}

fn not_an_object(v: &Value) -> Option<K8sError> {
    let found = match v {
        Value::Object(_) => return None,
        Value::Array(_) => "a list",
        Value::String(_) => "a string",
        Value::Number(_) => "a number",
        Value::Bool(_) => "a boolean",
        Value::Null => "null",
    };
    Some(K8sError::Invalid {
        object: "top level".into(),
        field: String::new(),
        reason: format!("expected an object with apiVersion and kind, found {found}"),
    })
}

fn add_document(out: &mut Manifests, doc: Value) -> Result<(), K8sError> {
    if let Some(e) = not_an_object(&doc) {
        return Err(e);
    }
    let kind = doc
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let is_list = kind == "List" || (kind.ends_with("List") && doc.get("items").is_some());
    if !is_list {
        return add_object(out, doc);
    }
    // `ServiceList` from the API server leaves kind and apiVersion out of
    // its items; `kind: List` (kubectl) has them in every item.
    let item_kind = kind.strip_suffix("List").unwrap_or_default().to_owned();
    let api_version = doc.get("apiVersion").cloned();
    let Value::Object(mut map) = doc else {
        return Ok(());
    };
    let items = match map.remove("items") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items,
        Some(_) => {
            return Err(K8sError::Invalid {
                object: kind.clone(),
                field: "items".into(),
                reason: "expected a list".into(),
            })
        }
    };
    for (i, mut item) in items.into_iter().enumerate() {
        let wrap = |error| K8sError::Item {
            index: i,
            error: Box::new(error),
        };
        if let Some(e) = not_an_object(&item) {
            return Err(wrap(e));
        }
        if let (false, Value::Object(m)) = (item_kind.is_empty(), &mut item) {
            m.entry("kind")
                .or_insert_with(|| Value::String(item_kind.clone()));
            if let Some(v) = &api_version {
                m.entry("apiVersion").or_insert_with(|| v.clone());
            }
        }
        add_object(out, item).map_err(wrap)?;
    }
    Ok(())
}

fn add_object(out: &mut Manifests, value: Value) -> Result<(), K8sError> {
    let kind = value
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if kind.is_empty() {
        return Err(K8sError::Invalid {
            object: describe(&value),
            field: "kind".into(),
            reason: "is missing".into(),
        });
    }
    if kind_of(&value).is_some() {
        out.objects.push(Object::from_value(value)?);
    } else {
        out.skipped.push(describe(&value));
    }
    Ok(())
}

#[cfg(test)]
#[path = "manifest_tests.rs"]
mod tests;
