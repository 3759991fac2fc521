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

/// The largest config text [`parse`] accepts: a real config is a few KiB.
pub const MAX_SOURCE_BYTES: usize = 4 * 1024 * 1024;
/// The deepest nesting of lists and mappings [`parse`] accepts: a real config needs fewer
/// than 12 levels, and deeper trees would only cost stack in every later pass.
pub const MAX_DEPTH: usize = 64;
/// The most nodes that aliases may add to the tree, counting every node of every expanded
/// copy: a "billion laughs" file of a few hundred bytes would otherwise grow without end.
pub const MAX_ALIAS_NODES: usize = 100_000;

/// Parses one YAML document. An empty file is an empty mapping.
///
/// Hostile input is refused quickly and in bounded memory: a text larger than
/// [`MAX_SOURCE_BYTES`], nesting deeper than [`MAX_DEPTH`], aliases expanding to more than
/// [`MAX_ALIAS_NODES`] nodes. The parser is driven event by event here (yaml-rust2's own
/// `load` recurses once per level of nesting), so a limit stops it at the event that
/// crosses it.
pub fn parse(source: &str) -> Result<Node, SyntaxError> {
    if source.len() > MAX_SOURCE_BYTES {
        return Err(SyntaxError {
            mark: Mark { line: 1, col: 1 },
            message: format!(
                "the file is {} bytes, more than the {} MiB a config may have",
                source.len(),
                MAX_SOURCE_BYTES / (1024 * 1024)
            ),
        });
    }
    let mut builder = TreeBuilder::default();
    let mut parser = Parser::new_from_str(source);
    loop {
        let (event, marker) = parser.next_token().map_err(|err| SyntaxError {
            mark: Mark::from_marker(err.marker()),
            // The scanner reads ahead through `[[[[...` (any of them might start a key) and
            // gives up at 256 levels of flow nesting, before the 65th reaches the builder.
            message: match err.info() {
                "recursion limit exceeded" => depth_message(),
                info => info.to_string(),
            },
        })?;
        let end = event == Event::StreamEnd;
        builder.on_event(event, marker);
        if let Some(error) = builder.error.take_if(|e| e.fatal) {
            return Err(error.error);
        }
        if end {
            break;
        }
    }
    if let Some(error) = builder.error {
        return Err(error.error);
    }
    Ok(builder.root.unwrap_or(Node {
        kind: NodeKind::Map(Vec::new()),
        mark: Mark { line: 1, col: 1 },
    }))
}

fn depth_message() -> String {
    format!("nesting deeper than {MAX_DEPTH} levels of lists and mappings")
}

/// The first error found, and whether parsing must stop there (a limit was crossed).
struct BuildError {
    error: SyntaxError,
    fatal: bool,
}

/// Collects parser events into a tree.
#[derive(Default)]
struct TreeBuilder {
    /// Open collections; a mapping's pending key waits in `pending_key`.
    stack: Vec<Open>,
    /// Anchored nodes, with the number of nodes each one holds (itself included).
    anchors: HashMap<usize, (Node, usize)>,
    root: Option<Node>,
    error: Option<BuildError>,
    documents: usize,
    /// Nodes added by alias expansion so far.
    alias_nodes: usize,
}

struct Open {
    node: Node,
    anchor: usize,
    pending_key: Option<Node>,
    /// Nodes in this collection so far, itself included.
    count: usize,
}

impl TreeBuilder {
    /// Records the first error; a fatal one stops the parse.
    fn fail(&mut self, mark: Mark, message: String, fatal: bool) {
        if self.error.as_ref().is_none_or(|e| !e.fatal && fatal) {
            self.error = Some(BuildError {
                error: SyntaxError { mark, message },
                fatal,
            });
        }
    }

    fn open(&mut self, kind: NodeKind, mark: Mark, anchor: usize) {
        if self.stack.len() >= MAX_DEPTH {
            self.fail(mark, depth_message(), true);
            return;
        }
        self.stack.push(Open {
            node: Node { kind, mark },
            anchor,
            pending_key: None,
            count: 1,
        });
    }

