//! Located errors about a workflow: node id, input, line:column, message and a hint.
use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::yaml::Pos;

/// What kind of problem a diagnostic reports, set where the problem is found, so that a client
/// (the ComfyUI API's error types) tells problems apart without reading their messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Code {
    /// The workflow file cannot be read: not YAML or JSON, or not shaped as a workflow.
    Syntax,
    /// A node's type is not in the registry.
    UnknownNodeType,
    /// An input the node's type does not have.
    UnknownInput,
    /// A link or a target naming a node the workflow does not have.
    UnknownNode,
    /// A link to an output the source node does not have.
    UnknownOutput,
    /// A link from an output of another type, or a constant where a link is needed.
    TypeMismatch,
    /// A required input with neither a value nor a link.
    MissingInput,
    /// A constant of the wrong kind (text for a number, a fraction for a whole number).
    WrongValueType,
    /// A number below the input's minimum.
    BelowMinimum,
    /// A number above the input's maximum.
    AboveMaximum,
    /// A whole number that is not a multiple of the input's step.
    NotAMultiple,
    /// A choice that is not among the input's choices.
    NotAChoice,
    /// A file (model, image) that is not where the value says.
    FileNotFound,
    /// Links that go round in a cycle.
    Cycle,
    /// A workflow with nothing to run (no output node).
    NoOutput,
}

/// A problem found in a workflow, where it is and what to do (read back where a server's
/// events cross machines).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Diagnostic {
    /// What kind of problem this is; `None` where no check named it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<Code>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pos: Option<Pos>,
    /// The file `pos` is in, when it is not the workflow's own (a subgraph's file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<Box<str>>,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

impl Diagnostic {
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            code: None,
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
    pub fn code(mut self, code: Code) -> Self {
        self.code = Some(code);
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

/// Words longer than this get no "did you mean": a misspelt name is short, and comparing a
/// long one costs time in proportion to its length for every candidate.
const LONGEST_SUGGESTED: usize = 64;

/// How much work the "did you mean" hints of one validation may take in all: candidates
/// looked at plus edit-distance cells computed (about 0.1 s): hundreds of lookups among 100k
/// node ids, thousands in a workflow of usual size. Past it, further errors simply have no
/// suggestion, so hints never make validation quadratic (issue 18: 15k links to one missing
/// node took minutes).
pub const SUGGESTION_WORK: usize = 10_000_000;

/// The candidate closest to `word` by edit distance (case-insensitive), if it is close enough
/// to be a plausible misspelling. Ties go to the first candidate.
pub fn closest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let mut unlimited = usize::MAX;
    closest_within(word, candidates, &mut unlimited)
}

/// [`closest`], charging the candidates looked at and the distance cells computed to
/// `work_left`; `None` once it is spent (so many lookups together stay linear in their
/// budget, whatever the number of candidates).
pub fn closest_within<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
    work_left: &mut usize,
) -> Option<&'a str> {
    let mut search = Search::new(word)?;
    for (order, candidate) in candidates.into_iter().enumerate() {
        search.consider(order, candidate, work_left)?;
        if search.exact() {
            break;
        }
    }
    search.found()
}

/// Many names grouped by length, for many lookups among the same names (a workflow's node
/// ids): a lookup looks only at names of a length within reach, in a compact list, instead
/// of walking every node of the workflow.
pub struct NameIndex<'a> {
    /// `by_length[n]`: the names of `n` characters with their order among all the names.
    by_length: Vec<Vec<(usize, &'a str)>>,
}

impl<'a> NameIndex<'a> {
    pub fn new(names: impl IntoIterator<Item = &'a str>) -> Self {
        let mut by_length: Vec<Vec<(usize, &'a str)>> = Vec::new();
        for (order, name) in names.into_iter().enumerate() {
            // Longer names are out of reach of any word a suggestion is made for.
            if name.len() > (LONGEST_SUGGESTED + 4) * 4 {
                continue;
            }
            let length = name.chars().count();
            if length > LONGEST_SUGGESTED + 4 {
                continue;
            }
            if by_length.len() <= length {
                by_length.resize_with(length + 1, Vec::new);
            }
            by_length[length].push((order, name));
        }
        Self { by_length }
    }

    /// The name closest to `word`, as [`closest_within`] finds it among all the names in
    /// their order (ties go to the first).
    pub fn closest_within(&self, word: &str, work_left: &mut usize) -> Option<&'a str> {
        let mut search = Search::new(word)?;
        let lengths = search.length.saturating_sub(search.limit)..=search.length + search.limit;
        for bucket in lengths.filter_map(|n| self.by_length.get(n)) {
            for &(order, name) in bucket {
                search.consider(order, name, work_left)?;
                if search.exact() {
                    // A name of the word's own length, the first such: nothing beats it.
                    return search.found();
                }
            }
        }
        search.found()
    }
}

