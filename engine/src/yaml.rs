//! A located YAML reader: builds a small tree (maps, sequences, scalars) where every node
//! keeps its line:column. It is iterative, caps nesting depth and file size, rejects aliases
//! (no "billion laughs"), duplicate keys and multiple documents, so any input gives a located
//! error quickly and nothing can panic or hang.
use std::borrow::Cow;
use std::collections::HashMap;

use saphyr_parser::{Event, Parser, ScalarStyle};

/// 1-based line and column.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    serde::Serialize,
    serde::Deserialize,
    schemars::JsonSchema,
)]
pub struct Pos {
    pub line: u32,
    pub col: u32,
}

impl Pos {
    pub const START: Pos = Pos { line: 1, col: 1 };
}

impl std::fmt::Display for Pos {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.line, self.col)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Yaml {
    /// `quoted` is true for single/double-quoted and block scalars: never typed as number/bool.
    Scalar {
        text: String,
        quoted: bool,
        pos: Pos,
    },
    Map {
        entries: Vec<(YamlKey, Yaml)>,
        pos: Pos,
    },
    Seq {
        items: Vec<Yaml>,
        pos: Pos,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct YamlKey {
    pub text: String,
    pub pos: Pos,
}

impl Yaml {
    pub fn pos(&self) -> Pos {
        match self {
            Yaml::Scalar { pos, .. } | Yaml::Map { pos, .. } | Yaml::Seq { pos, .. } => *pos,
        }
    }
    pub fn kind_name(&self) -> &'static str {
        match self {
            Yaml::Scalar { .. } => "a scalar",
            Yaml::Map { .. } => "a mapping",
            Yaml::Seq { .. } => "a list",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct YamlError {
    pub pos: Pos,
    pub message: String,
    pub hint: Option<String>,
}

pub const MAX_DEPTH: usize = 32;

/// Deep flow nesting (`[[[[...`) reaches saphyr's scanner limit before our own depth count
/// sees the events. saphyr-parser 0.3 gives its scan errors no kind, only a message, so this
/// is the one place that reads it; `scanner_depth_limit_is_recognised` pins the wording.
fn is_scanner_depth_limit(error: &saphyr_parser::ScanError) -> bool {
    error.info() == "recursion limit exceeded"
}
pub const MAX_BYTES: usize = 8 * 1024 * 1024;

enum Frame {
    Map {
        entries: Vec<(YamlKey, Yaml)>,
        /// Key -> position of its entry, for the duplicate check (a 100k-node file has 100k keys).
        seen: HashMap<String, Pos>,
        pending_key: Option<YamlKey>,
        pos: Pos,
    },
    Seq {
        items: Vec<Yaml>,
        pos: Pos,
    },
}

fn pos_of(marker: &saphyr_parser::Marker) -> Pos {
    Pos {
        line: marker.line() as u32,
        col: marker.col() as u32 + 1,
    }
}

/// Line and column of a byte offset in `bytes`.
pub fn pos_at_byte(bytes: &[u8], offset: usize) -> Pos {
    let before = &bytes[..offset.min(bytes.len())];
    let line = before.iter().filter(|&&b| b == b'\n').count() as u32 + 1;
    let line_start = before
        .iter()
        .rposition(|&b| b == b'\n')
        .map(|i| i + 1)
        .unwrap_or(0);
    let col = String::from_utf8_lossy(&before[line_start..])
        .chars()
        .count() as u32
        + 1;
    Pos { line, col }
}

/// Reads a document from raw bytes: checks size and UTF-8 first.
pub fn parse_bytes(bytes: &[u8]) -> Result<Option<Yaml>, YamlError> {
    if bytes.len() > MAX_BYTES {
        return Err(YamlError {
            pos: Pos::START,
            message: format!(
                "file is {:.1} MB; workflow files are limited to {} MB",
                bytes.len() as f64 / 1e6,
                MAX_BYTES / (1024 * 1024)
            ),
            hint: Some("is this really a workflow file?".into()),
        });
    }
    let text = std::str::from_utf8(bytes).map_err(|e| YamlError {
        pos: pos_at_byte(bytes, e.valid_up_to()),
        message: "file is not UTF-8 text".into(),
        hint: Some("workflow files are YAML or JSON text".into()),
    })?;
    parse_str(text)
}

/// Parses one YAML document. `Ok(None)` for an empty document.
pub fn parse_str(text: &str) -> Result<Option<Yaml>, YamlError> {
    if text.len() > MAX_BYTES {
        return parse_bytes(text.as_bytes());
    }
    if let Some(offset) = text.find('\0') {
        return Err(YamlError {
            pos: pos_at_byte(text.as_bytes(), offset),
            message: "file contains a NUL byte".into(),
            hint: Some("workflow files are YAML or JSON text".into()),
        });
    }
    let mut parser = Parser::new_from_str(text);
    let mut tree = TreeBuilder::default();
    while let Some(next) = parser.next_event() {
        let (event, span) = next.map_err(|e| scan_error(&e))?;
        if let Some(value) = tree.event(event, pos_of(&span.start))? {
            tree.attach(value)?;
        }
    }
    Ok(tree.root)
}

/// A parser error, located; deep flow nesting gets the same message as deep block nesting.
fn scan_error(e: &saphyr_parser::ScanError) -> YamlError {
    let pos = pos_of(e.marker());
    if is_scanner_depth_limit(e) {
        return too_deep(pos);
    }
    YamlError {
        pos,
        message: format!("YAML syntax error: {}", e.info()),
        hint: Some(
            "check indentation (spaces, not tabs) and that every `key: value` is on its own line"
                .into(),
        ),
    }
}

fn too_deep(pos: Pos) -> YamlError {
    YamlError {
        pos,
        message: format!("nesting deeper than {MAX_DEPTH} levels"),
        hint: Some("workflow files nest three levels: nodes, node, inputs".into()),
    }
}

fn refused(pos: Pos, message: &str, hint: &str) -> YamlError {
    YamlError {
        pos,
        message: message.into(),
        hint: Some(hint.into()),
    }
}

/// The tree under construction: the open maps and lists, innermost last.
#[derive(Default)]
struct TreeBuilder {
    stack: Vec<Frame>,
    root: Option<Yaml>,
    documents: usize,
}

impl TreeBuilder {
    /// Takes one parser event at `pos`; returns the value it completes, if any (a scalar, or
    /// a map or list it closes).
    fn event(&mut self, event: Event<'_>, pos: Pos) -> Result<Option<Yaml>, YamlError> {
        Ok(match event {
            Event::StreamStart | Event::StreamEnd | Event::DocumentEnd | Event::Nothing => None,
            Event::DocumentStart(_) => {
                self.documents += 1;
                if self.documents > 1 {
                    return Err(refused(
                        pos,
                        "more than one YAML document in the file",
                        "a workflow file holds one document; remove the extra `---`",
                    ));
                }
                None
            }
            Event::Alias(_) => {
                return Err(refused(
                    pos,
                    "YAML aliases (*name) are not allowed in workflow files",
                    "write the value out; links between nodes are written $node.output",
                ))
            }
            Event::Scalar(text, style, _, _) => Some(Yaml::Scalar {
                text: text.into_owned(),
                quoted: style != ScalarStyle::Plain,
                pos,
            }),
            Event::MappingStart(..) | Event::SequenceStart(..) => {
                if self.stack.len() >= MAX_DEPTH {
                    return Err(too_deep(pos));
                }
                self.stack
                    .push(if matches!(event, Event::MappingStart(..)) {
                        Frame::Map {
                            entries: Vec::new(),
                            seen: HashMap::new(),
                            pending_key: None,
                            pos,
                        }
                    } else {
                        Frame::Seq {
                            items: Vec::new(),
                            pos,
                        }
                    });
                None
            }
            Event::MappingEnd => match self.stack.pop() {
                Some(Frame::Map { entries, pos, .. }) => Some(Yaml::Map { entries, pos }),
                _ => return Err(internal(pos)),
            },
            Event::SequenceEnd => match self.stack.pop() {
                Some(Frame::Seq { items, pos }) => Some(Yaml::Seq { items, pos }),
                _ => return Err(internal(pos)),
            },
        })
    }

    /// Puts a completed value where it belongs: the root, the open list, or the open map (as
    /// its next key, which must be a scalar seen once, or as the pending key's value).
    fn attach(&mut self, value: Yaml) -> Result<(), YamlError> {
        match self.stack.last_mut() {
            None => self.root = Some(value),
            Some(Frame::Seq { items, .. }) => items.push(value),
            Some(Frame::Map {
                entries,
                seen,
                pending_key,
                ..
            }) => match pending_key.take() {
                None => *pending_key = Some(new_key(value, seen)?),
                Some(key) => entries.push((key, value)),
            },
        }
        Ok(())
    }
}

/// `value` as a mapping key: a scalar not already in `seen` (where it is then recorded).
fn new_key(value: Yaml, seen: &mut HashMap<String, Pos>) -> Result<YamlKey, YamlError> {
    let Yaml::Scalar { text, pos, .. } = value else {
        return Err(YamlError {
            pos: value.pos(),
            message: format!(
                "a mapping key must be a plain name, found {}",
                value.kind_name()
            ),
            hint: None,
        });
    };
    if let Some(first) = seen.get(&text) {
        return Err(refused(
            pos,
            &format!("duplicate key '{text}' (first at {first})"),
            "each key may appear once; remove or rename one",
        ));
    }
    seen.insert(text.clone(), pos);
    Ok(YamlKey { text, pos })
}

fn internal(pos: Pos) -> YamlError {
    YamlError {
        pos,
        message: "unbalanced YAML structure".into(),
        hint: None,
    }
}

/// A plain scalar typed by the YAML 1.2 core schema.
#[derive(Debug, Clone, PartialEq)]
pub enum PlainScalar<'a> {
    Null,
    Bool(bool),
    Int(i64),
    /// A whole number above `i64::MAX` (up to `u64::MAX`): only seeds take one (ComfyUI's
    /// seeds are 64-bit unsigned).
    UInt(u64),
    Float(f64),
    String(Cow<'a, str>),
}

pub fn type_plain_scalar(text: &str) -> PlainScalar<'_> {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return PlainScalar::Null,
        "true" | "True" | "TRUE" => return PlainScalar::Bool(true),
        "false" | "False" | "FALSE" => return PlainScalar::Bool(false),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => {
            return PlainScalar::Float(f64::INFINITY)
        }
        "-.inf" | "-.Inf" | "-.INF" => return PlainScalar::Float(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => return PlainScalar::Float(f64::NAN),
        _ => {}
    }
    let looks_numeric = text.bytes().all(|b| {
        b.is_ascii_digit() || matches!(b, b'-' | b'+' | b'.' | b'e' | b'E' | b'x' | b'o' | b'_')
    }) || text.starts_with("0x");
    if looks_numeric {
        if let Ok(i) = text.parse::<i64>() {
            return PlainScalar::Int(i);
        }
        if let Ok(u) = text.parse::<u64>() {
            return PlainScalar::UInt(u);
        }
        if let Some(hex) = text.strip_prefix("0x") {
            if let Ok(i) = i64::from_str_radix(hex, 16) {
                return PlainScalar::Int(i);
            }
        }
        if let Some(oct) = text.strip_prefix("0o") {
            if let Ok(i) = i64::from_str_radix(oct, 8) {
                return PlainScalar::Int(i);
            }
        }
        if text.bytes().any(|b| b.is_ascii_digit()) {
            if let Ok(f) = text.parse::<f64>() {
                return PlainScalar::Float(f);
            }
        }
    }
    PlainScalar::String(Cow::Borrowed(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based() {
        let y = parse_str("a:\n  b: 1\n").unwrap().unwrap();
        let Yaml::Map { entries, .. } = y else {
            panic!()
        };
        assert_eq!(entries[0].0.pos, Pos { line: 1, col: 1 });
        let Yaml::Map { entries: inner, .. } = &entries[0].1 else {
            panic!()
        };
        assert_eq!(inner[0].0.pos, Pos { line: 2, col: 3 });
        assert_eq!(inner[0].1.pos(), Pos { line: 2, col: 6 });
    }

    #[test]
    fn alias_bomb_is_rejected() {
        let text = "a: &a [x, x]\nb: &b [*a, *a]\nc: [*b, *b]\n";
        let err = parse_str(text).unwrap_err();
        assert!(err.message.contains("aliases"), "{err:?}");
        assert_eq!(err.pos.line, 2);
    }

    #[test]
    fn scanner_depth_limit_is_recognised() {
        // If saphyr rewords its error, this fails instead of deep input silently becoming a
        // generic "YAML syntax error".
        let text = "[".repeat(100_000);
        let mut parser = saphyr_parser::Parser::new_from_str(&text);
        let error = std::iter::from_fn(|| parser.next_event())
            .find_map(Result::err)
            .expect("the scanner refuses 100,000 open brackets");
        assert!(is_scanner_depth_limit(&error), "{}", error.info());
    }

    #[test]
    fn deep_nesting_is_rejected_without_recursion() {
        let text = "[".repeat(100_000);
        let err = parse_str(&text).unwrap_err();
        assert!(err.message.contains("nesting"), "{err:?}");
    }

    #[test]
    fn duplicate_keys_name_both_places() {
        let err = parse_str("a: 1\nb: 2\na: 3\n").unwrap_err();
        assert_eq!(err.pos, Pos { line: 3, col: 1 });
        assert!(err.message.contains("first at 1:1"), "{err:?}");
    }

    #[test]
    fn plain_scalars_follow_the_core_schema() {
        assert_eq!(type_plain_scalar("42"), PlainScalar::Int(42));
        assert_eq!(type_plain_scalar("-7"), PlainScalar::Int(-7));
        assert_eq!(
            type_plain_scalar("18446744073709551615"),
            PlainScalar::UInt(u64::MAX)
        );
        assert_eq!(
            type_plain_scalar("9223372036854775808"),
            PlainScalar::UInt(1 << 63)
        );
        assert_eq!(type_plain_scalar("7.5"), PlainScalar::Float(7.5));
        assert_eq!(type_plain_scalar("1e3"), PlainScalar::Float(1000.0));
        assert_eq!(type_plain_scalar("true"), PlainScalar::Bool(true));
        assert_eq!(type_plain_scalar("~"), PlainScalar::Null);
        assert_eq!(
            type_plain_scalar("euler"),
            PlainScalar::String("euler".into())
        );
        assert_eq!(type_plain_scalar("e"), PlainScalar::String("e".into()));
        assert_eq!(
            type_plain_scalar("1.2.3"),
            PlainScalar::String("1.2.3".into())
        );
    }

    #[test]
    fn invalid_utf8_is_located() {
        let err = parse_bytes(b"a: 1\nb: \xff\n").unwrap_err();
        assert_eq!(err.pos, Pos { line: 2, col: 4 });
    }
}
