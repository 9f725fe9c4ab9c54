//! CLIP's byte-level BPE tokenizer (Radford et al. 2021, OpenAI `simple_tokenizer.py`), matching
//! transformers' `CLIPTokenizer` (5.x, tokenizers-backed): NFC, runs of whitespace to one space,
//! lowercase, CLIP's word regex, GPT-2 byte-to-unicode table, `</w>` word ends, bos 49406 / eos 49407.
//!
//! The vocabulary is built from the merges file `bpe_simple_vocab_16e6.txt.gz` exactly as the
//! reference does: 256 byte characters, the same with `</w>`, one token per merge, then the two
//! special tokens.
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::io::Read;
use std::path::Path;
use std::sync::Mutex;

use regex::Regex;
use unicode_normalization::UnicodeNormalization;

use crate::error::{ModelError, Result};

/// Id of `<|startoftext|>` in the standard CLIP vocabulary.
pub const BOS_TOKEN_ID: u32 = 49406;
/// Id of `<|endoftext|>` in the standard CLIP vocabulary.
pub const EOS_TOKEN_ID: u32 = 49407;
/// Context length of every CLIP text encoder Stable Diffusion uses.
pub const CONTEXT_LENGTH: usize = 77;

const START_OF_TEXT: &str = "<|startoftext|>";
const END_OF_TEXT: &str = "<|endoftext|>";
const END_OF_WORD: &str = "</w>";
/// Merges the reference reads from the file: the rest of the file is unused (OpenAI's choice
/// to keep the vocabulary at 49408 = 256 * 2 + 48894 merges + 2 specials).
const MERGE_COUNT: usize = 49152 - 256 - 2;

/// Words the byte-level BPE splits text into; the special-token alternatives come first so a
/// lowercased `<|STARTOFTEXT|>` stays one word, as in the reference.
const WORD_PATTERN: &str =
    r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|\p{L}+|\p{N}|[^\s\p{L}\p{N}]+";

pub struct ClipTokenizer {
    encoder: HashMap<String, u32>,
    decoder: Vec<String>,
    /// (left id, right id) -> (merge rank, merged id)
    merges: HashMap<(u32, u32), (u32, u32)>,
    /// Vocabulary id of each byte's character, inside a word and at its end (`</w>`).
    byte_ids: [u32; 256],
    byte_end_ids: [u32; 256],
    char_to_byte: HashMap<char, u8>,
    word_regex: Regex,
    whitespace_regex: Regex,
    cache: Mutex<HashMap<String, Vec<u32>>>,
}

/// A copy for a second handle on the same vocabulary (a LoRA-patched text encoder); the
/// word cache starts empty.
impl Clone for ClipTokenizer {
    fn clone(&self) -> Self {
        Self {
            encoder: self.encoder.clone(),
            decoder: self.decoder.clone(),
            merges: self.merges.clone(),
            byte_ids: self.byte_ids,
            byte_end_ids: self.byte_end_ids,
            char_to_byte: self.char_to_byte.clone(),
            word_regex: self.word_regex.clone(),
            whitespace_regex: self.whitespace_regex.clone(),
            cache: Mutex::new(HashMap::new()),
        }
    }
}

impl std::fmt::Debug for ClipTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClipTokenizer")
            .field("vocab_size", &self.decoder.len())
            .finish()
    }
}

/// GPT-2's table mapping every byte to a printable character, so BPE works on strings
/// without whitespace or control characters: printable Latin-1 bytes map to themselves, the
/// others to 256, 257, ... in byte order.
fn bytes_to_unicode() -> [char; 256] {
    let keeps_itself = |b: u32| {
        (0x21..=0x7e).contains(&b) || (0xa1..=0xac).contains(&b) || (0xae..=0xff).contains(&b)
    };
    let mut table = ['\0'; 256];
    let mut next_free = 256u32;
    for b in 0..256u32 {
        let c = if keeps_itself(b) {
            b
        } else {
            let c = next_free;
            next_free += 1;
            c
        };
        table[b as usize] = char::from_u32(c).expect("code points below 512 are valid chars");
    }
    table
}