/// One "did you mean" lookup: the word, how far a match may be, and the best so far.
struct Search<'a> {
    word: Vec<char>,
    length: usize,
    limit: usize,
    /// (distance, order among the candidates, candidate).
    best: Option<(usize, usize, &'a str)>,
    candidate_chars: Vec<char>,
    rows: Rows,
}

impl<'a> Search<'a> {
    /// `None` for a word too short or too long to suggest anything for.
    fn new(word: &str) -> Option<Self> {
        let length = word.chars().count();
        if !(3..=LONGEST_SUGGESTED).contains(&length) {
            return None;
        }
        Some(Self {
            word: word.chars().flat_map(char::to_lowercase).collect(),
            length,
            limit: (length / 3).clamp(1, 4),
            best: None,
            candidate_chars: Vec::new(),
            rows: Rows::default(),
        })
    }

    /// Compares one candidate; `None` when the work budget runs out.
    fn consider(&mut self, order: usize, candidate: &'a str, work_left: &mut usize) -> Option<()> {
        charge(work_left, 1)?;
        // Within `limit` edits the lengths differ by at most `limit`: most candidates end
        // here, before any lowering or distance.
        if candidate.len() > (self.length + self.limit) * 4
            || candidate.chars().count().abs_diff(self.length) > self.limit
        {
            return Some(());
        }
        self.candidate_chars.clear();
        self.candidate_chars
            .extend(candidate.chars().flat_map(char::to_lowercase));
        // Only as close as the best so far is worth finding (a tie may come earlier).
        let reach = self.best.map_or(self.limit, |(d, _, _)| d);
        let (distance, cells) =
            distance_within(&self.word, &self.candidate_chars, reach, &mut self.rows);
        charge(work_left, cells)?;
        if let Some(d) = distance {
            if self.best.is_none_or(|(bd, bo, _)| (d, order) < (bd, bo)) {
                self.best = Some((d, order, candidate));
            }
        }
        Some(())
    }

    fn exact(&self) -> bool {
        self.best.is_some_and(|(d, _, _)| d == 0)
    }

    fn found(&self) -> Option<&'a str> {
        self.best.map(|(_, _, c)| c)
    }
}

/// Names listed in a hint at most; the rest are counted.
const NAMES_LISTED: usize = 20;

/// `a, b, c` for a hint, the first 20 of many followed by how many more: a hint repeated for
/// each of many errors must not list thousands of names each time.
pub fn name_list<'a, I>(names: I) -> String
where
    I: IntoIterator<Item = &'a str>,
    I::IntoIter: ExactSizeIterator,
{
    let names = names.into_iter();
    let total = names.len();
    let listed: Vec<&str> = names.take(NAMES_LISTED).collect();
    let more = total - listed.len();
    let mut text = listed.join(", ");
    if more > 0 {
        text.push_str(&format!(" and {more} more"));
    }
    text
}

/// Takes `units` from `work_left`, or empties it and says no when there are not enough.
fn charge(work_left: &mut usize, units: usize) -> Option<()> {
    match work_left.checked_sub(units) {
        Some(left) => {
            *work_left = left;
            Some(())
        }
        None => {
            *work_left = 0;
            None
        }
    }
}

/// The three rows the banded distance keeps, reused from one candidate to the next.
#[derive(Default)]
struct Rows {
    before: Vec<usize>,
    previous: Vec<usize>,
    current: Vec<usize>,
}

