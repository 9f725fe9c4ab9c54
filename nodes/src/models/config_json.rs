//! Reading diffusers `config.json` files: the reading and refusing steps the UNet and VAE
//! configs share, each failing with a [`ConfigError`] that names the key.
use serde_json::Value;

pub use crate::error::ConfigError;

pub type ConfigResult<T> = std::result::Result<T, ConfigError>;

/// `block_out_channels`: a non-empty list of integers.
pub fn block_out_channels(json: &Value) -> ConfigResult<Vec<i64>> {
    const KEY: &str = "block_out_channels";
    let invalid = |message: &str| ConfigError::Invalid {
        key: KEY,
        message: message.into(),
    };
    let channels = json
        .get(KEY)
        .and_then(Value::as_array)
        .ok_or(ConfigError::Missing { key: KEY })?
        .iter()
        .map(|v| v.as_i64().ok_or_else(|| invalid("not an integer")))
        .collect::<ConfigResult<Vec<i64>>>()?;
    if channels.is_empty() {
        return Err(invalid("empty"));
    }
    Ok(channels)
}

/// Refuses the first of `keys` that is set (not null): `model` is then another architecture.
pub fn refuse_set(json: &Value, keys: &[&'static str], model: &'static str) -> ConfigResult<()> {
    match keys
        .iter()
        .find(|k| json.get(**k).is_some_and(|v| !v.is_null()))
    {
        Some(&key) => Err(ConfigError::OtherArchitecture { key, model }),
        None => Ok(()),
    }
}

/// Refuses a key present with another value than the only one this implementation computes
/// (numbers compare by value, so `1` and `1.0` agree).
pub fn require_values(json: &Value, fixed: &[(&'static str, Value)]) -> ConfigResult<()> {
    for (key, expected) in fixed {
        if let Some(v) = json.get(*key) {
            let same = v == expected || (v.as_f64().is_some() && v.as_f64() == expected.as_f64());
            if !same {
                return Err(unsupported(key, v, Some(expected)));
            }
        }
    }
    Ok(())
}

/// [`ConfigError::Unsupported`] for `key` found as `found`.
pub fn unsupported(key: &'static str, found: &Value, expected: Option<&Value>) -> ConfigError {
    ConfigError::Unsupported {
        key,
        found: found.to_string(),
        expected: expected.map(Value::to_string),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn errors_name_the_key() {
        let e = block_out_channels(&json!({"block_out_channels": [1, "x"]})).unwrap_err();
        assert_eq!(e.to_string(), "block_out_channels: not an integer");
        let e = require_values(&json!({"act_fn": "gelu"}), &[("act_fn", json!("silu"))]);
        assert_eq!(
            e.unwrap_err().to_string(),
            r#"unsupported act_fn = "gelu" (only "silu")"#
        );
        assert!(require_values(&json!({"n": 1.0}), &[("n", json!(1))]).is_ok());
        let e = refuse_set(&json!({"a": null, "b": 3}), &["a", "b"], "UNet").unwrap_err();
        assert_eq!(
            e,
            ConfigError::OtherArchitecture {
                key: "b",
                model: "UNet"
            }
        );
    }
}
