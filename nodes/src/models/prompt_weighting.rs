//! Weighted prompt syntax and long-prompt windows as ComfyUI implements them
//! (`comfy/sd1_clip.py`: `token_weights`, `SDTokenizer.tokenize_with_weights`,
//! `ClipTokenWeightEncoder.encode_token_weights`), with A1111's `[text]` added.
//!
//! Syntax: `(text)` multiplies the weight by 1.1, `[text]` divides it by 1.1, `(text:1.3)` sets
//! it to 1.3 (ComfyUI: an explicit weight replaces the enclosing one, it does not multiply);
//! groups nest; `\(`, `\)`, `\[`, `\]` are literal brackets; unmatched brackets are literal.
//!
//! Each weighted segment is tokenized on its own; tokens are packed into windows of 75 plus
//! bos/eos (77), a segment of fewer than 8 tokens is moved whole to the next window rather than
//! split. Windows are encoded separately and concatenated along the sequence. Weights use
//! ComfyUI's rule `z = (z - z_empty) * w + z_empty`, with `z_empty` the encoding of the empty
//! prompt at the same position (A1111's mean-restoring rule is not used).
use tch::Tensor;

use super::clip_text_model::{ClipLayer, ClipTextModel};
use super::clip_tokenizer::{ClipTokenizer, BOS_TOKEN_ID, CONTEXT_LENGTH, EOS_TOKEN_ID};
use crate::error::{ModelError, Result, TchContext};

/// Start, end and padding ids of a window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpecialTokens {
    pub bos: u32,
    pub eos: u32,
    pub pad: u32,
}

impl SpecialTokens {
    /// SD 1.x (OpenAI CLIP): pads with end-of-text.
    pub const SD1: Self = Self {
        bos: BOS_TOKEN_ID,
        eos: EOS_TOKEN_ID,
        pad: EOS_TOKEN_ID,
    };
    /// SD 2.x (OpenCLIP): pads with 0 (`!`), as open_clip's tokenizer does.
    pub const SD2: Self = Self {
        bos: BOS_TOKEN_ID,
        eos: EOS_TOKEN_ID,
        pad: 0,
    };

    /// `[bos, eos, pad, ...]`: the empty prompt, whose encoding anchors the weights.
    pub fn empty_window(&self) -> WeightedWindow {
        WeightedWindow::start(self).close(self)
    }
}

/// Weight factor of one pair of `()` (and the divisor of `[]`).
const EMPHASIS: f32 = 1.1;
/// Segments with at least this many tokens may be split across windows (ComfyUI `max_word_length`).
const MAX_WORD_LENGTH: usize = 8;

// Escaped brackets are swapped for private-use characters while parsing, then restored.
const ESCAPES: [(&str, char, char); 4] = [
    ("\\(", '\u{E000}', '('),
    ("\\)", '\u{E001}', ')'),
    ("\\[", '\u{E002}', '['),
    ("\\]", '\u{E003}', ']'),
];

/// Splits `text` into `(segment, weight)` pairs, in order, empty segments dropped.
pub fn parse_weighted(text: &str) -> Vec<(String, f32)> {
    let mut escaped = text.to_string();
    for (seq, placeholder, _) in ESCAPES {
        escaped = escaped.replace(seq, &placeholder.to_string());
    }
    let chars: Vec<char> = escaped.chars().collect();
    let mut out = Vec::new();
    parse_into(&chars, 1.0, &mut out);
    out.into_iter()
        .map(|(s, w)| {
            let restored: String = s
                .chars()
                .map(|c| {
                    ESCAPES
                        .iter()
                        .find(|(_, p, _)| *p == c)
                        .map_or(c, |(_, _, lit)| *lit)
                })
                .collect();
            (restored, w)
        })
        .filter(|(s, _)| !s.is_empty())
        .collect()
}

/// Index of the bracket closing the one opened at `open`, counting only that bracket kind.
fn matching_close(chars: &[char], open: usize) -> Option<usize> {
    let (opener, closer) = match chars[open] {
        '(' => ('(', ')'),
        _ => ('[', ']'),
    };
    let mut depth = 0usize;
    for (i, &c) in chars.iter().enumerate().skip(open) {
        if c == opener {
            depth += 1;
        } else if c == closer {
            depth -= 1;
            if depth == 0 {
                return Some(i);
            }
        }
    }
    None
}

