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
