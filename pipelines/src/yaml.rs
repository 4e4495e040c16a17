//! A YAML document as a tree of nodes that remember where they stand in the file.
//!
//! Built from saphyr-parser's events rather than through serde so that every key and value
//! keeps its position, duplicate keys are seen (a map type would drop them silently), and
//! decoding can report every problem of a file at once instead of stopping at the first.
//!
//! A pipeline file is hostile input (a pull request writes it), so the tree is bounded:
//! [`MAX_FILE_BYTES`], [`MAX_DEPTH`] and [`MAX_NODES`] (every copy an alias makes counts).
//! A file past a limit is refused with a diagnostic at the place it crossed it, before any
//! of it is decoded. Every walk of the tree (decoding, `Clone`, `Debug`) is therefore at
//! most [`MAX_DEPTH`] deep, and dropping a tree is iterative whatever its shape.

use std::collections::HashMap;

use saphyr_parser::{Event, Parser, ScalarStyle, Span};

use crate::diag::Pos;

/// Largest pipeline file read, in bytes.
pub const MAX_FILE_BYTES: usize = 1 << 20;
/// Deepest nesting of lists and mappings in a pipeline file (the top-level mapping is 1).
pub const MAX_DEPTH: usize = 64;
/// Most values (scalars, lists, mappings) in a pipeline file, counting every copy that an
/// anchor or an alias makes (so "billion laughs" files are refused).
pub const MAX_NODES: usize = 100_000;
/// Most text in the scalars of a pipeline file, counting every copy that an anchor or an
/// alias makes (so an alias of a long scalar cannot multiply it either).
pub const MAX_TEXT_BYTES: usize = 4 << 20;

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

impl Drop for Value {
    /// Drops nested lists and mappings from a heap stack instead of recursing, so that no
    /// tree can overflow the thread's stack while being freed.
    fn drop(&mut self) {
        fn take(value: &mut Value, pending: &mut Vec<Value>) {
            match value {
                Value::Seq(items) => pending.extend(items.drain(..).map(|n| n.value)),
                Value::Map(entries) => {
                    pending.extend(entries.drain(..).flat_map(|(k, v)| [k.value, v.value]))
                }
                Value::Null | Value::Scalar { .. } => {}
            }
        }
        let mut pending = Vec::new();
        take(self, &mut pending);
        while let Some(mut value) = pending.pop() {
            take(&mut value, &mut pending);
        }
    }
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

/// Why a file gives no tree: a YAML syntax error or a limit crossed. The message is
/// complete (it names the limit), ready for a diagnostic at `pos`.
#[derive(Debug)]
pub(crate) struct Error {
    pub pos: Pos,
    pub message: String,
}

fn pos_of(line: usize, col: usize) -> Pos {
    let clamp = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
    Pos {
        line: clamp(line),
        col: clamp(col).saturating_add(1),
    }
}

/// Parses one YAML document. An empty file gives `Ok(None)`.
pub(crate) fn parse(source: &str) -> Result<Option<Node>, Error> {
    if source.len() > MAX_FILE_BYTES {
        return Err(Error {
            pos: Pos { line: 1, col: 1 },
            message: format!(
                "the file is {} bytes, larger than the limit of {} KiB for a pipeline file",
                source.len(),
                MAX_FILE_BYTES >> 10
            ),
        });
    }
    let mut builder = Builder {
        anchors: HashMap::new(),
        stack: Vec::new(),
        root: None,
        nodes: 0,
        bytes: 0,
        docs: 0,
    };
    for event in Parser::new_from_str(source) {
        let (event, span) = event.map_err(|e| Error {
            pos: pos_of(e.marker().line(), e.marker().col()),
            message: format!("invalid YAML: {}", e.info()),
        })?;
        builder.event(event, &span)?;
    }
    Ok(builder.root)
}

/// A completed node with what the limits need to know about it.
#[derive(Clone)]
struct Built {
    node: Node,
    /// Values in it, itself included.
    nodes: usize,
    /// Bytes of scalar text in it.
    bytes: usize,
    /// Levels of lists and mappings in it (0 for a scalar).
    height: usize,
}

enum Kind {
    Seq(Vec<Node>),
    Map {
        entries: Vec<(Node, Node)>,
        key: Option<Node>,
    },
}

/// A list or mapping being read.
struct Frame {
    pos: Pos,
    index: usize,
    anchor: usize,
    kind: Kind,
    nodes: usize,
    bytes: usize,
    child_height: usize,
}

struct Builder {
    anchors: HashMap<usize, Built>,
    stack: Vec<Frame>,
    root: Option<Node>,
    /// Values and scalar bytes made so far, copies made by anchors and aliases included.
    nodes: usize,
    bytes: usize,
    docs: usize,
}

fn too_deep(pos: Pos, through_alias: bool) -> Error {
    let how = if through_alias {
        " once the alias is expanded"
    } else {
        ""
    };
    Error {
        pos,
        message: format!(
            "nesting deeper than {MAX_DEPTH} levels{how}; a pipeline file nests lists and mappings at most {MAX_DEPTH} deep"
        ),
    }
}

impl Builder {
    fn event(&mut self, event: Event<'_>, span: &Span) -> Result<(), Error> {
        let pos = pos_of(span.start.line(), span.start.col());
        let index = span.start.index();
        match event {
            Event::DocumentStart(_) => {
                self.docs += 1;
                if self.docs > 1 {
                    return Err(Error {
                        pos,
                        message:
                            "invalid YAML: a pipeline file holds one YAML document; found a second one"
                                .into(),
                    });
                }
            }
            Event::Scalar(text, style, anchor, _tag) => {
                let plain = style == ScalarStyle::Plain;
                let bytes = text.len();
                let value = if plain && matches!(&*text, "" | "~" | "null" | "Null" | "NULL") {
                    Value::Null
                } else {
                    Value::Scalar {
                        text: text.into_owned(),
                        plain,
                    }
                };
                let node = Node { value, pos, index };
                self.count(1, bytes, pos)?;
                self.complete(
                    Built {
                        node,
                        nodes: 1,
                        bytes,
                        height: 0,
                    },
                    anchor,
                )?;
            }
            Event::SequenceStart(anchor, _) => {
                self.open(pos, index, anchor, Kind::Seq(Vec::new()))?
            }
            Event::MappingStart(anchor, _) => self.open(
                pos,
                index,
                anchor,
                Kind::Map {
                    entries: Vec::new(),
                    key: None,
                },
            )?,
            Event::SequenceEnd | Event::MappingEnd => {
                let Some(frame) = self.stack.pop() else {
                    return Ok(());
                };
                let value = match frame.kind {
                    Kind::Seq(items) => Value::Seq(items),
                    Kind::Map { entries, .. } => Value::Map(entries),
                };
                let built = Built {
                    node: Node {
                        value,
                        pos: frame.pos,
                        index: frame.index,
                    },
                    nodes: frame.nodes,
                    bytes: frame.bytes,
                    height: frame.child_height + 1,
                };
                self.complete(built, frame.anchor)?;
            }
            Event::Alias(id) => {
                let Some(anchored) = self.anchors.get(&id) else {
                    return Err(Error {
                        pos,
                        message: "invalid YAML: alias to an unknown anchor".into(),
                    });
                };
                if self.stack.len() + anchored.height > MAX_DEPTH {
                    return Err(too_deep(pos, true));
                }
                let (nodes, bytes) = (anchored.nodes, anchored.bytes);
                // Counted before copying, so a copy never exceeds the budget.
                self.count(nodes, bytes, pos)?;
                let mut built = self.anchors[&id].clone();
                // Problems are reported at the alias; text inside the value is still
                // looked for where it is written, at the anchor (`index` is kept).
                built.node.pos = pos;
                self.attach(built);
            }
            Event::Nothing | Event::StreamStart | Event::StreamEnd | Event::DocumentEnd => {}
        }
        Ok(())
    }

