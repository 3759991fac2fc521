//! A YAML document as a tree whose every node knows where it was written.
//!
//! `serde_yaml` reports at most one error and only for what serde itself rejects; an
//! operator fixing a config wants every problem at once, each with `file:line:col`,
//! including the semantic ones found after parsing (a hook that does not exist, a weight of
//! 120%). So the file is parsed here into [`Node`]s carrying a [`Mark`], and the serde
//! mirror is deserialized from that tree (see `de.rs`), which keeps every position.
//!
//! Anchors and aliases are expanded; duplicate keys in a mapping are an error (YAML says
//! they are, and silently taking the last one hides typos).

use std::collections::HashMap;
use std::fmt;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// A position in the source: 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Mark {
    pub line: u32,
    pub col: u32,
}

impl Mark {
    fn from_marker(marker: &Marker) -> Self {
        // yaml-rust2 counts lines from 1 and columns from 0.
        Mark {
            line: marker.line() as u32,
            col: marker.col() as u32 + 1,
        }
    }
}

impl fmt::Display for Mark {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.col)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum NodeKind {
    /// A scalar as written. `plain` is false for quoted and block scalars, which are
    /// always strings; a plain scalar may be a null, a bool or a number.
    Scalar {
        text: String,
        plain: bool,
    },
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub kind: NodeKind,
    pub mark: Mark,
}

impl Node {
    /// True for `~`, `null`, `Null`, `NULL` and the empty plain scalar.
    pub fn is_null(&self) -> bool {
        matches!(&self.kind, NodeKind::Scalar { text, plain: true }
            if matches!(text.as_str(), "" | "~" | "null" | "Null" | "NULL"))
    }

    /// The value under `key`, if this is a mapping that has it.
    pub fn get(&self, key: &str) -> Option<&Node> {
        match &self.kind {
            NodeKind::Map(entries) => entries.iter().find_map(|(k, v)| match &k.kind {
                NodeKind::Scalar { text, .. } if text == key => Some(v),
                _ => None,
            }),
            _ => None,
        }
    }

    /// The text of a scalar.
    pub fn as_str(&self) -> Option<&str> {
        match &self.kind {
            NodeKind::Scalar { text, .. } => Some(text),
            _ => None,
        }
    }

    /// A short name for the node's kind, for error messages.
    pub fn kind_name(&self) -> &'static str {
        match &self.kind {
            _ if self.is_null() => "nothing",
            NodeKind::Scalar { .. } => "a value",
            NodeKind::Seq(_) => "a list",
            NodeKind::Map(_) => "a mapping",
        }
    }
}

/// A syntax error: where, and what.
#[derive(Debug, Clone, PartialEq)]
pub struct SyntaxError {
    pub mark: Mark,
    pub message: String,
}

/// Parses one YAML document. An empty file is an empty mapping.
pub fn parse(source: &str) -> Result<Node, SyntaxError> {
    let mut builder = TreeBuilder::default();
    let mut parser = Parser::new_from_str(source);
    parser.load(&mut builder, true).map_err(|err| SyntaxError {
        mark: Mark::from_marker(err.marker()),
        message: err.info().to_string(),
    })?;
    if let Some(error) = builder.error {
        return Err(error);
    }
    Ok(builder.root.unwrap_or(Node {
        kind: NodeKind::Map(Vec::new()),
        mark: Mark { line: 1, col: 1 },
    }))
}

/// Collects parser events into a tree.
#[derive(Default)]
struct TreeBuilder {
    /// Open collections; a mapping's pending key waits in `pending_key`.
    stack: Vec<Open>,
    anchors: HashMap<usize, Node>,
    root: Option<Node>,
    error: Option<SyntaxError>,
    documents: usize,
}

struct Open {
    node: Node,
    anchor: usize,
    pending_key: Option<Node>,
}

impl TreeBuilder {
    fn push_value(&mut self, node: Node, anchor: usize) {
        if anchor > 0 {
            self.anchors.insert(anchor, node.clone());
        }
        let Some(parent) = self.stack.last_mut() else {
            self.root = Some(node);
            return;
        };
        match &mut parent.node.kind {
            NodeKind::Seq(items) => items.push(node),
            NodeKind::Map(entries) => match parent.pending_key.take() {
                None => parent.pending_key = Some(node),
                Some(key) => {
                    if let NodeKind::Scalar { text, .. } = &key.kind {
                        let first = entries.iter().find(
                            |(k, _)| matches!(&k.kind, NodeKind::Scalar { text: t, .. } if t == text),
                        );
                        if let Some((first, _)) = first {
                            if self.error.is_none() {
                                self.error = Some(SyntaxError {
                                    mark: key.mark,
                                    message: format!(
                                        "duplicate key `{text}` (first written at line {})",
                                        first.mark.line
                                    ),
                                });
                            }
                        }
                    }
                    entries.push((key, node));
                }
            },
            NodeKind::Scalar { .. } => unreachable!("scalars are never open"),
        }
    }
}

