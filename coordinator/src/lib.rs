//! The fedchain coordinator: job lifecycle, round scheduling and homomorphic aggregation.
//!
//! **Status: empty.** The end-to-end issue fills this crate (gRPC services over mutual TLS, rounds,
//! aggregation of ciphertexts with rayon, FedAvg, credits, checkpoints).
//!
//! Architecture invariant: the coordinator never links libtorch and never sees a hospital's
//! plaintext update; it multiplies ciphertexts and checks proofs.
#![deny(missing_docs)]
