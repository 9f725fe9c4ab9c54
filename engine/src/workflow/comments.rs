//! Carries a hand-written file's comments into the canonical YAML that replaces it, so a save
//! from the editor keeps what people wrote beside their nodes.
//!
//! A comment belongs to the key it stands above (a block of `#` lines, with the blank lines
//! around it) or ends (`key: v  # why`), addressed by the key's path (`nodes / sampler /
//! steps`); comments after the last key stay at the end. A comment whose key is gone (the
//! node was deleted) goes with it.
use std::collections::HashMap;

/// The comments of `old` placed into `new` (both YAML workflow texts) at the same key paths.
pub fn carry_comments(old: &str, new: &str) -> String {
    let found = collect(old);
    if found.above.is_empty() && found.trailing.is_empty() && found.end.is_empty() {
        return new.to_string();
    }
    let mut out = String::with_capacity(new.len() + old.len() / 4);
    for line in scan(new) {
        match line {
            Line::Key { path, indent, text } => {
                if let Some(block) = found.above.get(&path) {
                    for comment in block {
                        if comment.is_empty() {
                            out.push('\n');
                        } else {
                            out.push_str(&" ".repeat(indent));
                            out.push_str(comment);
                            out.push('\n');
                        }
                    }
                }
                out.push_str(text);
                if let Some(comment) = found.trailing.get(&path) {
                    if split_trailing_comment(text).1.is_none() {
                        out.push_str("  ");
                        out.push_str(comment);
                    }
                }
                out.push('\n');
            }
            Line::Other(text) => {
                out.push_str(text);
                out.push('\n');
            }
        }
    }
    for comment in &found.end {
        out.push_str(comment);
        out.push('\n');
    }
    out
}

/// A file's comments by the path of the key they belong to.
#[derive(Default)]
struct Comments {
    /// Full-line comments (trimmed; "" for a blank line between them) above a key.
    above: HashMap<Vec<String>, Vec<String>>,
    /// The `# …` that ends a key's line.
    trailing: HashMap<Vec<String>, String>,
    /// Comments after the last key.
    end: Vec<String>,
}

fn collect(text: &str) -> Comments {
    let mut comments = Comments::default();
    let mut pending: Vec<String> = Vec::new();
    for line in scan(text) {
        match line {
            Line::Key { path, text, .. } => {
                // Blank lines between keys are kept too (one for a run of them): they are how
                // people group nodes, and a save should not move them.
                let mut block: Vec<String> = Vec::new();
                for comment in std::mem::take(&mut pending) {
                    if !(comment.is_empty() && block.last().is_some_and(String::is_empty)) {
                        block.push(comment);
                    }
                }
                if !block.is_empty() {
                    comments.above.insert(path.clone(), block);
                }
                if let (_, Some(comment)) = split_trailing_comment(text) {
                    comments.trailing.insert(path, comment.to_string());
                }
            }
            Line::Other(text) => {
                let trimmed = text.trim();
                // The writer puts its own schema line first; never carry a second one.
                if trimmed.starts_with('#') && !trimmed.contains("yaml-language-server:") {
                    pending.push(trimmed.to_string());
                } else if trimmed.is_empty() {
                    pending.push(String::new());
                }
            }
        }
    }
    while pending.last().is_some_and(String::is_empty) {
        pending.pop();
    }
    comments.end = pending;
    comments
}

enum Line<'a> {
    /// A block-mapping key line, with the path of keys down to it.
    Key {
        path: Vec<String>,
        indent: usize,
        text: &'a str,
    },
    /// Anything else: comments, blank lines, list items, the inside of block scalars.
    Other(&'a str),
}

/// The lines of a YAML text, key lines with their paths. Lines inside a block scalar
/// (`key: |`) are content, even when they start with `#`.
fn scan(text: &str) -> Vec<Line<'_>> {
    let mut lines = Vec::new();
    let mut stack: Vec<(usize, String)> = Vec::new();
    let mut block_scalar_of: Option<usize> = None;
    for line in text.lines() {
        let indent = line.len() - line.trim_start().len();
        let trimmed = line.trim();
        if let Some(owner) = block_scalar_of {
            if trimmed.is_empty() || indent > owner {
                lines.push(Line::Other(line));
                continue;
            }
            block_scalar_of = None;
        }
        let Some((key, rest)) = key_of(trimmed) else {
            lines.push(Line::Other(line));
            continue;
        };
        while stack.last().is_some_and(|(i, _)| *i >= indent) {
            stack.pop();
        }
        stack.push((indent, key));
        let value = split_trailing_comment(rest).0.trim();
        if value.starts_with('|') || value.starts_with('>') {
            block_scalar_of = Some(indent);
        }
        lines.push(Line::Key {
            path: stack.iter().map(|(_, k)| k.clone()).collect(),
            indent,
            text: line,
        });
    }
    lines
}