fn parse_into(chars: &[char], weight: f32, out: &mut Vec<(String, f32)>) {
    let mut plain = String::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let close = if c == '(' || c == '[' {
            matching_close(chars, i)
        } else {
            None
        };
        let Some(close) = close else {
            plain.push(c);
            i += 1;
            continue;
        };
        if !plain.is_empty() {
            out.push((std::mem::take(&mut plain), weight));
        }
        let inner = &chars[i + 1..close];
        if c == '[' {
            parse_into(inner, weight / EMPHASIS, out);
        } else {
            match explicit_weight(inner) {
                Some((body, w)) => parse_into(body, w, out),
                None => parse_into(inner, weight * EMPHASIS, out),
            }
        }
        i = close + 1;
    }
    if !plain.is_empty() {
        out.push((plain, weight));
    }
}

/// `text:1.3` -> (`text`, 1.3): the last colon, not the first character, followed by a number.
fn explicit_weight(inner: &[char]) -> Option<(&[char], f32)> {
    let colon = inner.iter().rposition(|&c| c == ':')?;
    if colon == 0 {
        return None;
    }
    let number: String = inner[colon + 1..].iter().collect();
    let w: f32 = number.trim().parse().ok()?;
    w.is_finite().then_some((&inner[..colon], w))
}

/// One 77-token encoder input with the weight of each position.
#[derive(Clone, Debug, PartialEq)]
pub struct WeightedWindow {
    pub ids: Vec<u32>,
    pub weights: Vec<f32>,
}

impl WeightedWindow {
    fn start(special: &SpecialTokens) -> Self {
        Self {
            ids: vec![special.bos],
            weights: vec![1.0],
        }
    }

    fn push(&mut self, id: u32, weight: f32) {
        self.ids.push(id);
        self.weights.push(weight);
    }

    /// Appends eos and pads to the context length.
    fn close(mut self, special: &SpecialTokens) -> Self {
        self.push(special.eos, 1.0);
        while self.ids.len() < CONTEXT_LENGTH {
            self.push(special.pad, 1.0);
        }
        self
    }

    pub fn has_weights(&self) -> bool {
        self.weights.iter().any(|&w| w != 1.0)
    }
}

/// `(token id, weight)` per token of `text`, each weighted segment tokenized on its own.
pub fn weighted_tokens(tokenizer: &ClipTokenizer, text: &str) -> Vec<Vec<(u32, f32)>> {
    parse_weighted(text)
        .into_iter()
        .map(|(segment, w)| {
            tokenizer
                .encode(&segment)
                .into_iter()
                .map(|id| (id, w))
                .collect()
        })
        .filter(|group: &Vec<(u32, f32)>| !group.is_empty())
        .collect()
}

/// Packs a prompt into 77-token windows `[bos, up to 75 tokens, eos, pad...]`
/// ([`SpecialTokens::SD1`] or [`SpecialTokens::SD2`]). An empty prompt gives one window.
pub fn tokenize_weighted(
    tokenizer: &ClipTokenizer,
    text: &str,
    special: &SpecialTokens,
) -> Vec<WeightedWindow> {
    let body = CONTEXT_LENGTH - 2;
    let mut windows = Vec::new();
    let mut current = WeightedWindow::start(special);
    for group in weighted_tokens(tokenizer, text) {
        let splittable = group.len() >= MAX_WORD_LENGTH;
        let mut rest = group.as_slice();
        while !rest.is_empty() {
            let room = body + 1 - current.ids.len();
            if rest.len() <= room {
                rest.iter().for_each(|&(id, w)| current.push(id, w));
                rest = &[];
                continue;
            }
            if splittable {
                rest[..room].iter().for_each(|&(id, w)| current.push(id, w));
                rest = &rest[room..];
            }
            let full = std::mem::replace(&mut current, WeightedWindow::start(special));
            windows.push(full.close(special));
        }
    }
    windows.push(current.close(special));
    windows
}

