//! Reading twill's own JSON documents (the node configuration) into
//! `#[derive(Deserialize)]` structs, with `#[serde(deny_unknown_fields)]`
//! on each. Private to the crate; flannel's documents follow Go's rules
//! instead ([`crate::gojson`]).
//!
//! serde_json's own deserializer turns every error into text and loses
//! where it was. This one walks a parsed [`Value`], remembers the path of
//! each value (`peers[1].subnet`), and keeps serde's error hooks structured
//! (`unknown_field` with the keys that were expected, `missing_field`,
//! `invalid_type`), so that an error becomes the typed [`ConfigError`]
//! that names the field: [`ConfigError::UnknownKey`],
//! [`ConfigError::Missing`] or [`ConfigError::Invalid`].
//!
//! It drives every value through `deserialize_any`, which suits plain
//! structs of strings, numbers, booleans, options, sequences and raw
//! [`Value`]s; enums are not supported. A struct must be a JSON object (a
//! derived struct would also take an array, by position).

use std::fmt;

use serde::de::value::{MapDeserializer, SeqDeserializer};
use serde::de::{self, DeserializeOwned, IntoDeserializer, Visitor};
use serde::forward_to_deserialize_any;
use serde_json::Value;

use crate::error::{ConfigError, Doc};
use crate::gojson::kind;

/// Reads `v` into `T`; errors name the field by its path in `doc`.
pub(crate) fn from_value<T: DeserializeOwned>(doc: Doc, v: &Value) -> Result<T, ConfigError> {
    T::deserialize(At {
        v,
        path: String::new(),
    })
    .map_err(|e| e.into_config(doc))
}

/// A value and its path in the document (`""` for the document itself).
struct At<'a> {
    v: &'a Value,
    path: String,
}

/// serde's error while deserializing, then where it happened.
#[derive(Debug)]
pub(crate) struct Error {
    what: What,
    /// The value it is about; set by the innermost [`At`] the error passes.
    at: Option<Place>,
}

/// Where an error is: a value's path, its JSON text and its JSON type.
#[derive(Debug, Default)]
struct Place {
    path: String,
    value: String,
    kind: &'static str,
}

#[derive(Debug)]
enum What {
    /// A key the struct does not define.
    UnknownKey {
        key: String,
        expected: &'static [&'static str],
    },
    /// A required key of the struct is absent.
    Missing(&'static str),
    /// A value of the wrong JSON type: the type expected.
    Type(String),
    /// Anything else serde or a `Deserialize` impl says.
    Other(String),
}

fn child(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

impl Error {
    fn at(mut self, at: &At<'_>) -> Error {
        if self.at.is_none() {
            self.at = Some(Place {
                path: at.path.clone(),
                value: at.v.to_string(),
                kind: kind(at.v),
            });
        }
        self
    }

    fn into_config(self, doc: Doc) -> ConfigError {
        let Place { path, value, kind } = self.at.unwrap_or_default();
        let field = if path.is_empty() {
            "the document".to_owned()
        } else {
            path.clone()
        };
        match self.what {
            What::UnknownKey { key, expected } => ConfigError::UnknownKey {
                doc,
                within: path,
                key,
                expected,
            },
            What::Missing(key) => ConfigError::missing(doc, child(&path, key)),
            What::Type(expected) => {
                ConfigError::invalid(doc, field, value, format!("must be {expected}, not {kind}"))
            }
            What::Other(reason) => ConfigError::invalid(doc, field, value, reason),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.what {
            What::UnknownKey { key, .. } => write!(f, "unknown key {key:?}"),
            What::Missing(key) => write!(f, "{key} is missing"),
            What::Type(expected) => write!(f, "must be {expected}"),
            What::Other(reason) => f.write_str(reason),
        }
    }
}

impl std::error::Error for Error {}

impl de::Error for Error {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Error {
            what: What::Other(msg.to_string()),
            at: None,
        }
    }

    fn invalid_type(_: de::Unexpected<'_>, exp: &dyn de::Expected) -> Self {
        Error {
            what: What::Type(exp.to_string()),
            at: None,
        }
    }

    fn unknown_field(key: &str, expected: &'static [&'static str]) -> Self {
        Error {
            what: What::UnknownKey {
                key: key.to_owned(),
                expected,
            },
            at: None,
        }
    }

    fn missing_field(key: &'static str) -> Self {
        Error {
            what: What::Missing(key),
            at: None,
        }
    }
}