/// `key` and what follows its colon, for a `key: …` line (plain or quoted key).
fn key_of(trimmed: &str) -> Option<(String, &str)> {
    if trimmed.starts_with('#') || trimmed.starts_with('-') || trimmed.is_empty() {
        return None;
    }
    if let Some(quote @ ('"' | '\'')) = trimmed.chars().next() {
        let close = trimmed[1..].find(quote)? + 1;
        let rest = trimmed[close + 1..].strip_prefix(':')?;
        if !(rest.is_empty() || rest.starts_with([' ', '\t'])) {
            return None;
        }
        return Some((trimmed[1..close].to_string(), rest));
    }
    let colon = trimmed
        .char_indices()
        .find(|&(i, c)| c == ':' && trimmed[i + 1..].chars().next().is_none_or(|n| n == ' '))?
        .0;
    let key = &trimmed[..colon];
    if key.contains(" #") || key.starts_with(['[', '{']) {
        return None;
    }
    Some((key.trim_end().to_string(), &trimmed[colon + 1..]))
}

/// A line split at its trailing `# comment`: a `#` after a space, outside quotes.
fn split_trailing_comment(line: &str) -> (&str, Option<&str>) {
    let mut quote: Option<char> = None;
    let mut previous = ' ';
    for (i, c) in line.char_indices() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '"' || c == '\'' => quote = Some(c),
            None if c == '#' && (previous == ' ' || previous == '\t') => {
                return (&line[..i], Some(&line[i..]));
            }
            None => {}
        }
        previous = c;
    }
    (line, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    const OLD: &str = "# yaml-language-server: $schema=schema.json
# The model and its sampler, tuned for the poster series.
weft: 1
nodes:
  # Load once; everything else hangs off it.
  model:
    type: LoadCheckpoint
    name: tiny-shapes

  # 30 steps: fewer left banding in the sky.
  sample:
    type: Sampler
    steps: 30   # keep in step with the hires pass
    prompt: \"a # not a comment\"
  note:
    type: ShowText
    text: |
      # this is text, not a comment
      second line
  gone:
    type: ShowInt  # removed in the editor
layout:
  model: [0, 0]
# end of file: ask Ana before changing the seed
";

    const NEW: &str = "# yaml-language-server: $schema=schema.json
weft: 1
nodes:
  model:
    type: LoadCheckpoint
    name: tiny-shapes
  sample:
    type: Sampler
    steps: 40
    prompt: \"a # not a comment\"
  note:
    type: ShowText
    text: \"# this is text, not a comment\\nsecond line\\n\"
layout:
  model: [10, 20]
";

    #[test]
    fn comments_follow_their_keys_into_the_canonical_text() {
        let merged = carry_comments(OLD, NEW);
        let expected = "# yaml-language-server: $schema=schema.json
# The model and its sampler, tuned for the poster series.
weft: 1
nodes:
  # Load once; everything else hangs off it.
  model:
    type: LoadCheckpoint
    name: tiny-shapes

  # 30 steps: fewer left banding in the sky.
  sample:
    type: Sampler
    steps: 40  # keep in step with the hires pass
    prompt: \"a # not a comment\"
  note:
    type: ShowText
    text: \"# this is text, not a comment\\nsecond line\\n\"
layout:
  model: [10, 20]
# end of file: ask Ana before changing the seed
";
        assert_eq!(merged, expected);
    }

    #[test]
    fn a_file_without_comments_is_written_as_is() {
        assert_eq!(carry_comments(NEW, NEW), NEW);
        assert_eq!(carry_comments("", NEW), NEW);
    }

    #[test]
    fn saving_again_keeps_the_comments_once() {
        let once = carry_comments(OLD, NEW);
        assert_eq!(carry_comments(&once, NEW), once);
    }

    #[test]
    fn trailing_comments_are_found_outside_quotes_only() {
        assert_eq!(split_trailing_comment("a: 'x # y'").1, None);
        assert_eq!(split_trailing_comment("a: x#y").1, None);
        assert_eq!(split_trailing_comment("a: 1 # y").1, Some("# y"));
        assert_eq!(
            key_of("\"odd key\": 3").map(|(k, _)| k),
            Some("odd key".into())
        );
        assert_eq!(key_of("url: http://x").map(|(k, _)| k), Some("url".into()));
    }
}
