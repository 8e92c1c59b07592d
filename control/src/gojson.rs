//! Reading flannel's JSON documents the way Go's `encoding/json` fills a
//! struct: keys match field names case-insensitively (`"network"` sets
//! `Network`), unknown keys are ignored, and `null` leaves a plain value
//! (number, bool, string) at its default. Private to the crate.
//!
//! One deliberate difference: Go lets the later of two keys that differ only
//! in case win; here that is an [`ConfigError::AmbiguousKey`] error, because
//! serde_json's map does not keep the document order and a silent pick would
//! be a guess.

use std::net::Ipv4Addr;

use serde_json::{Map, Value};

use crate::error::{ConfigError, Doc};

/// A JSON object being read as a Go struct.
pub(crate) struct Obj<'a> {
    doc: Doc,
    /// Prefix of field names in messages (`""`, `"Backend."`).
    prefix: &'static str,
    map: &'a Map<String, Value>,
}

/// The JSON type of `v`, for messages.
pub(crate) fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

impl<'a> Obj<'a> {
    /// `v` as an object; `what` names it in the error.
    pub(crate) fn new(
        doc: Doc,
        prefix: &'static str,
        what: &str,
        v: &'a Value,
    ) -> Result<Self, ConfigError> {
        match v {
            Value::Object(map) => Ok(Obj { doc, prefix, map }),
            other => Err(ConfigError::invalid(
                doc,
                what,
                other.to_string(),
                format!("must be a JSON object, not {}", kind(other)),
            )),
        }
    }

    /// The field name as it appears in messages.
    pub(crate) fn name(&self, field: &str) -> String {
        format!("{}{field}", self.prefix)
    }

    /// The value of `field`, matched case-insensitively (JSON `null` included).
    pub(crate) fn get(&self, field: &str) -> Result<Option<&'a Value>, ConfigError> {
        let mut found: Option<(&'a String, &'a Value)> = None;
        for (k, v) in self.map {
            if k.eq_ignore_ascii_case(field) {
                if let Some((first, _)) = found {
                    return Err(ConfigError::AmbiguousKey {
                        doc: self.doc,
                        field: self.name(field),
                        first: first.clone(),
                        second: k.clone(),
                    });
                }
                found = Some((k, v));
            }
        }
        Ok(found.map(|(_, v)| v))
    }

    fn invalid(&self, field: &str, v: &Value, reason: impl Into<String>) -> ConfigError {
        ConfigError::invalid(self.doc, self.name(field), v.to_string(), reason)
    }

    /// An integer field (Go `int`/`uint`): absent or `null` is `None`; a
    /// fraction, exponent or non-number is an error, as in Go.
    pub(crate) fn int(&self, field: &str) -> Result<Option<i64>, ConfigError> {
        match self.get(field)? {
            None | Some(Value::Null) => Ok(None),
            Some(v @ Value::Number(n)) => match n.as_i64() {
                Some(i) => Ok(Some(i)),
                None if n.is_u64() => Err(self.invalid(field, v, "is out of range")),
                None => Err(self.invalid(field, v, "must be an integer")),
            },
            Some(v) => Err(self.invalid(field, v, format!("must be a number, not {}", kind(v)))),
        }
    }

    /// A boolean field: absent or `null` is `None`.
    pub(crate) fn bool(&self, field: &str) -> Result<Option<bool>, ConfigError> {
        match self.get(field)? {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(v) => Err(self.invalid(field, v, format!("must be a boolean, not {}", kind(v)))),
        }
    }

    /// A string field (Go `string`): absent or `null` is `None`.
    pub(crate) fn string(&self, field: &str) -> Result<Option<&'a str>, ConfigError> {
        match self.get(field)? {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(v) => Err(self.invalid(field, v, format!("must be a string, not {}", kind(v)))),
        }
    }

    /// An IPv4 address field (flannel's `ip.IP4`): absent is `None`; `null`
    /// is an error, since Go hands it to `IP4.UnmarshalJSON`, which rejects it.
    pub(crate) fn ipv4(&self, field: &str) -> Result<Option<Ipv4Addr>, ConfigError> {
        match self.get(field)? {
            None => Ok(None),
            Some(v @ Value::String(s)) => s
                .parse()
                .map(Some)
                .map_err(|_| self.invalid(field, v, "is not an IPv4 address")),
            Some(v) => Err(self.invalid(
                field,
                v,
                format!("must be an IPv4 address string, not {}", kind(v)),
            )),
        }
    }
}