impl ClipTokenizer {
    /// Reads the merges file, gzip-compressed (`.gz`, as shipped) or plain text.
    pub fn from_file(path: &Path) -> Result<Self> {
        let io_err = |source| ModelError::Io {
            path: path.to_path_buf(),
            source,
        };
        let raw = std::fs::read(path).map_err(io_err)?;
        let text = if raw.starts_with(&[0x1f, 0x8b]) {
            let mut out = String::new();
            flate2::read::GzDecoder::new(raw.as_slice())
                .read_to_string(&mut out)
                .map_err(io_err)?;
            out
        } else {
            String::from_utf8(raw).map_err(|e| ModelError::Format {
                path: path.to_path_buf(),
                format: "CLIP BPE merges",
                message: e.to_string(),
            })?
        };
        Self::from_merges_text(&text).map_err(|message| ModelError::Format {
            path: path.to_path_buf(),
            format: "CLIP BPE merges",
            message,
        })
    }

    /// Builds the tokenizer from the merges file's text (first line a version header).
    pub fn from_merges_text(text: &str) -> Result<Self, String> {
        let merge_lines: Vec<&str> = text.lines().skip(1).take(MERGE_COUNT).collect();
        if merge_lines.len() < MERGE_COUNT {
            return Err(format!(
                "expected {MERGE_COUNT} merges after the header line, found {}",
                merge_lines.len()
            ));
        }
        let byte_to_char = bytes_to_unicode();
        // The reference lists byte characters in its table's insertion order: bytes that map
        // to themselves first, then the remapped ones (both ascending), i.e. by character.
        let mut byte_chars: Vec<char> = byte_to_char.to_vec();
        byte_chars.sort_unstable();
        let mut decoder: Vec<String> = byte_chars.iter().map(|c| c.to_string()).collect();
        decoder.extend(byte_chars.iter().map(|c| format!("{c}{END_OF_WORD}")));
        let mut pairs = Vec::with_capacity(MERGE_COUNT);
        for (n, line) in merge_lines.iter().enumerate() {
            let mut parts = line.split(' ');
            let (Some(left), Some(right), None) = (parts.next(), parts.next(), parts.next()) else {
                return Err(format!(
                    "merge line {}: expected two symbols: {line:?}",
                    n + 2
                ));
            };
            pairs.push((left, right));
            decoder.push(format!("{left}{right}"));
        }
        decoder.push(START_OF_TEXT.to_string());
        decoder.push(END_OF_TEXT.to_string());
        let encoder: HashMap<String, u32> = decoder
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as u32))
            .collect();
        let mut merges = HashMap::with_capacity(MERGE_COUNT);
        for (rank, (left, right)) in pairs.iter().enumerate() {
            let id = |s: &str| {
                encoder.get(s).copied().ok_or_else(|| {
                    format!("merge {left} {right}: symbol {s:?} is not in the vocabulary")
                })
            };
            let merged = id(&format!("{left}{right}"))?;
            merges.insert((id(left)?, id(right)?), (rank as u32, merged));
        }
        let char_to_byte = byte_to_char
            .iter()
            .enumerate()
            .map(|(b, &c)| (c, b as u8))
            .collect();
        let mut byte_ids = [0u32; 256];
        let mut byte_end_ids = [0u32; 256];
        for (b, c) in byte_to_char.iter().enumerate() {
            byte_ids[b] = encoder[&c.to_string()];
            byte_end_ids[b] = encoder[&format!("{c}{END_OF_WORD}")];
        }
        Ok(Self {
            encoder,
            decoder,
            merges,
            byte_ids,
            byte_end_ids,
            char_to_byte,
            word_regex: Regex::new(WORD_PATTERN).expect("static regex"),
            whitespace_regex: Regex::new(r"\s+").expect("static regex"),
            cache: Mutex::new(HashMap::new()),
        })
    }

    pub fn vocab_size(&self) -> usize {
        self.decoder.len()
    }

    /// Id of a vocabulary entry written as the vocabulary does (`"cat</w>"`, `"<|endoftext|>"`).
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.encoder.get(token).copied()
    }

    pub fn bos_token_id(&self) -> u32 {
        BOS_TOKEN_ID
    }

    pub fn eos_token_id(&self) -> u32 {
        EOS_TOKEN_ID
    }

    /// Token ids of `text` without bos/eos. Literal `<|startoftext|>` / `<|endoftext|>` in the
    /// text become their special ids, as in transformers (special tokens match the raw text).
    pub fn encode(&self, text: &str) -> Vec<u32> {
        let mut ids = Vec::new();
        let mut rest = text;
        loop {
            let next_special = [(START_OF_TEXT, BOS_TOKEN_ID), (END_OF_TEXT, EOS_TOKEN_ID)]
                .into_iter()
                .filter_map(|(s, id)| rest.find(s).map(|at| (at, s.len(), id)))
                .min_by_key(|&(at, _, _)| at);
            match next_special {
                Some((at, len, id)) => {
                    self.encode_plain(&rest[..at], &mut ids);
                    ids.push(id);
                    rest = &rest[at + len..];
                }
                None => {
                    self.encode_plain(rest, &mut ids);
                    return ids;
                }
            }
        }
    }

    /// `[bos] + encode(text) + [eos]`, no truncation (what `CLIPTokenizer(text)` returns).
    pub fn encode_with_special(&self, text: &str) -> Vec<u32> {
        let mut ids = vec![BOS_TOKEN_ID];
        ids.extend(self.encode(text));
        ids.push(EOS_TOKEN_ID);
        ids
    }

    /// `[bos] + ids + [eos]` truncated to `length` (keeping the eos) and padded with `pad_id`:
    /// the single-window layout of diffusers pipelines (SD1 pads with eos, SD2's OpenCLIP with 0).
    pub fn encode_padded(&self, text: &str, length: usize, pad_id: u32) -> Vec<u32> {
        let mut ids = vec![BOS_TOKEN_ID];
        ids.extend(self.encode(text).into_iter().take(length.saturating_sub(2)));
        ids.push(EOS_TOKEN_ID);
        ids.truncate(length);
        ids.resize(length, pad_id);
        ids
    }

    /// Text of `ids`, words separated by spaces (special tokens kept as written).
    pub fn decode(&self, ids: &[u32]) -> String {
        let mut bytes = Vec::new();
        for &id in ids {
            let Some(token) = self.decoder.get(id as usize) else {
                continue;
            };
            if id == BOS_TOKEN_ID || id == EOS_TOKEN_ID {
                bytes.extend_from_slice(token.as_bytes());
                continue;
            }
            let (body, word_end) = match token.strip_suffix(END_OF_WORD) {
                Some(body) => (body, true),
                None => (token.as_str(), false),
            };
            bytes.extend(body.chars().filter_map(|c| self.char_to_byte.get(&c)));
            if word_end {
                bytes.push(b' ');
            }
        }
        String::from_utf8_lossy(&bytes).trim().to_string()
    }

    /// Normalises like the reference (NFC, whitespace runs to one space, per-character
    /// lowercase) and appends the BPE ids of each word.
    fn encode_plain(&self, text: &str, ids: &mut Vec<u32>) {
        let nfc: String = text.nfc().collect();
        let spaced = self.whitespace_regex.replace_all(&nfc, " ");
        // Per character, as tokenizers' Lowercase normaliser does (no final-sigma rule).
        let lower: String = spaced.chars().flat_map(char::to_lowercase).collect();
        for word in self.word_regex.find_iter(&lower) {
            ids.extend(self.bpe_word(word.as_str()));
        }
    }

    /// Applies merges lowest rank first, leftmost on ties, until none applies (what both
    /// OpenAI's loop and tokenizers' BPE compute), in O(n log n): symbols form a linked list
    /// and candidate pairs wait in a heap; entries made stale by a merge are skipped.
    fn merge_symbols(&self, mut ids: Vec<u32>) -> Vec<u32> {
        let n = ids.len();
        if n < 2 {
            return ids;
        }
        const NONE: usize = usize::MAX;
        let mut prev: Vec<usize> = (0..n).map(|i| if i == 0 { NONE } else { i - 1 }).collect();
        let mut next: Vec<usize> = (1..=n).map(|i| if i == n { NONE } else { i }).collect();
        let mut alive = vec![true; n];
        let mut heap = BinaryHeap::new();
        let candidate = |left: usize, right: usize, ids: &[u32]| {
            self.merges
                .get(&(ids[left], ids[right]))
                .map(|&(rank, merged)| Reverse((rank, left, right, ids[left], ids[right], merged)))
        };
        heap.extend((0..n - 1).filter_map(|i| candidate(i, i + 1, &ids)));
        while let Some(Reverse((_, left, right, left_id, right_id, merged))) = heap.pop() {
            let current = alive[left]
                && alive[right]
                && next[left] == right
                && ids[left] == left_id
                && ids[right] == right_id;
            if !current {
                continue;
            }
            ids[left] = merged;
            alive[right] = false;
            let after = next[right];
            next[left] = after;
            if after != NONE {
                prev[after] = left;
                heap.extend(candidate(left, after, &ids));
            }
            if prev[left] != NONE {
                heap.extend(candidate(prev[left], left, &ids));
            }
        }
        // The first symbol is never merged away (merges keep the left one).
        let mut out = Vec::new();
        let mut at = 0;
        while at != NONE {
            out.push(ids[at]);
            at = next[at];
        }
        out
    }

    fn bpe_word(&self, word: &str) -> Vec<u32> {
        if let Some(hit) = self.cache.lock().ok().and_then(|c| c.get(word).cloned()) {
            return hit;
        }
        let bytes = word.as_bytes();
        let symbols: Vec<u32> = bytes
            .iter()
            .enumerate()
            .map(|(i, &b)| {
                if i + 1 == bytes.len() {
                    self.byte_end_ids[b as usize]
                } else {
                    self.byte_ids[b as usize]
                }
            })
            .collect();
        let symbols = self.merge_symbols(symbols);
        if let Ok(mut cache) = self.cache.lock() {
            // Prompts are short; a cap keeps a long-running server from growing without bound.
            if cache.len() > 50_000 {
                cache.clear();
            }
            cache.insert(word.to_string(), symbols.clone());
        }
        symbols
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_table_is_a_bijection_onto_printable_characters() {
        let table = bytes_to_unicode();
        let distinct: std::collections::HashSet<char> = table.iter().copied().collect();
        assert_eq!(distinct.len(), 256);
        assert_eq!(table[b'a' as usize], 'a');
        assert_eq!(table[b' ' as usize], '\u{120}');
        assert!(table.iter().all(|c| !c.is_whitespace() && !c.is_control()));
    }

    #[test]
    fn special_and_word_tokens_have_the_reference_ids() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/text_encoders/bpe_simple_vocab_16e6.txt.gz");
        let tok = ClipTokenizer::from_file(&path).unwrap();
        assert_eq!(tok.token_id("<|startoftext|>"), Some(BOS_TOKEN_ID));
        assert_eq!(tok.token_id("<|endoftext|>"), Some(EOS_TOKEN_ID));
        assert_eq!(tok.token_id("a</w>"), Some(320));
        assert_eq!(tok.token_id("!"), Some(0));
        assert_eq!(tok.encode("a cat"), [320, 2368]);
    }

    #[test]
    fn short_merges_file_is_an_error_not_a_panic() {
        let err = ClipTokenizer::from_merges_text("#version: 0.2\ni n\n").unwrap_err();
        assert!(err.contains("expected"), "{err}");
    }
}