impl<'de> IntoDeserializer<'de, Error> for At<'_> {
    type Deserializer = Self;

    fn into_deserializer(self) -> Self {
        self
    }
}

impl<'de> de::Deserializer<'de> for At<'_> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let path = &self.path;
        let r = match self.v {
            Value::Null => visitor.visit_unit(),
            Value::Bool(b) => visitor.visit_bool(*b),
            Value::Number(n) => match (n.as_u64(), n.as_i64(), n.as_f64()) {
                (Some(u), _, _) => visitor.visit_u64(u),
                (None, Some(i), _) => visitor.visit_i64(i),
                (None, None, f) => visitor.visit_f64(f.unwrap_or(f64::NAN)),
            },
            Value::String(s) => visitor.visit_str(s),
            Value::Array(items) => visitor.visit_seq(SeqDeserializer::new(
                items.iter().enumerate().map(|(i, v)| At {
                    v,
                    path: format!("{path}[{i}]"),
                }),
            )),
            Value::Object(map) => {
                visitor.visit_map(MapDeserializer::new(map.iter().map(|(k, v)| {
                    (
                        k.as_str(),
                        At {
                            v,
                            path: child(path, k),
                        },
                    )
                })))
            }
        };
        r.map_err(|e| e.at(&self))
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.v {
            Value::Null => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        match self.v {
            Value::Object(_) => self.deserialize_any(visitor),
            _ => Err(Error {
                what: What::Type("a JSON object".into()),
                at: None,
            }
            .at(&self)),
        }
    }

    forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct newtype_struct seq tuple
        tuple_struct map enum identifier ignored_any
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;
    use serde_json::json;

    use super::*;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Outer {
        name: String,
        n: Option<u32>,
        #[serde(default)]
        items: Vec<Inner>,
        raw: Option<Value>,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Inner {
        a: bool,
    }

    fn read(v: Value) -> Result<Outer, ConfigError> {
        from_value(Doc::NodeConfig, &v)
    }

    #[test]
    fn reads_plain_structs() {
        let o = read(json!({"name": "x", "n": null, "items": [{"a": true}], "raw": {"K": [1]}}))
            .unwrap();
        assert_eq!(
            o,
            Outer {
                name: "x".into(),
                n: None,
                items: vec![Inner { a: true }],
                raw: Some(json!({"K": [1]})),
            }
        );
    }

    #[test]
    fn errors_name_the_field_by_its_path() {
        let e =
            read(json!({"name": "x", "items": [{"a": true}, {"a": true, "b": 1}]})).unwrap_err();
        assert!(
            matches!(&e, ConfigError::UnknownKey { within, key, expected, .. }
                if within == "items[1]" && key == "b" && *expected == ["a"]),
            "{e}"
        );
        let e = read(json!({"name": "x", "items": [{}]})).unwrap_err();
        assert_eq!(e.to_string(), "node config: items[0].a is missing");
        let e = read(json!({"name": "x", "n": "7"})).unwrap_err();
        assert_eq!(
            e.to_string(),
            "node config: n \"7\" is invalid: must be u32, not a string"
        );
        let e = read(json!({"name": "x", "n": -1})).unwrap_err();
        assert!(
            matches!(&e, ConfigError::Invalid { field, value, .. } if field == "n" && value == "-1"),
            "{e}"
        );
        let e = read(json!({"name": "x", "items": [[true]]})).unwrap_err();
        assert_eq!(
            e.to_string(),
            "node config: items[0] [true] is invalid: must be a JSON object, not an array"
        );
        let e = read(json!([])).unwrap_err();
        assert!(
            matches!(&e, ConfigError::Invalid { field, .. } if field == "the document"),
            "{e}"
        );
    }
}