/// Optimal-string-alignment distance (insertions, deletions, substitutions and swaps of
/// neighbours each cost one: a swapped pair of letters is the commonest typo) when it is at
/// most `limit`, and the number of cells computed. Only the diagonal band `limit` wide is
/// computed and a row past `limit` stops it, so the cost is O(len * limit), not O(len^2).
fn distance_within(
    a: &[char],
    b: &[char],
    limit: usize,
    rows: &mut Rows,
) -> (Option<usize>, usize) {
    if a.len().abs_diff(b.len()) > limit {
        return (None, 0);
    }
    let over = limit + 1;
    let width = b.len() + 1;
    // Rows i-2, i-1 and i; a cell outside the band holds `over` (out of reach).
    let Rows {
        before,
        previous,
        current,
    } = rows;
    for row in [&mut *before, &mut *current] {
        row.clear();
        row.resize(width, over);
    }
    previous.clear();
    previous.extend((0..width).map(|j| j.min(over)));
    let mut cells = 0;
    for i in 1..=a.len() {
        let low = i.saturating_sub(limit).max(1);
        let high = (i + limit).min(b.len());
        current[low - 1] = if low == 1 { i.min(over) } else { over };
        let mut row_best = current[low - 1];
        for j in low..=high {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (previous[j] + 1)
                .min(current[j - 1] + 1)
                .min(previous[j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(before[j - 2] + 1);
            }
            current[j] = best.min(over);
            row_best = row_best.min(current[j]);
        }
        cells += high + 1 - low;
        if high + 1 < width {
            current[high + 1] = over;
        }
        if row_best > limit {
            return (None, cells);
        }
        std::mem::swap(before, previous);
        std::mem::swap(previous, current);
    }
    let distance = previous[b.len()];
    ((distance <= limit).then_some(distance), cells)
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

    /// The whole-matrix distance, as closest computed it before the band: the reference the
    /// banded one must agree with.
    fn full_distance(a: &[char], b: &[char]) -> usize {
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

    #[test]
    fn banded_distance_agrees_with_the_full_matrix() {
        // Every word of up to 5 letters over a small alphabet against every other (typos of
        // all kinds, swaps included), under every limit closest uses.
        let mut words: Vec<Vec<char>> = vec![Vec::new()];
        let mut frontier = words.clone();
        for _ in 0..5 {
            frontier = frontier
                .iter()
                .flat_map(|w| {
                    "abc".chars().map(move |c| {
                        let mut longer = w.clone();
                        longer.push(c);
                        longer
                    })
                })
                .collect();
            words.extend(frontier.iter().cloned());
        }
        let mut compared = 0;
        for a in words.iter().step_by(3) {
            for b in words.iter().step_by(2) {
                let full = full_distance(a, b);
                for limit in 1..=4 {
                    let (banded, _) = distance_within(a, b, limit, &mut Rows::default());
                    assert_eq!(
                        banded,
                        (full <= limit).then_some(full),
                        "{a:?} {b:?} {limit}"
                    );
                    compared += 1;
                }
            }
        }
        assert!(compared > 10_000);
    }

    #[test]
    fn closest_keeps_the_first_of_equally_close_candidates() {
        assert_eq!(
            closest("node1", ["node2", "node3", "node1x"]),
            Some("node2")
        );
        assert_eq!(closest("node1", ["node2", "node1", "node3"]), Some("node1"));
    }

    #[test]
    fn the_name_index_finds_what_closest_finds() {
        let names = [
            "sampler",
            "Sampler2",
            "sample",
            "seed",
            "decode",
            "vae_decode",
            "latent",
            "sampler_b",
            "semplar",
            "x",
            "a_much_longer_name_of_a_node",
        ];
        let index = NameIndex::new(names);
        for word in [
            "sampler",
            "smapler",
            "Sampler",
            "sampler3",
            "sed",
            "decoed",
            "laten",
            "nothing",
            "a_much_longer_name_of_a_nod",
            "xx",
        ] {
            let mut work = usize::MAX;
            assert_eq!(
                index.closest_within(word, &mut work),
                closest(word, names),
                "{word}"
            );
        }
    }

    #[test]
    fn a_name_list_counts_what_it_does_not_show() {
        assert_eq!(name_list(["a", "b"]), "a, b");
        let many: Vec<String> = (0..100_000).map(|i| format!("x{i}")).collect();
        let text = name_list(many.iter().map(String::as_str));
        assert!(text.starts_with("x0, x1, "), "{text}");
        assert!(text.ends_with("x19 and 99980 more"), "{text}");
    }

    #[test]
    fn long_words_get_no_suggestion_and_cost_nothing() {
        let long = "x".repeat(100_000);
        let mut work = 10;
        assert_eq!(closest_within(&long, [long.as_str()], &mut work), None);
        assert_eq!(work, 10);
    }

    #[test]
    fn a_spent_suggestion_budget_stops_the_search() {
        let ids: Vec<String> = (0..1000).map(|i| format!("node{i}")).collect();
        let mut work = SUGGESTION_WORK;
        assert_eq!(
            closest_within("ndoe999", ids.iter().map(String::as_str), &mut work),
            Some("node999")
        );
        let spent = SUGGESTION_WORK - work;
        assert!(
            (1000..1000 * 40).contains(&spent),
            "{spent} units for 1000 short candidates"
        );
        let mut work = spent / 2;
        assert_eq!(
            closest_within("ndoe999", ids.iter().map(String::as_str), &mut work),
            None
        );
        assert_eq!(work, 0);
    }
}
