//! The fedchain coordinator: the round state machine, the gRPC services that drive jobs through
//! it, and its ledger.
//!
//! - [`round`]: one round as a pure, I/O-free state machine: it validates signed encrypted
//!   submissions, closes at the deadline or when everyone submitted, multiplies the ciphertexts,
//!   verifies decryption shares as they arrive, combines `t` of them, applies FedAvg and prices the
//!   round (credit policy v1), returning the ledger entries to append and a typed error per refusal.
//! - [`job`]: one job's lifecycle as a pure machine, as `round` is one round's: requests, time
//!   and credits in; ledger writes, tasks in domain types and typed errors out.
//! - [`decryptors`]: who is asked for a round's decryption shares, and when a backup is asked:
//!   only for a decryptor that refused or ran past the budget of the work it was given.
//! - [`service`]: the coordinator process: job, training and ledger services over mutual TLS, the
//!   job lifecycle, checkpoints cosigned by hospitals, and recovery from the ledger after a crash.
//! - [`failpoint`]: named places where a crash test stops the coordinator (test builds only).
//! - [`refusals`]: how fast one hospital's refused requests may grow the ledger.
//!
//! Who the parties are, and their folders and certificates, come from `fedchain-consortium`; the
//! rules every party recomputes (job validation, round plans, decryption context, evaluation
//! pooling) from `fedchain-protocol`. The auditor's replay lives in `fedchain-audit`, which does
//! not depend on this crate.
//!
//! Architecture invariants: the coordinator never links libtorch (no `tch`, no `torch-sys`;
//! `scripts/check-deps.sh` checks it) and never sees a hospital's plaintext update: it holds no
//! key share (provisioning writes none into its folder), multiplies ciphertexts and checks proofs.
#![deny(missing_docs)]

pub mod decryptors;
pub mod failpoint;
pub mod job;
pub mod refusals;
pub mod round;
pub mod service;
