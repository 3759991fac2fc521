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

use serde::de::{self, MapAccess, Visitor};
use serde::Deserialize;

mod node;

use super::yaml::{Mark, Node};
use node::NodeDe;

/// A problem found while reading the tree.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Located {
    pub mark: Mark,
    pub message: String,
}

/// Where the lenient deserializer puts what it recovered from.
#[derive(Debug, Default)]
pub(super) struct Sink {
    errors: RefCell<Vec<Located>>,
}

impl Sink {
    pub(super) fn push(&self, mark: Mark, message: impl Into<String>) {
        self.errors.borrow_mut().push(Located {
            mark,
            message: message.into(),
        });
    }

    pub(super) fn into_errors(self) -> Vec<Located> {
        self.errors.into_inner()
    }
}

/// The error serde sees; carries a position once one is known.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct DeError {
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
pub(super) fn from_node<'de, T: Deserialize<'de>>(root: &Node) -> (Option<T>, Vec<Located>) {
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
pub(super) struct Spanned<T> {
    pub value: T,
    pub mark: Mark,
}

const SPANNED_NAME: &str = "$cutover::Spanned";
const SPANNED_LINE: &str = "$line";
const SPANNED_COL: &str = "$col";
const SPANNED_VALUE: &str = "$value";
const SPANNED_FIELDS: &[&str] = &[SPANNED_LINE, SPANNED_COL, SPANNED_VALUE];

/// A value read from one mapping: what `Spanned` and `Entries` need of serde's `Visitor`.
trait FromMap<'de>: Sized {
    /// What the value is, for serde's "invalid type" message.
    const EXPECTING: &'static str;
    fn from_map<A: MapAccess<'de>>(map: A) -> Result<Self, A::Error>;
}

/// The visitor of every [`FromMap`] type.
struct MapVisitor<T>(PhantomData<T>);

impl<'de, T: FromMap<'de>> Visitor<'de> for MapVisitor<T> {
    type Value = T;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(T::EXPECTING)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
        T::from_map(map)
    }
}

/// The value of the next entry of `map`; `missing` is the error when there is none.
fn next_value<'de, A: MapAccess<'de>, V: Deserialize<'de>>(
    map: &mut A,
    missing: &str,
) -> Result<V, A::Error> {
    let entry = map.next_entry::<String, V>()?;
    entry
        .map(|(_, value)| value)
        .ok_or_else(|| de::Error::custom(missing))
}

impl<'de, T: Deserialize<'de>> FromMap<'de> for Spanned<T> {
    const EXPECTING: &'static str = "a value with its position";
    fn from_map<A: MapAccess<'de>>(mut map: A) -> Result<Self, A::Error> {
        let line = next_value(&mut map, "spanned: no line")?;
        let col = next_value(&mut map, "spanned: no column")?;
        let value = next_value(&mut map, "spanned: no value")?;
        Ok(Spanned {
            value,
            mark: Mark { line, col },
        })
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Spanned<T> {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_struct(SPANNED_NAME, SPANNED_FIELDS, MapVisitor(PhantomData))
    }
}

/// An ordered mapping whose keys keep their positions (hook names, header maps).
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Entries<T>(pub Vec<(Spanned<String>, T)>);

impl<T> Default for Entries<T> {
    fn default() -> Self {
        Entries(Vec::new())
    }
}

impl<'de, T: Deserialize<'de>> FromMap<'de> for Entries<T> {
    const EXPECTING: &'static str = "a mapping";
    fn from_map<A: MapAccess<'de>>(mut map: A) -> Result<Self, A::Error> {
        let mut entries = Vec::new();
        while let Some(entry) = map.next_entry::<Spanned<String>, T>()? {
            entries.push(entry);
        }
        Ok(Entries(entries))
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Entries<T> {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(MapVisitor(PhantomData))
    }
}

/// A key that is there or not, whatever its value (`- pause: {}` and `- pause:` alike).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub(super) struct Present(pub Option<Mark>);

impl<'de> Deserialize<'de> for Present {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Empty {}
        let spanned = Spanned::<Empty>::deserialize(deserializer)?;
        Ok(Present(Some(spanned.mark)))
    }
}

#[cfg(test)]
mod tests;
