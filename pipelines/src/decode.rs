//! Helpers for decoding the YAML tree into the pipeline model while collecting every
//! problem, and the field tables that both the decoders and the JSON Schema read.

use std::collections::HashMap;

use crate::{
    diag::{Diagnostic, Pos, alias, did_you_mean},
    yaml::{Node, Value},
};

/// The type of a value in a pipeline file, as the JSON Schema describes it.
#[derive(Debug)]
pub(crate) enum Ty {
    String,
    /// A string that may contain `${{ … }}` expressions.
    Template,
    Bool,
    /// A whole number from 1 to this maximum.
    Integer(u64),
    /// `90s`, `30m`, `1h30m`.
    Duration,
    /// `512m`, `2g`, or a number of bytes.
    Memory,
    /// One of these words.
    Enum(&'static [&'static str]),
    /// A list of this type, or one value alone.
    ListOrOne(&'static Ty),
    List(&'static Ty),
    /// A mapping from any key to values of this type.
    MapOf(&'static Ty),
    Object(&'static Object),
    /// Any one of these.
    OneOf(&'static [Ty]),
    Null,
}

/// A mapping with known keys.
#[derive(Debug)]
pub(crate) struct Object {
    pub title: &'static str,
    pub fields: &'static [Field],
}

#[derive(Debug)]
pub(crate) struct Field {
    pub name: &'static str,
    pub ty: Ty,
    pub required: bool,
    pub doc: &'static str,
}

impl Field {
    pub const fn opt(name: &'static str, ty: Ty, doc: &'static str) -> Field {
        Field {
            name,
            ty,
            required: false,
            doc,
        }
    }
    pub const fn req(name: &'static str, ty: Ty, doc: &'static str) -> Field {
        Field {
            name,
            ty,
            required: true,
            doc,
        }
    }
}

/// Most problems reported for one file; past it one last diagnostic says so. Keeps the
/// work and the output of a file with a problem on every line bounded.
pub(crate) const MAX_DIAGNOSTICS: usize = 100;

/// Longest diagnostic message; longer ones (quoting a long value) are cut.
const MAX_MESSAGE_BYTES: usize = 1000;

/// Decoding state: the file being read and the problems found so far.
#[derive(Debug)]
pub(crate) struct Cx<'s> {
    pub file: String,
    pub source: &'s str,
    pub diags: Vec<Diagnostic>,
    /// Problems found past [`MAX_DIAGNOSTICS`], counted but not kept.
    pub dropped: usize,
}

impl<'s> Cx<'s> {
    pub fn new(file: &str, source: &'s str) -> Self {
        Cx {
            file: file.to_string(),
            source,
            diags: Vec::new(),
            dropped: 0,
        }
    }

    pub fn error(&mut self, pos: Pos, message: impl Into<String>) {
        if self.full() {
            self.dropped += 1;
            return;
        }
        let mut message = message.into();
        if message.len() > MAX_MESSAGE_BYTES {
            // A message quotes what it found; a long value is cut, not echoed whole.
            let mut cut = MAX_MESSAGE_BYTES;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push('…');
        }
        self.diags.push(Diagnostic {
            file: self.file.clone(),
            pos,
            message,
        });
    }

    /// Whether further problems are only counted: costly hints can be skipped.
    pub fn full(&self) -> bool {
        self.diags.len() >= MAX_DIAGNOSTICS
    }

    /// The problems, in file order, with a last one saying how many were left out.
    pub fn finish(mut self) -> Vec<Diagnostic> {
        self.diags.sort_by_key(|d| d.pos);
        if self.dropped > 0 {
            let pos = self.diags.last().map(|d| d.pos).unwrap_or_default();
            self.diags.push(Diagnostic {
                file: self.file.clone(),
                pos,
                message: format!(
                    "{} more problems not shown (at most {MAX_DIAGNOSTICS} are reported)",
                    self.dropped
                ),
            });
        }
        self.diags
    }

    /// Position of the `nth` occurrence of `needle` inside a scalar's source text, so that a
    /// problem inside a long script points at its own line; the scalar's start otherwise.
    pub fn locate(&self, node: &Node, needle: &str, nth: usize) -> Pos {
        if self.full() {
            // The diagnostic will not be kept: spare the walk through the text.
            return node.pos;
        }
        let start = self
            .source
            .char_indices()
            .nth(node.index)
            .map_or(self.source.len(), |(b, _)| b);
        let Some(offset) = self.source[start..]
            .match_indices(needle)
            .nth(nth)
            .map(|(o, _)| start + o)
        else {
            return node.pos;
        };
        let before = &self.source[..offset];
        let line = before.matches('\n').count() as u32 + 1;
        let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) as u32 + 1;
        Pos { line, col }
    }

    fn expected(&mut self, node: &Node, what: &str) {
        self.error(node.pos, format!("expected {what}, found {}", node.kind()));
    }

    /// A scalar as text (numbers and booleans as written).
    pub fn string(&mut self, node: &Node, what: &str) -> Option<String> {
        match &node.value {
            Value::Scalar { text, .. } => Some(text.clone()),
            _ => {
                self.expected(node, what);
                None
            }
        }
    }

    pub fn bool(&mut self, node: &Node) -> Option<bool> {
        match &node.value {
            Value::Scalar { text, plain: true } => match text.as_str() {
                "true" | "True" | "TRUE" => Some(true),
                "false" | "False" | "FALSE" => Some(false),
                _ => {
                    self.error(node.pos, format!("expected true or false, found `{text}`"));
                    None
                }
            },
            _ => {
                self.expected(node, "true or false");
                None
            }
        }
    }

    /// A whole number from 1 to `max`. Digits past `max` (or past what 64 bits hold) are
    /// refused as too large, never wrapped or cut.
    pub fn positive_int(&mut self, node: &Node, what: &str, max: u64) -> Option<u64> {
        let text = self.string(node, what)?;
        let digits = !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
        match text.parse::<u64>() {
            Ok(n) if digits && (1..=max).contains(&n) => Some(n),
            Ok(_) | Err(_) if digits && !text.trim_start_matches('0').is_empty() => {
                self.error(
                    node.pos,
                    format!("`{text}` is too large: expected {what}, at most {max}"),
                );
                None
            }
            _ => {
                self.error(node.pos, format!("expected {what}, found `{text}`"));
                None
            }
        }
    }

    /// Items of a list, or the node itself when it is a single scalar.
    pub fn list_or_one<'n>(&mut self, node: &'n Node, what: &str) -> Option<Vec<&'n Node>> {
        match &node.value {
            Value::Seq(items) => Some(items.iter().collect()),
            Value::Scalar { .. } => Some(vec![node]),
            _ => {
                self.expected(node, what);
                None
            }
        }
    }

    pub fn list<'n>(&mut self, node: &'n Node, what: &str) -> Option<&'n [Node]> {
        match &node.value {
            Value::Seq(items) => Some(items),
            _ => {
                self.expected(node, what);
                None
            }
        }
    }

    /// Opens a mapping whose keys must be among `object`'s fields. Unknown and duplicate
    /// keys are reported here, once; missing required ones too.
    pub fn object<'n>(&mut self, node: &'n Node, object: &'static Object) -> Option<Obj<'n>> {
        let Value::Map(entries) = &node.value else {
            self.expected(node, &format!("a mapping ({})", object.title));
            return None;
        };
        let known: Vec<&str> = object.fields.iter().map(|f| f.name).collect();
        let mut seen: HashMap<&str, Pos> = HashMap::new();
        for (key, _) in entries {
            let Some(name) = self.key(key) else { continue };
            if let Some(first) = seen.get(name) {
                let line = first.line;
                self.error(
                    key.pos,
                    format!("duplicate key `{name}` (first at line {line})"),
                );
                continue;
            }
            seen.insert(name, key.pos);
            if !known.contains(&name) {
                let mut message = format!("unknown key `{name}` in {}", object.title);
                let close = alias(name).filter(|a| known.contains(a));
                match close.or_else(|| did_you_mean(name, known.iter().copied())) {
                    Some(close) => message.push_str(&format!("; did you mean `{close}`?")),
                    None => message.push_str(&format!("; expected one of: {}", known.join(", "))),
                }
                self.error(key.pos, message);
            }
        }
        for field in object.fields.iter().filter(|f| f.required) {
            if !seen.contains_key(field.name) {
                self.error(
                    node.pos,
                    format!("{} needs the key `{}`", object.title, field.name),
                );
            }
        }
        Some(Obj { entries, object })
    }

    /// A mapping with free keys (environment, secrets, `with`): key text, key node, value.
    pub fn entries<'n>(
        &mut self,
        node: &'n Node,
        what: &str,
    ) -> Option<Vec<(&'n str, &'n Node, &'n Node)>> {
        let Value::Map(entries) = &node.value else {
            self.expected(node, what);
            return None;
        };
        let mut out: Vec<(&'n str, &'n Node, &'n Node)> = Vec::new();
        let mut seen: HashMap<&str, Pos> = HashMap::new();
        for (key, value) in entries {
            let Some(name) = self.key(key) else { continue };
            if let Some(first) = seen.get(name) {
                let line = first.line;
                self.error(
                    key.pos,
                    format!("duplicate key `{name}` (first at line {line})"),
                );
                continue;
            }
            seen.insert(name, key.pos);
            out.push((name, key, value));
        }
        Some(out)
    }

    fn key<'n>(&mut self, key: &'n Node) -> Option<&'n str> {
        match &key.value {
            Value::Scalar { text, .. } => Some(text),
            _ => {
                self.expected(key, "a plain key");
                None
            }
        }
    }
}

/// An opened mapping with known keys.
#[derive(Debug)]
pub(crate) struct Obj<'n> {
    entries: &'n [(Node, Node)],
    object: &'static Object,
}

impl<'n> Obj<'n> {
    /// The value of `key`, if present (the first one, when duplicated).
    pub fn get(&self, key: &str) -> Option<&'n Node> {
        debug_assert!(
            self.object.fields.iter().any(|f| f.name == key),
            "decoder asks for `{key}`, which is not in the field table of {}",
            self.object.title
        );
        self.entries
            .iter()
            .find(|(k, _)| matches!(&k.value, Value::Scalar { text, .. } if text == key))
            .map(|(_, v)| v)
    }

    /// Like [`get`](Self::get), but a `null` value counts as absent.
    pub fn value(&self, key: &str) -> Option<&'n Node> {
        self.get(key).filter(|n| !matches!(n.value, Value::Null))
    }

    /// Position of the key itself (for errors about the key as a whole).
    pub fn key_pos(&self, key: &str) -> Option<Pos> {
        self.entries
            .iter()
            .find(|(k, _)| matches!(&k.value, Value::Scalar { text, .. } if text == key))
            .map(|(k, _)| k.pos)
    }
}
