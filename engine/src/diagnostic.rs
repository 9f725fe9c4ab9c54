//! Located errors about a workflow: node id, input, line:column, message and a hint.
use std::fmt;

use serde::Serialize;

use crate::yaml::Pos;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Diagnostic {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pos: Option<Pos>,
    /// The file `pos` is in, when it is not the workflow's own (a subgraph's file).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<Box<str>>,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

impl Diagnostic {
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            node: None,
            input: None,
            pos: None,
            file: None,
            message: message.into(),
            hint: None,
        }
    }
    pub fn at(pos: Pos, message: impl Into<String>) -> Self {
        Self {
            pos: Some(pos),
            ..Self::new(message)
        }
    }
    pub fn at_opt(pos: Option<Pos>, message: impl Into<String>) -> Self {
        Self {
            pos,
            ..Self::new(message)
        }
    }
    pub fn node(mut self, node: &str) -> Self {
        self.node = Some(node.to_string());
        self
    }
    pub fn input(mut self, input: &str) -> Self {
        self.input = Some(input.to_string());
        self
    }
    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// `file:line:col: error: ...` with the hint on its own line.
    pub fn render(&self, file: &str) -> String {
        let file = self.file.as_deref().unwrap_or(file);
        let location = match self.pos {
            Some(p) => format!("{file}:{p}"),
            None => file.to_string(),
        };
        format!("{location}: {}", Body(self))
    }
}

/// The diagnostic without its position.
struct Body<'a>(&'a Diagnostic);

impl fmt::Display for Body<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.0;
        f.write_str("error: ")?;
        match (&d.node, &d.input) {
            (Some(n), Some(i)) => write!(f, "node '{n}', input '{i}': ")?,
            (Some(n), None) => write!(f, "node '{n}': ")?,
            _ => {}
        }
        f.write_str(&d.message)?;
        if let Some(h) = &d.hint {
            write!(f, "\n  hint: {h}")?;
        }
        Ok(())
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(p) = self.pos {
            write!(f, "{p}: ")?;
        }
        write!(f, "{}", Body(self))
    }
}

/// The candidate closest to `word` by edit distance (case-insensitive), if it is close enough
/// to be a plausible misspelling.
pub fn closest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    if word.chars().count() < 3 {
        return None;
    }
    let lower = word.to_lowercase();
    let limit = (word.chars().count() / 3).clamp(1, 4);
    candidates
        .into_iter()
        .map(|c| (edit_distance(&lower, &c.to_lowercase()), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Optimal-string-alignment distance: insertions, deletions, substitutions and swaps of
/// neighbours each cost one (a swapped pair of letters is the commonest typo).
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let width = b.len() + 1;
    let mut d = vec![0usize; (a.len() + 1) * width];
    for i in 0..=a.len() {
        d[i * width] = i;
    }
    for (j, cell) in d.iter_mut().enumerate().take(width) {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[(i - 1) * width + j] + 1)
                .min(d[i * width + j - 1] + 1)
                .min(d[(i - 1) * width + j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[(i - 2) * width + j - 2] + 1);
            }
            d[i * width + j] = best;
        }
    }
    d[a.len() * width + b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closest_finds_misspellings() {
        assert_eq!(closest("stpes", ["steps", "seed", "cfg"]), Some("steps"));
        assert_eq!(
            closest("Sampeler", ["Sampler", "SaveImage"]),
            Some("Sampler")
        );
        assert_eq!(closest("zzzzzz", ["steps", "seed"]), None);
    }
}