impl MarkedEventReceiver for TreeBuilder {
    fn on_event(&mut self, event: Event, marker: Marker) {
        let mark = Mark::from_marker(&marker);
        match event {
            Event::DocumentStart => {
                self.documents += 1;
                if self.documents > 1 && self.error.is_none() {
                    self.error = Some(SyntaxError {
                        mark,
                        message: "a config file holds one YAML document; found a second `---`"
                            .to_string(),
                    });
                }
            }
            Event::Scalar(text, style, anchor, _tag) => {
                let plain = style == TScalarStyle::Plain;
                self.push_value(
                    Node {
                        kind: NodeKind::Scalar { text, plain },
                        mark,
                    },
                    anchor,
                );
            }
            Event::SequenceStart(anchor, _tag) => self.stack.push(Open {
                node: Node {
                    kind: NodeKind::Seq(Vec::new()),
                    mark,
                },
                anchor,
                pending_key: None,
            }),
            Event::MappingStart(anchor, _tag) => self.stack.push(Open {
                node: Node {
                    kind: NodeKind::Map(Vec::new()),
                    mark,
                },
                anchor,
                pending_key: None,
            }),
            Event::SequenceEnd | Event::MappingEnd => {
                if let Some(open) = self.stack.pop() {
                    self.push_value(open.node, open.anchor);
                }
            }
            Event::Alias(id) => {
                let node = match self.anchors.get(&id) {
                    Some(node) => Node {
                        kind: node.kind.clone(),
                        mark,
                    },
                    None => Node {
                        kind: NodeKind::Scalar {
                            text: String::new(),
                            plain: true,
                        },
                        mark,
                    },
                };
                self.push_value(node, 0);
            }
            Event::Nothing | Event::StreamStart | Event::StreamEnd | Event::DocumentEnd => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map_entries(node: &Node) -> &[(Node, Node)] {
        match &node.kind {
            NodeKind::Map(entries) => entries,
            other => panic!("expected a map, got {other:?}"),
        }
    }

    #[test]
    fn marks_are_one_based_line_and_column() {
        let root = parse("a: 1\nbb:\n  c: x\n").unwrap();
        let entries = map_entries(&root);
        assert_eq!(entries[0].0.mark, Mark { line: 1, col: 1 });
        assert_eq!(entries[1].0.mark, Mark { line: 2, col: 1 });
        let inner = map_entries(&entries[1].1);
        assert_eq!(inner[0].0.mark, Mark { line: 3, col: 3 });
        assert_eq!(inner[0].1.mark, Mark { line: 3, col: 6 });
    }

    #[test]
    fn quoted_scalars_are_not_plain() {
        let root = parse("a: \"5\"\nb: 5\n").unwrap();
        let entries = map_entries(&root);
        assert!(matches!(
            &entries[0].1.kind,
            NodeKind::Scalar { plain: false, .. }
        ));
        assert!(matches!(
            &entries[1].1.kind,
            NodeKind::Scalar { plain: true, .. }
        ));
    }

    #[test]
    fn duplicate_keys_are_errors_with_both_lines() {
        let err = parse("a: 1\nb: 2\na: 3\n").unwrap_err();
        assert_eq!(err.mark.line, 3);
        assert!(
            err.message.contains("first written at line 1"),
            "{}",
            err.message
        );
    }

    #[test]
    fn aliases_expand_to_the_anchored_node() {
        let root = parse("base: &b {x: 1}\nother: *b\n").unwrap();
        let entries = map_entries(&root);
        assert_eq!(entries[0].1.kind, entries[1].1.kind);
        assert_eq!(entries[1].1.mark.line, 2);
    }

    #[test]
    fn syntax_errors_have_a_position() {
        let err = parse("a: [1, 2\nb: 3\n").unwrap_err();
        assert!(err.mark.line >= 1);
        assert!(!err.message.is_empty());
    }

    #[test]
    fn empty_document_is_an_empty_map() {
        let root = parse("").unwrap();
        assert!(map_entries(&root).is_empty());
    }

    #[test]
    fn a_second_document_is_refused() {
        let err = parse("a: 1\n---\nb: 2\n").unwrap_err();
        assert!(err.message.contains("one YAML document"));
    }
}
