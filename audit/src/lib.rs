//! What an auditor and a researcher check, trusting only the consortium's public files.
//!
//! - [`replay`](mod@replay): re-derive every round from a ledger folder: signatures, aggregates, decryption
//!   share proofs, recombination, FedAvg, model digests, credits, evaluations. Independent of the
//!   coordinator's round machine: it shares only the rules of `fedchain-protocol`.
//! - [`mirror`](mirror::mirror): copy a running coordinator's ledger over its ledger service,
//!   checking the checkpoint's signatures and quorum, every record's encoding and the Merkle root
//!   they reproduce, and every blob's digest.
//! - [`checkpoints`]: every signed checkpoint of a ledger (a folder, or a coordinator's ledger
//!   service), each checked against the trust file.
//! - [`release`]: check a released model before a researcher uses it: file and parameter
//!   digests, the `RoundFinalized` record, and its inclusion in a checkpoint cosigned by a quorum;
//!   then its preprocessing against the job's spec and round 0's statistics in that checkpoint.
//!
//! Architecture invariant: this is security code, so it lives in a library with typed errors and
//! in-process tests, not in the command-line tool. It never depends on the coordinator crate: an
//! auditor must not need the operator's code to check the operator.
#![deny(missing_docs)]

pub mod checkpoints;
mod error;
pub mod mirror;
pub mod release;
pub mod replay;

pub use error::AuditError;
pub use mirror::{mirror, Mirrored};
pub use release::{verify_preprocessing, verify_release, VerifiedPreprocessing, VerifiedRelease};
pub use replay::{replay, ReplayReport};