/// Encodes `windows` and applies their weights: `[1, 77 * windows, hidden]` and the first
/// window's pooled output `[1, hidden]`. `layer`/`normalize_skipped` as in
/// [`ClipTextModel::forward_with`]; `special` lays out the empty prompt used for `z_empty`.
pub fn encode_weighted(
    model: &ClipTextModel,
    windows: &[WeightedWindow],
    layer: ClipLayer,
    normalize_skipped: bool,
    special: &SpecialTokens,
) -> Result<(Tensor, Tensor)> {
    let ctx = || "weighted prompt encoding".to_string();
    if windows.is_empty() {
        return Err(ModelError::Other(
            "weighted prompt encoding: no windows".into(),
        ));
    }
    if let Some(bad) = windows
        .iter()
        .find(|w| w.ids.len() != CONTEXT_LENGTH || w.weights.len() != CONTEXT_LENGTH)
    {
        return Err(ModelError::Shape {
            context: ctx(),
            message: format!(
                "windows must hold {CONTEXT_LENGTH} ids and weights, got {} and {}",
                bad.ids.len(),
                bad.weights.len()
            ),
        });
    }
    let weighted = windows.iter().any(WeightedWindow::has_weights);
    let mut ids: Vec<i64> = windows
        .iter()
        .flat_map(|w| w.ids.iter().map(|&i| i as i64))
        .collect();
    if weighted {
        let empty = special.empty_window();
        ids.extend(empty.ids.iter().map(|&i| i as i64));
    }
    let rows = ids.len() as i64 / CONTEXT_LENGTH as i64;
    let device = model.device();
    let ids = Tensor::from_slice(&ids)
        .f_view([rows, CONTEXT_LENGTH as i64])
        .and_then(|t| t.f_to_device(device))
        .context(ctx)?;
    let out = model.forward_with(&ids, layer, normalize_skipped)?;
    let n = windows.len() as i64;
    let pooled = out.pooled.f_narrow(0, 0, 1).context(ctx)?;
    let mut z = out.hidden_state.f_narrow(0, 0, n).context(ctx)?;
    if weighted {
        let _guard = tch::no_grad_guard();
        let z_empty = out.hidden_state.f_narrow(0, n, 1).context(ctx)?;
        let w: Vec<f32> = windows
            .iter()
            .flat_map(|w| w.weights.iter().copied())
            .collect();
        let w = Tensor::from_slice(&w)
            .f_view([n, CONTEXT_LENGTH as i64, 1])
            .and_then(|t| t.f_to_device(device))
            .and_then(|t| t.f_to_kind(z.kind()))
            .context(ctx)?;
        let scaled = z
            .f_sub(&z_empty)
            .and_then(|d| d.f_mul(&w))
            .and_then(|d| d.f_add(&z_empty))
            .context(ctx)?;
        // Only positions with w != 1 change, bit for bit as the reference leaves the others.
        let changed = w.f_ne(1.0).context(ctx)?;
        z = scaled.f_where_self(&changed, &z).context(ctx)?;
    }
    let hidden = z.size()[2];
    let z = z
        .f_reshape([1, n * CONTEXT_LENGTH as i64, hidden])
        .context(ctx)?;
    Ok((z, pooled))
}