    /// Adds a finished node, which holds `count` nodes, to the open collection.
    fn push_value(&mut self, node: Node, anchor: usize, count: usize) {
        if anchor > 0 {
            self.anchors.insert(anchor, (node.clone(), count));
        }
        let Some(parent) = self.stack.last_mut() else {
            self.root = Some(node);
            return;
        };
        parent.count += count;
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
                            let message = format!(
                                "duplicate key `{text}` (first written at line {})",
                                first.mark.line
                            );
                            let mark = key.mark;
                            entries.push((key, node));
                            self.fail(mark, message, false);
                            return;
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
                if self.documents > 1 {
                    self.fail(
                        mark,
                        "a config file holds one YAML document; found a second `---`".to_string(),
                        false,
                    );
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
                    1,
                );
            }
            Event::SequenceStart(anchor, _tag) => {
                self.open(NodeKind::Seq(Vec::new()), mark, anchor)
            }
            Event::MappingStart(anchor, _tag) => self.open(NodeKind::Map(Vec::new()), mark, anchor),
            Event::SequenceEnd | Event::MappingEnd => {
                if let Some(open) = self.stack.pop() {
                    self.push_value(open.node, open.anchor, open.count);
                }
            }
            Event::Alias(id) => {
                // An unknown anchor is a scanner error; an empty node keeps this total.
                let count = self.anchors.get(&id).map_or(1, |(_, count)| *count);
                if self.alias_nodes.saturating_add(count) > MAX_ALIAS_NODES {
                    self.fail(
                        mark,
                        format!("aliases expand to more than {MAX_ALIAS_NODES} nodes"),
                        true,
                    );
                    return;
                }
                self.alias_nodes += count;
                let kind = match self.anchors.get(&id) {
                    Some((node, _)) => node.kind.clone(),
                    None => NodeKind::Scalar {
                        text: String::new(),
                        plain: true,
                    },
                };
                self.push_value(Node { kind, mark }, 0, count);
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
        assert_contains!(err.message, "first written at line 1");
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

    fn nested_flow(levels: usize) -> String {
        format!("a: {}1{}\n", "[".repeat(levels), "]".repeat(levels))
    }

    fn nested_block(levels: usize) -> String {
        let mut text = String::new();
        for level in 0..levels {
            text.push_str(&" ".repeat(level));
            text.push_str("a:\n");
        }
        text
    }

    /// The classic "billion laughs": 9 levels of 9 aliases to the level below.
    fn alias_bomb() -> String {
        let mut text =
            String::from("a0: &a0 [\"x\",\"x\",\"x\",\"x\",\"x\",\"x\",\"x\",\"x\",\"x\"]\n");
        for level in 1..=9 {
            let below = vec![format!("*a{}", level - 1); 9].join(",");
            text.push_str(&format!("a{level}: &a{level} [{below}]\n"));
        }
        text
    }

    fn refused_quickly(source: &str) -> SyntaxError {
        let started = std::time::Instant::now();
        let err = parse(source).unwrap_err();
        let took = started.elapsed();
        assert!(
            took < std::time::Duration::from_millis(500),
            "took {took:?}"
        );
        err
    }

    #[test]
    fn nesting_up_to_the_limit_is_accepted() {
        // The root mapping is one level, the lists the other 63.
        let root = parse(&nested_flow(MAX_DEPTH - 1)).unwrap();
        assert_eq!(map_entries(&root).len(), 1);
        parse(&nested_block(MAX_DEPTH - 1)).unwrap();
    }

    #[test]
    fn deep_flow_nesting_is_refused_where_it_crosses_the_limit() {
        for levels in [MAX_DEPTH, 4_000, 100_000] {
            let err = refused_quickly(&nested_flow(levels));
            assert_contains!(err.message, "nesting deeper than 64 levels");
            // `a: ` then 63 `[`: the 64th `[` opens the 65th level. With more, the scanner,
            // reading ahead, stops at its own limit of 256 levels first.
            assert_eq!(err.mark.line, 1, "{levels} levels");
            assert!(err.mark.col <= 4 + 256, "{levels} levels: {:?}", err.mark);
            eprintln!("{levels} levels: refused at {}", err.mark);
        }
    }

    #[test]
    fn deep_block_nesting_is_refused() {
        for levels in [MAX_DEPTH + 1, 2_000] {
            let err = refused_quickly(&nested_block(levels));
            assert_contains!(err.message, "nesting deeper than 64 levels");
            assert_eq!(err.mark.line, 65, "{levels} levels");
        }
        let dashes = format!("{}x\n", "- ".repeat(4_000));
        let err = refused_quickly(&dashes);
        assert_contains!(err.message, "nesting deeper than 64 levels");
    }

    #[test]
    fn an_alias_bomb_is_refused() {
        let bomb = alias_bomb();
        assert!(bomb.len() < 600, "{}", bomb.len());
        let err = refused_quickly(&bomb);
        assert_contains!(err.message, "aliases expand to more than 100000 nodes");
        assert!(err.mark.line >= 6, "{:?}", err.mark);
    }

    #[test]
    fn modest_alias_use_is_counted_but_accepted() {
        // 3 levels of 9: 9 + 90 + 820 expanded nodes.
        let text: String = alias_bomb()
            .lines()
            .take(4)
            .map(|l| format!("{l}\n"))
            .collect();
        let root = parse(&text).unwrap();
        assert_eq!(map_entries(&root).len(), 4);
    }

    #[test]
    fn a_huge_text_is_refused_before_parsing() {
        let mut text = String::from("a: ");
        text.push_str(&"x".repeat(MAX_SOURCE_BYTES));
        let err = refused_quickly(&text);
        assert_eq!(err.mark, Mark { line: 1, col: 1 });
        assert_contains!(err.message, "more than the 4 MiB");
    }
}
