use std::path::PathBuf;

/// Result alias for this crate.
pub type Result<T, E = ModelError> = std::result::Result<T, E>;

/// What can go wrong building, loading, saving or training a model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The spec is inconsistent, or does not fit the data.
    #[error("invalid model: {0}")]
    InvalidSpec(String),
    /// A flat parameter vector has the wrong number of values for the spec.
    #[error("parameter vector has {found} values, but the model has {expected} parameters")]
    WrongLength {
        /// Parameters of the spec.
        expected: usize,
        /// Values given.
        found: usize,
    },
    /// A parameter is NaN or infinite.
    #[error("parameter {index} is {value}, not a finite number")]
    NotFinite {
        /// Index in the flat vector.
        index: usize,
        /// The value.
        value: f32,
    },
    /// A model file is malformed, incomplete, or does not match its recorded digest.
    #[error("{path}: {reason}")]
    BadFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Bytes that should hold a model or digest do not.
    #[error("{0}")]
    Format(String),
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The requested device cannot be used.
    #[error("{0}")]
    Device(String),
    /// A training or evaluation request is out of range.
    #[error("{0}")]
    InvalidArgument(String),
    /// Training diverged (the loss became NaN or infinite).
    #[error("training diverged at epoch {epoch}: loss is {loss}; lower the learning rate")]
    Diverged {
        /// 1-based epoch.
        epoch: usize,
        /// The loss.
        loss: f64,
    },
    /// libtorch reported an error (in `fedchain-models`, the crate that links it).
    #[error("libtorch: {0}")]
    Torch(String),
}
