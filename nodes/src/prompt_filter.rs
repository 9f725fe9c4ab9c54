//! PromptFilter: checks a prompt against a blocklist file (words and phrases, one a line,
//! case-insensitive, whole words) and passes it on unchanged, or fails the run before any
//! sampling. The file's content joins the cache key, and an unreadable file is reported when
//! the workflow is planned, before anything runs.
use std::path::{Path, PathBuf};

use weft_engine::{
    ConstantInputs, InputSpec as In, Inputs, ModelFolders, Node, NodeContext, NodeError,
    NodeResult, NodeSpec, OutputSpec as Out, Value, ValueType as T,
};

pub struct PromptFilter;

impl Node for PromptFilter {
    fn spec(&self) -> NodeSpec {
        NodeSpec {
            type_name: "PromptFilter",
            category: "conditioning",
            doc: "passes a prompt on unchanged, or fails the run before sampling when it contains a blocked word or phrase",
            version: 1,
            inputs: vec![
                In::new("text", T::String, "the prompt to check").multiline(),
                In::new(
                    "blocklist",
                    T::String,
                    "a text file of blocked words and phrases, one a line (# starts a comment); matched case-insensitively as whole words",
                ),
            ],
            outputs: vec![Out::new("text", T::String, "the prompt, unchanged")],
            output_node: false,
        }
    }

    fn input_files(
        &self,
        constants: &ConstantInputs,
        _models: &ModelFolders,
    ) -> NodeResult<Vec<PathBuf>> {
        Ok(constants.file("blocklist"))
    }

    fn run(&self, inputs: &Inputs, ctx: &mut NodeContext) -> NodeResult<Vec<Value>> {
        let text = inputs.string("text")?;
        let path = Path::new(inputs.string("blocklist")?);
        let list = ctx
            .files
            .read_to_string(path)
            .map_err(|e| NodeError::msg(format!("blocklist {}: {e}", path.display())))?;
        if let Some((line, phrase)) = first_blocked(text, &list) {
            return Err(NodeError::msg(format!(
                "the prompt contains the blocked phrase '{phrase}' ({}, line {line})",
                path.display()
            )));
        }
        Ok(vec![Value::String(text.to_string())])
    }
}

/// Lower-case words: runs of letters and digits (an apostrophe inside a word is kept).
fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !(c.is_alphanumeric() || c == '\''))
        .map(|w| w.trim_matches('\'').to_lowercase())
        .filter(|w| !w.is_empty())
        .collect()
}

/// The first blocklist entry (its 1-based line and text) whose words stand together in `text`.
pub fn first_blocked(text: &str, blocklist: &str) -> Option<(usize, String)> {
    let prompt = words(text);
    blocklist.lines().enumerate().find_map(|(i, line)| {
        let entry = line.split('#').next().unwrap_or_default().trim();
        let phrase = words(entry);
        let found = !phrase.is_empty()
            && prompt
                .windows(phrase.len())
                .any(|window| window == phrase.as_slice());
        found.then(|| (i + 1, entry.to_string()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIST: &str = "# words and phrases\nGore\nred  Circle  # a phrase\n\n";

    #[test]
    fn blocklist_matches_whole_words_and_phrases_case_insensitively() {
        assert_eq!(
            first_blocked("so much GORE!", LIST),
            Some((2, "Gore".into()))
        );
        assert_eq!(
            first_blocked("a Red circle, on blue", LIST),
            Some((3, "red  Circle".into()))
        );
        // Not whole words, or the words apart: no match.
        assert_eq!(first_blocked("goreish gorey", LIST), None);
        assert_eq!(first_blocked("a red big circle", LIST), None);
        assert_eq!(first_blocked("", LIST), None);
        assert_eq!(first_blocked("gore", "# only comments\n\n"), None);
    }
}
