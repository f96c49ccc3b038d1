//! The errors of consortium provisioning and of reading party folders.

use std::path::PathBuf;

use crate::party::NameError;
use crate::tls::TlsError;

/// Errors of consortium provisioning. Messages name the file or the party involved.
#[derive(Debug, thiserror::Error)]
pub enum ConsortiumError {
    /// The target folder already holds something.
    #[error("{path} is not empty; a consortium is created in an empty or new folder")]
    NotEmpty {
        /// The folder.
        path: PathBuf,
    },
    /// The target exists and is not a folder.
    #[error("{path} exists and is not a folder")]
    NotADirectory {
        /// The path.
        path: PathBuf,
    },
    /// A party name is not allowed.
    #[error("invalid party name {name:?}: {reason}")]
    InvalidName {
        /// The name.
        name: String,
        /// Why.
        reason: String,
    },
    /// Two parties share a name.
    #[error("party name {name:?} is used twice (names are unique across all parties, and \"coordinator\" is the coordinator's)")]
    DuplicateName {
        /// The name.
        name: String,
    },
    /// The threshold is not between 1 and the number of hospitals.
    #[error("the threshold must be between 1 and the number of hospitals ({hospitals}), got {threshold}")]
    InvalidThreshold {
        /// Requested threshold.
        threshold: usize,
        /// Number of hospitals.
        hospitals: usize,
    },
    /// Another option is invalid.
    #[error("invalid option: {0}")]
    InvalidOption(String),
    /// A file or folder could not be created, written or read.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The threshold key ceremony failed, or a key file could not be written.
    #[error("threshold key: {0}")]
    Crypto(#[from] fedchain_crypto::CryptoError),
    /// A signed-note key could not be made.
    #[error("signed-note key: {0}")]
    Note(#[from] fedchain_ledger::LedgerError),
    /// A certificate or TLS key could not be made.
    #[error("certificate for {party}: {source}")]
    Certificate {
        /// The party (or "the CA").
        party: String,
        /// The cause.
        source: rcgen::Error,
    },
    /// A party folder's files do not agree with each other or with the consortium.
    #[error("{dir}: {reason}")]
    Folder {
        /// The folder.
        dir: PathBuf,
        /// What does not agree.
        reason: String,
    },
    /// A party folder's certificate.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The description file could not be read or decoded.
    #[error("{path}: {source}")]
    Json {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: serde_json::Error,
    },
}

/// Result of this crate.
pub type Result<T, E = ConsortiumError> = std::result::Result<T, E>;

impl From<NameError> for ConsortiumError {
    fn from(e: NameError) -> ConsortiumError {
        ConsortiumError::InvalidName {
            name: e.name,
            reason: e.reason,
        }
    }
}
