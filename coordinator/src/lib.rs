//! The fedchain coordinator: consortium provisioning, the mutual-TLS plumbing, the round state
//! machine, the gRPC services that drive jobs through it, and the auditor's replay.
//!
//! - [`consortium`]: `init` creates a consortium in an empty folder: a consortium certificate
//!   authority, one certificate per party with its role written in it, the coordinator's
//!   checkpoint-signing key, each hospital's identity (submission and cosigning) key, the threshold
//!   Paillier key ceremony, the auditors' trust file and a public description. Every party gets a
//!   folder holding only what it may hold, secrets owner-only from the moment they are created.
//! - [`tls`]: who is calling. Every party authenticates with its certificate (mutual TLS, the
//!   consortium CA as the only root); a certificate names exactly one [`tls::Role`] and one party
//!   as SAN URIs, and [`tls::caller`] lets an RPC through only for the roles it allows.
//! - [`round`]: one round as a pure, I/O-free state machine: it validates signed encrypted
//!   submissions, closes at the deadline or when everyone submitted, multiplies the ciphertexts,
//!   verifies decryption shares as they arrive, combines `t` of them, applies FedAvg and prices the
//!   round (credit policy v1), returning the ledger entries to append and a typed error per refusal.
//! - [`job`]: a researcher's job spec, validated, and the codecs of its rounds.
//! - [`service`]: the coordinator process: job, training and ledger services over mutual TLS, the
//!   job lifecycle, checkpoints cosigned by hospitals, and recovery from the ledger after a crash.
//! - [`replay`]: the auditor's re-derivation of every round from the ledger alone.
//! - [`failpoint`]: named places where a crash test stops the coordinator (test builds only).
//! - [`refusals`]: how fast one hospital's refused requests may grow the ledger.
//!
//! Design choice: roles live in the certificates, not in a table the coordinator keeps. The
//! coordinator is trusted for availability only, so it must not be able to promote a researcher to
//! a hospital by editing its own state; only the CA key (kept by the operator, offline) can.
//!
//! Architecture invariants: the coordinator never links libtorch (no `tch`, no `torch-sys`;
//! `scripts/check-deps.sh` checks it) and never sees a hospital's plaintext update: it holds no
//! key share (provisioning writes none into its folder), multiplies ciphertexts and checks proofs.
#![deny(missing_docs)]

pub mod failpoint;
pub mod refusals;
pub mod replay;
pub mod round;
pub mod service;
