//! serde over the located YAML tree, collecting every error instead of stopping at the first.
//!
//! Design note: serde's derived code gives up at the first error, and a value of the wrong
//! shape cannot be invented by the caller. So this deserializer is lenient where it can be
//! and records the problem in a [`Sink`] instead:
//! - an unknown key is recorded (with a "did you mean" when one is close) and skipped, so
//!   the derived struct never sees it (`deny_unknown_fields` stays on as a safety net);
//! - a value of the wrong shape is recorded and replaced by an empty one (an empty mapping
//!   for a struct, an empty list for a sequence, `false`/`0`/`""` for scalars).
//!
//! The mirror types make every field optional, so a replaced value never cascades into a
//! "missing field" error; the model layer checks what is required and reports it with the
//! position of the enclosing mapping. [`Spanned`] gives the model the position of any value.

use std::cell::RefCell;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, DeserializeSeed, IntoDeserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use super::yaml::{Mark, Node, NodeKind};

/// A problem found while reading the tree.
#[derive(Debug, Clone, PartialEq)]
pub struct Located {
    pub mark: Mark,
    pub message: String,
}

/// Where the lenient deserializer puts what it recovered from.
#[derive(Debug, Default)]
pub struct Sink {
    errors: RefCell<Vec<Located>>,
}

impl Sink {
    pub fn push(&self, mark: Mark, message: impl Into<String>) {
        self.errors.borrow_mut().push(Located {
            mark,
            message: message.into(),
        });
    }

    pub fn into_errors(self) -> Vec<Located> {
        self.errors.into_inner()
    }
}

/// The error serde sees; carries a position once one is known.
#[derive(Debug, Clone, PartialEq)]
pub struct DeError {
    pub mark: Option<Mark>,
    pub message: String,
}

impl fmt::Display for DeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for DeError {}

impl de::Error for DeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        DeError {
            mark: None,
            message: msg.to_string(),
        }
    }
}

impl DeError {
    fn at(mut self, mark: Mark) -> Self {
        self.mark.get_or_insert(mark);
        self
    }
}

/// Deserializes `T` from `root`; returns what could be read and every problem met.
pub fn from_node<'de, T: Deserialize<'de>>(root: &Node) -> (Option<T>, Vec<Located>) {
    let sink = Sink::default();
    let result = T::deserialize(NodeDe {
        node: root,
        sink: &sink,
    });
    let mut errors = sink.into_errors();
    let value = match result {
        Ok(value) => Some(value),
        Err(err) => {
            errors.push(Located {
                mark: err.mark.unwrap_or(root.mark),
                message: err.message,
            });
            None
        }
    };
    (value, errors)
}

/// A value and where it was written.
#[derive(Debug, Clone, PartialEq)]
pub struct Spanned<T> {
    pub value: T,
    pub mark: Mark,
}

const SPANNED_NAME: &str = "$cutover::Spanned";
const SPANNED_LINE: &str = "$line";
const SPANNED_COL: &str = "$col";
const SPANNED_VALUE: &str = "$value";
const SPANNED_FIELDS: &[&str] = &[SPANNED_LINE, SPANNED_COL, SPANNED_VALUE];

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Spanned<T> {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SpannedVisitor<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for SpannedVisitor<T> {
            type Value = Spanned<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a value with its position")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Spanned<T>, A::Error> {
                let (Some(_), line) = (map.next_key::<String>()?, map.next_value::<u32>()?) else {
                    return Err(de::Error::custom("spanned: no line"));
                };
                let (Some(_), col) = (map.next_key::<String>()?, map.next_value::<u32>()?) else {
                    return Err(de::Error::custom("spanned: no column"));
                };
                let (Some(_), value) = (map.next_key::<String>()?, map.next_value::<T>()?) else {
                    return Err(de::Error::custom("spanned: no value"));
                };
                Ok(Spanned {
                    value,
                    mark: Mark { line, col },
                })
            }
        }
        deserializer.deserialize_struct(SPANNED_NAME, SPANNED_FIELDS, SpannedVisitor(PhantomData))
    }
}

/// An ordered mapping whose keys keep their positions (hook names, header maps).
#[derive(Debug, Clone, PartialEq)]
pub struct Entries<T>(pub Vec<(Spanned<String>, T)>);

impl<T> Default for Entries<T> {
    fn default() -> Self {
        Entries(Vec::new())
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Entries<T> {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct EntriesVisitor<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for EntriesVisitor<T> {
            type Value = Entries<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a mapping")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Entries<T>, A::Error> {
                let mut entries = Vec::new();
                while let Some(key) = map.next_key::<Spanned<String>>()? {
                    entries.push((key, map.next_value::<T>()?));
                }
                Ok(Entries(entries))
            }
        }
        deserializer.deserialize_map(EntriesVisitor(PhantomData))
    }
}

/// A key that is there or not, whatever its value (`- pause: {}` and `- pause:` alike).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Present(pub Option<Mark>);

impl<'de> Deserialize<'de> for Present {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Empty {}
        let spanned = Spanned::<Empty>::deserialize(deserializer)?;
        Ok(Present(Some(spanned.mark)))
    }
}

struct NodeDe<'a> {
    node: &'a Node,
    sink: &'a Sink,
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

