use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The toml crate's message carries line, column and the offending key.
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: schema = {found} is not supported (this nodeimg reads schema {supported})")]
    Schema {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
    #[error("{path}: unknown layer `{layer}` (expected {expected})")]
    UnknownLayer {
        path: PathBuf,
        layer: String,
        expected: PathBuf,
    },
    #[error("{path}: `{key}`: {problem}")]
    Invalid {
        path: PathBuf,
        key: String,
        problem: String,
    },
}

impl SpecError {
    pub(crate) fn invalid(
        path: &std::path::Path,
        key: impl Into<String>,
        problem: impl Into<String>,
    ) -> Self {
        SpecError::Invalid {
            path: path.to_path_buf(),
            key: key.into(),
            problem: problem.into(),
        }
    }
}