    fn open(&mut self, pos: Pos, index: usize, anchor: usize, kind: Kind) -> Result<(), Error> {
        if self.stack.len() >= MAX_DEPTH {
            return Err(too_deep(pos, false));
        }
        self.count(1, 0, pos)?;
        self.stack.push(Frame {
            pos,
            index,
            anchor,
            kind,
            nodes: 1,
            bytes: 0,
            child_height: 0,
        });
        Ok(())
    }

    fn count(&mut self, nodes: usize, bytes: usize, pos: Pos) -> Result<(), Error> {
        self.nodes = self.nodes.saturating_add(nodes);
        self.bytes = self.bytes.saturating_add(bytes);
        let message = if self.nodes > MAX_NODES {
            format!(
                "more than {MAX_NODES} values in the file (every copy made by an anchor or alias counts)"
            )
        } else if self.bytes > MAX_TEXT_BYTES {
            format!(
                "more than {} MiB of text in the file's values (every copy made by an anchor or alias counts)",
                MAX_TEXT_BYTES >> 20
            )
        } else {
            return Ok(());
        };
        Err(Error { pos, message })
    }

    /// A node is complete (read to its end, already counted): remembered under its anchor,
    /// and attached to its parent.
    fn complete(&mut self, built: Built, anchor: usize) -> Result<(), Error> {
        if anchor != 0 {
            // The anchor keeps a copy: it costs what it holds.
            self.count(built.nodes, built.bytes, built.node.pos)?;
            self.anchors.insert(anchor, built.clone());
        }
        self.attach(built);
        Ok(())
    }

    fn attach(&mut self, built: Built) {
        let Built {
            node,
            nodes,
            bytes,
            height,
        } = built;
        let Some(parent) = self.stack.last_mut() else {
            self.root = Some(node);
            return;
        };
        parent.nodes += nodes;
        parent.bytes += bytes;
        parent.child_height = parent.child_height.max(height);
        match &mut parent.kind {
            Kind::Seq(items) => items.push(node),
            Kind::Map { entries, key } => match key.take() {
                None => *key = Some(node),
                Some(k) => entries.push((k, node)),
            },
        }
    }
}
