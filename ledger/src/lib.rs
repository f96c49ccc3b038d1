//! The tamper-evident round ledger of fedchain.
//!
//! Every event of a job (submissions, aggregates, decryption shares, models, credits, refusals) is a
//! [`record::Record`]: canonically encoded, append-only, and the bytes stored are the bytes hashed.
//! The records are the leaves of an RFC 6962 Merkle log ([`merkle`]) with inclusion and consistency
//! proofs. After every round the coordinator signs a C2SP checkpoint of the log ([`note`]) and
//! hospitals cosign it only after checking it extends the last one they cosigned, so no operator can
//! quietly rewrite history. Large objects (ciphertext vectors, shares, models) live in a
//! content-addressed blob store and are referenced by digest. Credits ([`credits`]) move only by
//! records, under invariants checked on write and on verification.
//!
//! Design choices:
//! - Certificate Transparency's model: one operator runs the log, nobody has to trust it; trust comes
//!   from signatures and consistency proofs, checkable offline with the ledger folder and public keys.
//! - `sled` 0.34.7 as the embedded store. Its own flush is not an `fsync` on Linux, so
//!   [`store::Store::flush`] adds one ([`durable`]): records are on disk before anything that
//!   follows them (an acknowledgement, a signature) leaves the process, and after a crash the
//!   store reopens to a consistent prefix.
//!
//! Architecture invariant: this crate stores ciphertexts, shares and models opaquely by digest; it
//! knows nothing of Paillier, libtorch or gRPC.
#![deny(missing_docs)]

pub mod bench;
pub mod credits;
pub mod durable;
mod error;
pub mod merkle;
pub mod note;
pub mod record;
pub mod store;
pub mod verify;

pub use error::{LedgerError, Result};

/// A SHA-256 digest.
pub type Hash = [u8; 32];

/// SHA-256 of `bytes`.
pub fn sha256(bytes: &[u8]) -> Hash {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).into()
}
