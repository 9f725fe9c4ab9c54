//! Errors of the model stack, each carrying the context a user needs: file, tensor name, shapes.
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a valid {format} file: {message}")]
    Format {
        path: PathBuf,
        format: &'static str,
        message: String,
    },
    #[error("{source_name}: weights do not fit {model}:\n{}", problems.join("\n"))]
    Weights {
        source_name: String,
        model: String,
        problems: Vec<String>,
    },
    /// A diffusers `config.json` weft cannot build a model from.
    #[error("{path}: {source}")]
    Config {
        path: PathBuf,
        #[source]
        source: ConfigError,
    },
    /// A single-file checkpoint that is not an SD 1.x / 2.x one, or is damaged.
    #[error("{path}: {source}")]
    Checkpoint {
        path: PathBuf,
        #[source]
        source: CheckpointError,
    },
    #[error("{context}: {message}")]
    Shape { context: String, message: String },
    #[error("{context}: {source}")]
    Tch {
        context: String,
        #[source]
        source: tch::TchError,
    },
    /// The run was cancelled while this computation was going on.
    #[error("cancelled")]
    Cancelled(#[from] weft_engine::Cancelled),
    #[error("{0}")]
    Other(String),
}

/// Why a diffusers `config.json` does not describe a model weft can build.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    #[error("missing {key}")]
    Missing { key: &'static str },
    /// Present but of the wrong type or shape.
    #[error("{key}: {message}")]
    Invalid { key: &'static str, message: String },
    /// A value this implementation does not compute (`expected`: the one it does, if one).
    #[error("unsupported {key} = {found}{}", only(expected))]
    Unsupported {
        key: &'static str,
        found: String,
        expected: Option<String>,
    },
    /// A key only other architectures set.
    #[error("{key} is set: not an SD 1.x/2.x {model}")]
    OtherArchitecture {
        key: &'static str,
        model: &'static str,
    },
}

fn only(expected: &Option<String>) -> String {
    expected
        .as_ref()
        .map(|e| format!(" (only {e})"))
        .unwrap_or_default()
}

/// Why a single-file checkpoint cannot be loaded.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CheckpointError {
    /// A file of a model family weft does not run (SD3, Flux, Stable Cascade, ...).
    #[error("a {family} checkpoint: weft runs SD 1.x, SD 2.x and SDXL base models only")]
    UnsupportedFamily { family: &'static str },
    #[error(
        "no UNet tensors (model.diffusion_model.*): not a Stable Diffusion checkpoint \
         (its {count} tensors are named like {examples:?})"
    )]
    NoUnet { count: usize, examples: Vec<String> },
    #[error("a class-conditioned UNet (label_emb.* without SDXL's text towers, e.g. an upscaler): unsupported")]
    ClassConditioned,
    #[error("no cross-attention transformer at input_blocks.1.1: not an SD 1.x / 2.x UNet")]
    NoCrossAttention,
    #[error("tensor {name} {shape:?}: a fused q/k/v projection needs a multiple of 3 rows")]
    FusedQkv { name: String, shape: Vec<i64> },
    #[error("this SDXL checkpoint's UNet is laid out in a way weft cannot build: {reason}")]
    UnetLayout { reason: String },
    #[error("no {what} tensors in this {family} checkpoint")]
    MissingComponent {
        family: &'static str,
        what: &'static str,
    },
}

pub type Result<T, E = ModelError> = std::result::Result<T, E>;

/// Adds context to a fallible tch call.
pub trait TchContext<T> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T> TchContext<T> for std::result::Result<T, tch::TchError> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| ModelError::Tch {
            context: what(),
            source,
        })
    }
}
