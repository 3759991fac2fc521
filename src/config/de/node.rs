//! The deserializer itself: serde's `Deserializer` over one located YAML node, lenient
//! where it can be and reporting to the `Sink` what it recovered from.

use serde::de::{self, DeserializeSeed, IntoDeserializer, MapAccess, SeqAccess, Visitor};

use super::{DeError, Sink, SPANNED_FIELDS, SPANNED_NAME};
use crate::config::yaml::{Node, NodeKind};

pub(super) struct NodeDe<'a> {
    pub(super) node: &'a Node,
    pub(super) sink: &'a Sink,
}

impl<'a> NodeDe<'a> {
    fn scalar(&self) -> Option<(&'a str, bool)> {
        match &self.node.kind {
            NodeKind::Scalar { text, plain } => Some((text.as_str(), *plain)),
            _ => None,
        }
    }

    fn mismatch(&self, expected: &str) {
        self.sink.push(
            self.node.mark,
            format!("expected {expected}, found {}", self.node.kind_name()),
        );
    }

    fn parse_number<T: std::str::FromStr>(&self, expected: &str) -> Option<T> {
        match self.scalar() {
            Some((text, _)) => match text.trim().replace('_', "").parse::<T>() {
                Ok(n) => Some(n),
                Err(_) => {
                    self.sink.push(
                        self.node.mark,
                        format!("expected {expected}, found `{text}`"),
                    );
                    None
                }
            },
            None => {
                self.mismatch(expected);
                None
            }
        }
    }
}

/// `seed` read from `node`, a part of the node being read, its problems going to the
/// same `sink`.
fn child<'de, S: DeserializeSeed<'de>>(
    seed: S,
    node: &Node,
    sink: &Sink,
) -> Result<S::Value, DeError> {
    seed.deserialize(NodeDe { node, sink })
}

const EMPTY_ENTRIES: &[(Node, Node)] = &[];
const EMPTY_ITEMS: &[Node] = &[];

/// The number methods differ only in the type parsed and the visitor method called; a
/// scalar that does not parse is an error recorded at its position, and 0 goes on so that
/// the rest of the file is still checked.
macro_rules! numbers {
    ($($method:ident => $visit:ident($ty:ty, $expected:literal)),* $(,)?) => {
        $(
            fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
                let n = self.parse_number::<$ty>($expected).unwrap_or_default();
                visitor
                    .$visit(n)
                    .map_err(|e: DeError| e.at(self.node.mark))
            }
        )*
    };
}
impl<'de, 'a> de::Deserializer<'de> for NodeDe<'a> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let mark = self.node.mark;
        let result = match &self.node.kind {
            _ if self.node.is_null() => visitor.visit_unit(),
            NodeKind::Scalar { text, plain: false } => visitor.visit_str(text),
            NodeKind::Scalar { text, plain: true } => match text.as_str() {
                "true" | "True" | "TRUE" => visitor.visit_bool(true),
                "false" | "False" | "FALSE" => visitor.visit_bool(false),
                _ => {
                    if let Ok(n) = text.parse::<u64>() {
                        visitor.visit_u64(n)
                    } else if let Ok(n) = text.parse::<i64>() {
                        visitor.visit_i64(n)
                    } else if let Ok(n) = text.parse::<f64>() {
                        visitor.visit_f64(n)
                    } else {
                        visitor.visit_str(text)
                    }
                }
            },
            NodeKind::Seq(items) => visitor.visit_seq(Items::new(items, self.sink)),
            NodeKind::Map(entries) => visitor.visit_map(Fields::new(entries, None, self.sink)),
        };
        result.map_err(|e: DeError| e.at(mark))
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let value = match self.scalar() {
            Some(("true" | "True" | "TRUE", true)) => true,
            Some(("false" | "False" | "FALSE", true)) => false,
            Some((text, _)) => {
                self.sink.push(
                    self.node.mark,
                    format!("expected true or false, found `{text}`"),
                );
                false
            }
            None => {
                self.mismatch("true or false");
                false
            }
        };
        visitor
            .visit_bool(value)
            .map_err(|e: DeError| e.at(self.node.mark))
    }

    numbers! {
        deserialize_u64 => visit_u64(u64, "a whole number"),
        deserialize_u32 => visit_u32(u32, "a whole number"),
        deserialize_i64 => visit_i64(i64, "a whole number"),
        deserialize_f64 => visit_f64(f64, "a number"),
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let text = match self.scalar() {
            Some((text, _)) => text,
            None => {
                self.mismatch("a value");
                ""
            }
        };
        visitor
            .visit_str(text)
            .map_err(|e: DeError| e.at(self.node.mark))
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        if self.node.is_null() {
            visitor.visit_none()
        } else {
            visitor.visit_some(self)
        }
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let items = match &self.node.kind {
            NodeKind::Seq(items) => items.as_slice(),
            _ if self.node.is_null() => EMPTY_ITEMS,
            _ => {
                self.mismatch("a list");
                EMPTY_ITEMS
            }
        };
        visitor
            .visit_seq(Items::new(items, self.sink))
            .map_err(|e: DeError| e.at(self.node.mark))
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let entries = self.entries_or_empty();
        visitor
            .visit_map(Fields::new(entries, None, self.sink))
            .map_err(|e: DeError| e.at(self.node.mark))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        if name == SPANNED_NAME {
            return visitor.visit_map(SpannedAccess {
                node: self.node,
                sink: self.sink,
                next: 0,
            });
        }
        let entries = self.entries_or_empty();
        visitor
            .visit_map(Fields::new(entries, Some(fields), self.sink))
            .map_err(|e: DeError| e.at(self.node.mark))
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_unit()
    }

    serde::forward_to_deserialize_any! {
        i8 i16 i32 i128 u8 u16 u128 f32 char bytes byte_buf unit unit_struct
        newtype_struct tuple tuple_struct enum
    }
}

