/// Result alias for this crate.
pub type Result<T, E = CryptoError> = std::result::Result<T, E>;

/// What can go wrong; variants carry what is needed to act on them.
#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    /// A configuration or parameter is out of range (key size, threshold, bounds, weights).
    #[error("{0}")]
    InvalidParameter(String),
    /// A packing configuration could overflow a slot or wrap modulo N.
    #[error("unsafe packing: {0}")]
    Overflow(String),
    /// A value to quantize is NaN or infinite.
    #[error("value {index} is {value}, not a finite number")]
    NotFinite {
        /// Index in the input vector.
        index: usize,
        /// The value.
        value: f32,
    },
    /// A vector has the wrong number of elements.
    #[error("{what}: expected {expected} elements, found {found}")]
    WrongLength {
        /// What was being checked.
        what: String,
        /// Expected count.
        expected: usize,
        /// Found count.
        found: usize,
    },
    /// A ciphertext from outside fails validation.
    #[error("ciphertext {index} is invalid: {reason}")]
    InvalidCiphertext {
        /// Index in its vector.
        index: usize,
        /// Which check failed.
        reason: String,
    },
    /// A decrypted slot lies outside the range the packing allows: the inputs were not what the
    /// configuration promised (a contributor exceeded its bound) or the wrong key was used.
    #[error("decrypted value {index} is {value}, outside the allowed range +-{bound}")]
    OutOfRange {
        /// Index of the value in the vector.
        index: usize,
        /// The decoded value (saturated to i128 range when bigger).
        value: i128,
        /// The allowed magnitude.
        bound: i128,
    },
    /// A key share does not match the public verification key.
    #[error("key share {index} does not match its public verification key")]
    BadKeyShare {
        /// 1-based share index.
        index: usize,
    },
    /// A decryption share's proof failed, or the share is malformed.
    #[error("decryption share of party {index} is invalid: {reason}")]
    BadDecryptionShare {
        /// 1-based party index.
        index: usize,
        /// What failed.
        reason: String,
    },
    /// Fewer valid decryption shares than the threshold.
    #[error("need {needed} valid decryption shares, have {valid}{}", if rejected.is_empty() { String::new() } else { format!(" (rejected: {})", rejected.iter().map(|i| format!("party {i}")).collect::<Vec<_>>().join(", ")) })]
    NotEnoughShares {
        /// The threshold t.
        needed: usize,
        /// Valid shares available.
        valid: usize,
        /// Parties whose shares were rejected.
        rejected: Vec<usize>,
    },
    /// A ciphertext of a spread decryption has fewer valid shares than the threshold.
    #[error("ciphertext {ciphertext} has {valid} valid decryption shares, {needed} are needed")]
    NotCovered {
        /// Its index in the aggregate.
        ciphertext: usize,
        /// The threshold t.
        needed: usize,
        /// Valid shares covering it.
        valid: usize,
    },
    /// Bytes that should hold an encoded object do not.
    #[error("cannot decode {what}: {reason}")]
    Decode {
        /// The kind of object.
        what: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// Reading or writing a key file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
}