const EMPTY_ENTRIES: &[(Node, Node)] = &[];
const EMPTY_ITEMS: &[Node] = &[];

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

    fn deserialize_u64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let n = self.parse_number::<u64>("a whole number").unwrap_or(0);
        visitor
            .visit_u64(n)
            .map_err(|e: DeError| e.at(self.node.mark))
    }

    fn deserialize_u32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let n = self.parse_number::<u32>("a whole number").unwrap_or(0);
        visitor
            .visit_u32(n)
            .map_err(|e: DeError| e.at(self.node.mark))
    }

    fn deserialize_i64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let n = self.parse_number::<i64>("a whole number").unwrap_or(0);
        visitor
            .visit_i64(n)
            .map_err(|e: DeError| e.at(self.node.mark))
    }

    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let n = self.parse_number::<f64>("a number").unwrap_or(0.0);
        visitor
            .visit_f64(n)
            .map_err(|e: DeError| e.at(self.node.mark))
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
        match self.items.next() {
            Some(node) => seed
                .deserialize(NodeDe {
                    node,
                    sink: self.sink,
                })
                .map(Some),
            None => Ok(None),
        }
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
            return seed
                .deserialize(NodeDe {
                    node: key,
                    sink: self.sink,
                })
                .map(Some);
        }
        Ok(None)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, DeError> {
        let node = self
            .value
            .take()
            .ok_or_else(|| <DeError as de::Error>::custom("value asked for before its key"))?;
        seed.deserialize(NodeDe {
            node,
            sink: self.sink,
        })
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
        match SPANNED_FIELDS.get(self.next) {
            Some(name) => seed.deserialize(name.into_deserializer()).map(Some),
            None => Ok(None),
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, DeError> {
        let index = self.next;
        self.next += 1;
        match index {
            0 => seed.deserialize(self.node.mark.line.into_deserializer()),
            1 => seed.deserialize(self.node.mark.col.into_deserializer()),
            _ => seed.deserialize(NodeDe {
                node: self.node,
                sink: self.sink,
            }),
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
fn edit_distance(a: &str, b: &str) -> usize {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::yaml::parse;

    #[derive(Debug, Deserialize, PartialEq, Default)]
    #[serde(deny_unknown_fields)]
    struct Inner {
        hold: Option<Spanned<String>>,
        count: Option<u64>,
    }

    #[derive(Debug, Deserialize, PartialEq, Default)]
    #[serde(deny_unknown_fields)]
    struct Outer {
        name: Option<Spanned<String>>,
        inner: Option<Spanned<Inner>>,
        items: Option<Vec<Spanned<Inner>>>,
        flag: Option<bool>,
        #[serde(default)]
        pause: Present,
        hooks: Option<Entries<u64>>,
    }

    fn read(src: &str) -> (Option<Outer>, Vec<Located>) {
        from_node(&parse(src).unwrap())
    }

    #[test]
    fn spans_point_at_values() {
        let (outer, errors) = read("name: api\ninner:\n  hold: 10m\n");
        assert!(errors.is_empty(), "{errors:?}");
        let outer = outer.unwrap();
        assert_eq!(outer.name.unwrap().mark, Mark { line: 1, col: 7 });
        let inner = outer.inner.unwrap();
        assert_eq!(inner.mark.line, 3);
        assert_eq!(inner.value.hold.unwrap().mark, Mark { line: 3, col: 9 });
    }

    #[test]
    fn every_unknown_key_is_reported_with_a_suggestion() {
        let (outer, errors) = read("nmae: api\ninner:\n  hodl: 10m\nitems:\n  - zzz: 1\n");
        assert!(outer.is_some());
        assert_eq!(errors.len(), 3, "{errors:?}");
        assert_eq!(errors[0].mark, Mark { line: 1, col: 1 });
        assert!(
            errors[0].message.contains("did you mean `name`"),
            "{}",
            errors[0].message
        );
        assert_eq!(errors[1].mark, Mark { line: 3, col: 3 });
        assert!(errors[1].message.contains("`hodl`") && errors[1].message.contains("`hold`"));
        assert!(
            errors[2].message.contains("expected one of"),
            "{}",
            errors[2].message
        );
    }

    #[test]
    fn wrong_shapes_are_recorded_and_replaced() {
        let (outer, errors) = read("inner: 5\nitems: {a: 1}\nflag: maybe\nname: [1]\n");
        let outer = outer.unwrap();
        assert_eq!(errors.len(), 4, "{errors:?}");
        assert_eq!(outer.inner.unwrap().value, Inner::default());
        assert_eq!(outer.items.unwrap(), vec![]);
        assert_eq!(outer.flag, Some(false));
        assert_eq!(errors[0].mark.line, 1);
        assert!(errors[0].message.contains("expected a mapping"));
        assert!(errors[2].message.contains("true or false"));
    }

    #[test]
    fn numbers_that_do_not_parse_are_reported() {
        let (_, errors) = read("inner:\n  count: lots\n");
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].mark, Mark { line: 2, col: 10 });
    }

    #[test]
    fn present_sees_a_key_even_with_an_empty_value() {
        let (outer, _) = read("pause:\n");
        assert!(outer.unwrap().pause.0.is_some());
        let (outer, _) = read("pause: {}\n");
        assert!(outer.unwrap().pause.0.is_some());
        let (outer, _) = read("name: x\n");
        assert!(outer.unwrap().pause.0.is_none());
    }

    #[test]
    fn entries_keep_order_and_key_positions() {
        let (outer, errors) = read("hooks:\n  b: 1\n  a: 2\n");
        assert!(errors.is_empty());
        let hooks = outer.unwrap().hooks.unwrap().0;
        assert_eq!(hooks[0].0.value, "b");
        assert_eq!(hooks[1].0.mark, Mark { line: 3, col: 3 });
        assert_eq!(hooks[1].1, 2);
    }

    #[test]
    fn edit_distance_is_levenshtein() {
        assert_eq!(edit_distance("hodl", "hold"), 2);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("weight", "weight"), 0);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }
}