/// Prompt text to UNet conditioning in one call: [`tokenize_weighted`] then
/// [`encode_weighted`]. Returns `[1, 77 * windows, hidden]` and the pooled output `[1, hidden]`.
pub fn encode_prompt(
    model: &ClipTextModel,
    tokenizer: &ClipTokenizer,
    text: &str,
    special: &SpecialTokens,
    layer: ClipLayer,
    normalize_skipped: bool,
) -> Result<(Tensor, Tensor)> {
    let windows = tokenize_weighted(tokenizer, text, special);
    encode_weighted(model, &windows, layer, normalize_skipped, special)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn approx(got: &[(String, f32)], want: &[(&str, f32)]) {
        assert_eq!(got.len(), want.len(), "{got:?} vs {want:?}");
        for ((gs, gw), (ws, ww)) in got.iter().zip(want) {
            assert_eq!(gs, ws, "{got:?}");
            assert!((gw - ww).abs() < 1e-6, "{gs}: weight {gw} != {ww}");
        }
    }

    #[test]
    fn plain_text_is_one_segment_of_weight_one() {
        approx(&parse_weighted("a red circle"), &[("a red circle", 1.0)]);
        assert!(parse_weighted("").is_empty());
    }

    #[test]
    fn parentheses_and_brackets_scale_by_1_1() {
        approx(
            &parse_weighted("a (red) [blue] circle"),
            &[
                ("a ", 1.0),
                ("red", 1.1),
                (" ", 1.0),
                ("blue", 1.0 / 1.1),
                (" circle", 1.0),
            ],
        );
    }

    #[test]
    fn nesting_multiplies() {
        approx(&parse_weighted("((red))"), &[("red", 1.21)]);
        approx(&parse_weighted("[[red]]"), &[("red", 1.0 / 1.21)]);
        approx(&parse_weighted("([red])"), &[("red", 1.0)]);
        approx(
            &parse_weighted("(a (b) c)"),
            &[("a ", 1.1), ("b", 1.21), (" c", 1.1)],
        );
    }

    #[test]
    fn explicit_weight_replaces_the_enclosing_one() {
        approx(&parse_weighted("(red:1.5)"), &[("red", 1.5)]);
        approx(&parse_weighted("((red:0.5))"), &[("red", 0.5)]);
        approx(
            &parse_weighted("(a (b:2) c:0.5)"),
            &[("a ", 0.5), ("b", 2.0), (" c", 0.5)],
        );
        approx(&parse_weighted("( red : 1.25 )"), &[(" red ", 1.25)]);
    }

    #[test]
    fn colon_without_a_number_is_text() {
        approx(&parse_weighted("(a:b)"), &[("a:b", 1.1)]);
        approx(&parse_weighted("(:1.5)"), &[(":1.5", 1.1)]);
        approx(&parse_weighted("(time: 12:30)"), &[("time: 12", 30.0)]);
    }

    #[test]
    fn escaped_and_unmatched_brackets_are_literal() {
        approx(
            &parse_weighted(r"\(not weighted\)"),
            &[("(not weighted)", 1.0)],
        );
        approx(&parse_weighted(r"(a \(b\))"), &[("a (b)", 1.1)]);
        approx(&parse_weighted(r"\[x\]"), &[("[x]", 1.0)]);
        approx(&parse_weighted("a (b"), &[("a (b", 1.0)]);
        approx(&parse_weighted("a ) b"), &[("a ) b", 1.0)]);
        approx(&parse_weighted("(a [b) c]"), &[("a [b", 1.1), (" c]", 1.0)]);
        approx(&parse_weighted("()"), &[]);
    }

    fn tokenizer() -> ClipTokenizer {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/text_encoders/bpe_simple_vocab_16e6.txt.gz");
        ClipTokenizer::from_file(&path).expect("committed CLIP vocabulary")
    }

    #[test]
    fn windows_are_77_tokens_with_bos_eos_and_padding() {
        let tok = tokenizer();
        let windows = tokenize_weighted(&tok, "", &SpecialTokens::SD1);
        assert_eq!(windows.len(), 1);
        assert_eq!(windows[0].ids[..2], [BOS_TOKEN_ID, EOS_TOKEN_ID]);
        assert!(windows[0].ids[2..].iter().all(|&i| i == EOS_TOKEN_ID));
        let sd2 = tokenize_weighted(&tok, "a cat", &SpecialTokens::SD2);
        assert_eq!(sd2[0].ids[..4], [BOS_TOKEN_ID, 320, 2368, EOS_TOKEN_ID]);
        assert!(sd2[0].ids[4..].iter().all(|&i| i == 0));
        assert_eq!(sd2[0].ids.len(), CONTEXT_LENGTH);
    }

    #[test]
    fn weights_follow_their_tokens() {
        let tok = tokenizer();
        let w = tokenize_weighted(&tok, "a (cat:1.5) [dog]", &SpecialTokens::SD1);
        assert_eq!(w.len(), 1);
        let cat = tok.encode("cat")[0];
        let dog = tok.encode("dog")[0];
        let at = |id| w[0].ids.iter().position(|&i| i == id).unwrap();
        assert_eq!(w[0].weights[at(cat)], 1.5);
        assert!((w[0].weights[at(dog)] - 1.0 / 1.1).abs() < 1e-6);
        assert_eq!(w[0].weights[0], 1.0);
    }

    #[test]
    fn long_segments_split_at_75_tokens() {
        let tok = tokenizer();
        let text = vec!["cat"; 160].join(" ");
        let windows = tokenize_weighted(&tok, &text, &SpecialTokens::SD1);
        assert_eq!(windows.len(), 3);
        let cat = tok.encode("cat")[0];
        for w in &windows {
            assert_eq!(w.ids.len(), CONTEXT_LENGTH);
            assert_eq!(w.ids[0], BOS_TOKEN_ID);
        }
        assert!(windows[0].ids[1..76].iter().all(|&i| i == cat));
        assert_eq!(windows[0].ids[76], EOS_TOKEN_ID);
        assert_eq!(windows[2].ids.iter().filter(|&&i| i == cat).count(), 10);
    }

    #[test]
    fn short_segments_move_whole_to_the_next_window() {
        let tok = tokenizer();
        // 74 tokens of weight 1, then a 3-token weighted segment that does not fit.
        let text = format!("{} (red blue green:1.2)", vec!["cat"; 74].join(" "));
        let windows = tokenize_weighted(&tok, &text, &SpecialTokens::SD1);
        assert_eq!(windows.len(), 2);
        assert_eq!(windows[0].ids[75], EOS_TOKEN_ID);
        assert!(!windows[0].has_weights());
        assert_eq!(windows[1].ids[1..4], tok.encode("red blue green")[..]);
        assert_eq!(windows[1].weights[1..4], [1.2, 1.2, 1.2]);
    }
}