impl<'a> NodeDe<'a> {
    fn entries_or_empty(&self) -> &'a [(Node, Node)] {
        match &self.node.kind {
            NodeKind::Map(entries) => entries.as_slice(),
            _ if self.node.is_null() => EMPTY_ENTRIES,
            _ => {
                self.mismatch("a mapping");
                EMPTY_ENTRIES
            }
        }
    }
}

struct Items<'a> {
    items: std::slice::Iter<'a, Node>,
    sink: &'a Sink,
}

impl<'a> Items<'a> {
    fn new(items: &'a [Node], sink: &'a Sink) -> Self {
        Items {
            items: items.iter(),
            sink,
        }
    }
}

impl<'de, 'a> SeqAccess<'de> for Items<'a> {
    type Error = DeError;
    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, DeError> {
        self.items
            .next()
            .map(|node| child(seed, node, self.sink))
            .transpose()
    }
}

/// A mapping's entries; with `fields`, unknown keys are recorded and skipped.
struct Fields<'a> {
    entries: std::slice::Iter<'a, (Node, Node)>,
    fields: Option<&'static [&'static str]>,
    value: Option<&'a Node>,
    sink: &'a Sink,
}

impl<'a> Fields<'a> {
    fn new(
        entries: &'a [(Node, Node)],
        fields: Option<&'static [&'static str]>,
        sink: &'a Sink,
    ) -> Self {
        Fields {
            entries: entries.iter(),
            fields,
            value: None,
            sink,
        }
    }
}

impl<'de, 'a> MapAccess<'de> for Fields<'a> {
    type Error = DeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DeError> {
        for (key, value) in self.entries.by_ref() {
            let NodeKind::Scalar { text, .. } = &key.kind else {
                self.sink.push(key.mark, "a key must be a plain name");
                continue;
            };
            if let Some(fields) = self.fields {
                if !fields.contains(&text.as_str()) {
                    self.sink.push(key.mark, unknown_key_message(text, fields));
                    continue;
                }
            }
            self.value = Some(value);
            return child(seed, key, self.sink).map(Some);
        }
        Ok(None)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, DeError> {
        let node = self
            .value
            .take()
            .ok_or_else(|| <DeError as de::Error>::custom("value asked for before its key"))?;
        child(seed, node, self.sink)
    }
}

/// Feeds [`Spanned`]'s visitor: line, column, then the node itself.
struct SpannedAccess<'a> {
    node: &'a Node,
    sink: &'a Sink,
    next: usize,
}

impl<'de, 'a> MapAccess<'de> for SpannedAccess<'a> {
    type Error = DeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DeError> {
        SPANNED_FIELDS
            .get(self.next)
            .map(|name| seed.deserialize(name.into_deserializer()))
            .transpose()
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, DeError> {
        let index = self.next;
        self.next += 1;
        match index {
            0 => seed.deserialize(self.node.mark.line.into_deserializer()),
            1 => seed.deserialize(self.node.mark.col.into_deserializer()),
            _ => child(seed, self.node, self.sink),
        }
    }
}

fn unknown_key_message(key: &str, fields: &[&str]) -> String {
    let closest = fields
        .iter()
        .map(|field| (edit_distance(key, field), field))
        .min_by_key(|(distance, _)| *distance);
    match closest {
        Some((distance, field)) if distance <= 2.max(key.len() / 3) => {
            format!("unknown key `{key}` (did you mean `{field}`?)")
        }
        _ => {
            let known: Vec<String> = fields.iter().map(|f| format!("`{f}`")).collect();
            format!("unknown key `{key}`; expected one of {}", known.join(", "))
        }
    }
}

/// Levenshtein distance, for "did you mean".
pub(super) fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != *cb);
            current[j + 1] = substitution.min(previous[j + 1] + 1).min(current[j] + 1);
        }
        previous = current;
    }
    previous[b.len()]
}
