//! A YAML document as a tree of nodes that remember where they stand in the file.
//!
//! Built from saphyr-parser's events rather than through serde so that every key and value
//! keeps its position, duplicate keys are seen (a map type would drop them silently), and
//! decoding can report every problem of a file at once instead of stopping at the first.

use std::collections::HashMap;

use saphyr_parser::{Event, Parser, ScalarStyle, Span};

use crate::diag::Pos;

/// Upper bound on nodes after alias expansion: a file past it is refused (billion laughs).
const MAX_NODES: usize = 100_000;

#[derive(Clone, Debug)]
pub(crate) struct Node {
    pub value: Value,
    pub pos: Pos,
    /// Index (in characters) of the node's first character, for locating text inside it.
    pub index: usize,
}

#[derive(Clone, Debug)]
pub(crate) enum Value {
    Null,
    /// A scalar as written (no type guessed: decoders ask for the type they need).
    Scalar {
        text: String,
        plain: bool,
    },
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

impl Node {
    /// What kind of value this is, for "expected …, found …" messages.
    pub fn kind(&self) -> &'static str {
        match &self.value {
            Value::Null => "nothing",
            Value::Scalar { .. } => "a scalar",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }
}

#[derive(Debug)]
pub(crate) struct SyntaxError {
    pub pos: Pos,
    pub message: String,
}

fn pos_of(span: &Span) -> Pos {
    Pos {
        line: span.start.line() as u32,
        col: span.start.col() as u32 + 1,
    }
}

/// Parses one YAML document. An empty file gives `Ok(None)`.
pub(crate) fn parse(source: &str) -> Result<Option<Node>, SyntaxError> {
    let mut builder = Builder {
        anchors: HashMap::new(),
        stack: Vec::new(),
        root: None,
        nodes: 0,
        docs: 0,
    };
    for event in Parser::new_from_str(source) {
        let (event, span) = event.map_err(|e| SyntaxError {
            pos: Pos {
                line: e.marker().line() as u32,
                col: e.marker().col() as u32 + 1,
            },
            message: e.info().to_string(),
        })?;
        builder.event(event, &span)?;
    }
    Ok(builder.root)
}

enum Frame {
    Seq {
        node: Node,
        anchor: usize,
        items: Vec<Node>,
    },
    Map {
        node: Node,
        anchor: usize,
        entries: Vec<(Node, Node)>,
        key: Option<Node>,
    },
}

struct Builder {
    anchors: HashMap<usize, Node>,
    stack: Vec<Frame>,
    root: Option<Node>,
    nodes: usize,
    docs: usize,
}

impl Builder {
    fn event(&mut self, event: Event<'_>, span: &Span) -> Result<(), SyntaxError> {
        let pos = pos_of(span);
        let index = span.start.index();
        let blank = |value| Node { value, pos, index };
        match event {
            Event::DocumentStart(_) => {
                self.docs += 1;
                if self.docs > 1 {
                    return Err(SyntaxError {
                        pos,
                        message: "a pipeline file holds one YAML document; found a second one"
                            .into(),
                    });
                }
            }
            Event::Scalar(text, style, anchor, _tag) => {
                let plain = style == ScalarStyle::Plain;
                let value = if plain && matches!(&*text, "" | "~" | "null" | "Null" | "NULL") {
                    Value::Null
                } else {
                    Value::Scalar {
                        text: text.into_owned(),
                        plain,
                    }
                };
                self.complete(Node { value, pos, index }, anchor)?;
            }
            Event::SequenceStart(anchor, _) => self.stack.push(Frame::Seq {
                node: blank(Value::Null),
                anchor,
                items: Vec::new(),
            }),
            Event::MappingStart(anchor, _) => self.stack.push(Frame::Map {
                node: blank(Value::Null),
                anchor,
                entries: Vec::new(),
                key: None,
            }),
            Event::SequenceEnd | Event::MappingEnd => {
                let (node, anchor) = match self.stack.pop() {
                    Some(Frame::Seq {
                        mut node,
                        anchor,
                        items,
                    }) => {
                        node.value = Value::Seq(items);
                        (node, anchor)
                    }
                    Some(Frame::Map {
                        mut node,
                        anchor,
                        entries,
                        ..
                    }) => {
                        node.value = Value::Map(entries);
                        (node, anchor)
                    }
                    None => return Ok(()),
                };
                self.complete(node, anchor)?;
            }
            Event::Alias(id) => {
                let Some(mut node) = self.anchors.get(&id).cloned() else {
                    return Err(SyntaxError {
                        pos,
                        message: "alias to an unknown anchor".into(),
                    });
                };
                self.nodes += count(&node);
                node.pos = pos;
                self.complete(node, 0)?;
            }
            Event::Nothing | Event::StreamStart | Event::StreamEnd | Event::DocumentEnd => {}
        }
        Ok(())
    }

    fn complete(&mut self, node: Node, anchor: usize) -> Result<(), SyntaxError> {
        self.nodes += 1;
        if self.nodes > MAX_NODES {
            return Err(SyntaxError {
                pos: node.pos,
                message: format!(
                    "the file expands to more than {MAX_NODES} values (too many aliases?)"
                ),
            });
        }
        if anchor != 0 {
            self.anchors.insert(anchor, node.clone());
        }
        match self.stack.last_mut() {
            None => self.root = Some(node),
            Some(Frame::Seq { items, .. }) => items.push(node),
            Some(Frame::Map { entries, key, .. }) => match key.take() {
                None => *key = Some(node),
                Some(k) => entries.push((k, node)),
            },
        }
        Ok(())
    }
}

fn count(node: &Node) -> usize {
    match &node.value {
        Value::Seq(items) => 1 + items.iter().map(count).sum::<usize>(),
        Value::Map(entries) => {
            1 + entries
                .iter()
                .map(|(k, v)| count(k) + count(v))
                .sum::<usize>()
        }
        _ => 1,
    }
}
