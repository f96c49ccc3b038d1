//! The tamper-evident round ledger of fedchain (records, Merkle log, checkpoints, credits).
//!
//! **Status: empty.** The ledger issue fills this crate: canonically encoded append-only records on
//! `sled`, an RFC 6962 Merkle log with inclusion and consistency proofs, signed checkpoints cosigned
//! by hospitals, a content-addressed blob store, credit accounts, and an offline verifier.
//!
//! Architecture invariant: this crate stores the bytes of ciphertexts, shares and models opaquely
//! (by digest); it knows nothing of Paillier, libtorch or gRPC.
#![deny(missing_docs)]
