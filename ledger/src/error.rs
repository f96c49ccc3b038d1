/// Result alias for this crate.
pub type Result<T, E = LedgerError> = std::result::Result<T, E>;

/// Everything that can go wrong in the ledger. Variants say what and where, so the verifier's report
/// and a refused write can be acted on.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// A Merkle proof does not verify, or a request on the tree is out of range.
    #[error("merkle: {0}")]
    Proof(String),
    /// A signed note or checkpoint is malformed, or a signature does not verify.
    #[error("note: {0}")]
    Note(String),
    /// A new checkpoint does not extend the last one cosigned (a fork, or a rewrite of history).
    #[error("inconsistent checkpoint: {0}")]
    Inconsistent(String),
    /// A credit movement would break an invariant (negative balance, double reward, supply).
    #[error("credits: {0}")]
    Credit(String),
    /// Bytes that should hold a record (or another encoded object) do not.
    #[error("cannot decode {what}: {reason}")]
    Decode {
        /// The kind of object.
        what: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The stored data is damaged or inconsistent.
    #[error("corrupt ledger: {0}")]
    Corrupt(String),
    /// A request is out of range or malformed.
    #[error("{0}")]
    InvalidArgument(String),
    /// The embedded database failed.
    #[error("storage: {0}")]
    Storage(#[from] sled::Error),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
}
