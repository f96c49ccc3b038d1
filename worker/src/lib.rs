//! The fedchain hospital worker: local training, encryption and submission of updates.
//!
//! **Status: empty.** The end-to-end issue fills this crate: it dials the coordinator, trains the
//! global model on the hospital's own CSV with `fedchain-models` (CUDA when present), and encrypts,
//! signs and streams its update. Until then, `fedchain train` is the local training path.
//!
//! Architecture invariant: patient rows never leave this process; only encrypted updates, signed
//! digests and aggregate metrics do.
#![deny(missing_docs)]
