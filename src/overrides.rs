//! `--set NODE.INPUT=VALUE`: a command-line value read against the input's declared type.
//!
//! The value is never spliced into YAML: text inputs take it verbatim (empty, quotes, `#`,
//! colons and newlines included), numbers and booleans are parsed, `$node.output` is a link
//! and `$$...` a literal text starting with `$`.
use anyhow::{bail, Result};
use weft_engine::workflow::{InputEntry, Link};
use weft_engine::{Constant, InputValue, Registry, ValueType, Workflow};

/// Applies one `NODE.INPUT=VALUE` override to `workflow`.
pub fn apply_set(workflow: &mut Workflow, registry: &Registry, set: &str) -> Result<()> {
    let Some((path, text)) = set.split_once('=') else {
        bail!("--set {set}: expected NODE.INPUT=VALUE");
    };
    let Some((node_id, input)) = path.split_once('.') else {
        bail!("--set {set}: expected NODE.INPUT=VALUE");
    };
    if input.is_empty() {
        bail!("--set {set}: expected NODE.INPUT=VALUE (no input name after the dot)");
    }
    let Some(node) = workflow.nodes.get_mut(node_id) else {
        let known: Vec<&str> = workflow.nodes.keys().map(String::as_str).collect();
        let hint = weft_engine::diagnostic::closest(node_id, known.iter().copied())
            .map(|s| format!(" (did you mean '{s}'?)"))
            .unwrap_or_default();
        bail!("--set {set}: no node '{node_id}' in the workflow{hint}");
    };
    // An unknown type or input is left for validation to report with its hints.
    let declared = registry
        .get(&node.type_name)
        .and_then(|n| n.spec.input(input))
        .map(|(_, spec)| spec.ty);
    let value = parse_value(text, declared).map_err(|why| anyhow::anyhow!("--set {set}: {why}"))?;
    node.inputs
        .insert(input.to_string(), InputEntry { value, pos: None });
    Ok(())
}

/// Reads `text` as a value of type `declared` (or, for an undeclared input, as the plainest
/// scalar it can be).
pub fn parse_value(text: &str, declared: Option<ValueType>) -> Result<InputValue, String> {
    if let Some(rest) = text.strip_prefix("$$") {
        return Ok(InputValue::Constant(Constant::String(format!("${rest}"))));
    }
    if let Some(rest) = text.strip_prefix('$') {
        return Link::parse(rest).map(InputValue::Link).ok_or_else(|| {
            format!("malformed link '{text}': a link is $node.output; write $$ for a literal '$'")
        });
    }
    let constant =
        match declared {
            Some(ValueType::String | ValueType::Enum) => Constant::String(text.to_string()),
            Some(ValueType::Int) => Constant::Int(text.trim().parse().map_err(|_| {
                format!("'{text}' is not a whole number (this input takes an integer)")
            })?),
            Some(ValueType::Seed) => match text.trim().parse::<i64>() {
                Ok(seed) => Constant::Int(seed),
                Err(_) => Constant::whole(text.trim().parse::<u64>().map_err(|_| {
                    format!(
                    "'{text}' is not a whole number from 0 to 2^64 - 1 (this input takes a seed)"
                )
                })?),
            },
            Some(ValueType::Float) => {
                let number: f64 = text
                    .trim()
                    .parse()
                    .map_err(|_| format!("'{text}' is not a number (this input takes a float)"))?;
                Constant::Float(number)
            }
            Some(ValueType::Bool) => Constant::Bool(parse_bool(text).ok_or_else(|| {
                format!("'{text}' is not true or false (this input takes a bool)")
            })?),
            Some(other) => {
                return Err(format!(
                    "this input takes a {} from another node: write $node.output",
                    other.name()
                ))
            }
            None => infer(text),
        };
    Ok(InputValue::Constant(constant))
}

fn parse_bool(text: &str) -> Option<bool> {
    match text.trim().to_ascii_lowercase().as_str() {
        "true" | "yes" | "on" | "1" => Some(true),
        "false" | "no" | "off" | "0" => Some(false),
        _ => None,
    }
}

fn infer(text: &str) -> Constant {
    if let Ok(i) = text.parse::<i64>() {
        Constant::Int(i)
    } else if let Ok(f) = text.parse::<f64>() {
        Constant::Float(f)
    } else if let Some(b) = parse_bool(text).filter(|_| !text.chars().all(|c| c.is_ascii_digit())) {
        Constant::Bool(b)
    } else {
        Constant::String(text.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(value: &str) -> InputValue {
        parse_value(value, Some(ValueType::String)).unwrap()
    }

    fn string(s: &str) -> InputValue {
        InputValue::Constant(Constant::String(s.to_string()))
    }

    #[test]
    fn set_accepts_an_empty_string_for_a_text_input() {
        assert_eq!(text(""), string(""));
    }

    #[test]
    fn set_takes_text_verbatim() {
        for value in [
            "\"quoted\"",
            "'single'",
            "a: b, c: d",
            "red # not a comment",
            "line one\nline two",
            "ünïcødé 🌈 漢字",
            "  padded  ",
            "[not, a, list]",
            "{not: a map}",
            "null",
            "true",
            "42",
        ] {
            assert_eq!(text(value), string(value), "{value:?}");
        }
    }

    #[test]
    fn set_dollar_is_a_link_and_double_dollar_a_literal() {
        assert_eq!(
            text("$model.unet"),
            InputValue::Link(Link {
                node: "model".into(),
                output: "unet".into()
            })
        );
        assert_eq!(text("$$5 off"), string("$5 off"));
        assert!(parse_value("$nodot", Some(ValueType::String)).is_err());
    }

    #[test]
    fn set_parses_numbers_and_bools_by_declared_type() {
        assert_eq!(
            parse_value("42", Some(ValueType::Seed)).unwrap(),
            InputValue::Constant(Constant::Int(42))
        );
        // Seeds take ComfyUI's whole u64 range; an int input does not.
        assert_eq!(
            parse_value("18446744073709551615", Some(ValueType::Seed)).unwrap(),
            InputValue::Constant(Constant::UInt(u64::MAX))
        );
        assert!(parse_value("18446744073709551616", Some(ValueType::Seed)).is_err());
        assert!(parse_value("9223372036854775808", Some(ValueType::Int)).is_err());
        assert_eq!(
            parse_value("7", Some(ValueType::Float)).unwrap(),
            InputValue::Constant(Constant::Float(7.0))
        );
        assert_eq!(
            parse_value("false", Some(ValueType::Bool)).unwrap(),
            InputValue::Constant(Constant::Bool(false))
        );
        let e = parse_value("many", Some(ValueType::Int)).unwrap_err();
        assert!(e.contains("whole number"), "{e}");
        let e = parse_value("", Some(ValueType::Float)).unwrap_err();
        assert!(e.contains("not a number"), "{e}");
        let e = parse_value("x", Some(ValueType::Latent)).unwrap_err();
        assert!(e.contains("$node.output"), "{e}");
    }
}
