//! The rules every party recomputes, once: pure functions, no I/O.
//!
//! The coordinator applies these rules, a hospital's worker checks the tasks it is given against
//! them, and the auditor's replay re-derives every round with them. Each rule is defined here
//! once and called, never copied, so the three cannot drift apart.
//!
//! - [`job`]: validation of a researcher's `JobSpec`, with typed errors naming the field, and its
//!   digest (SHA-256 of the protobuf encoding).
//! - [`statistics`]: round 0, the statistics round, and its quantization.
//! - [`plan`]: a round's [`RoundPlan`] (what it aggregates, its length and quantization, the
//!   codec, the vector its average applies to, the training seed) and the model round 1 starts
//!   from.
//! - [`accountant`]: the privacy accountant (RDP of the sampled Gaussian mechanism, composed and
//!   converted to `(epsilon, delta)`), which agrees with Google's `dp-accounting`.
//! - [`privacy`]: a job's differential privacy: each hospital's local DP-SGD as a mechanism,
//!   what its rounds spend, and whether the next round fits the job's budget.
//! - [`decryption`]: what a decryption share's proof is bound to, who decrypts first, and how
//!   the ciphertexts are spread over the decryptors.
//! - [`evaluation`]: the checks a hospital's report on a model passes, and the pooled figures a
//!   researcher sees and a finished job's summary.
//!
//! Architecture invariant: no I/O, no clock, no randomness, no network, no libtorch. Knows nothing of
//! the coordinator's state, the worker's data or the ledger's storage; it reads protocol messages
//! (`fedchain-proto`) and produces values.
#![deny(missing_docs)]

pub mod accountant;
pub mod decryption;
pub mod evaluation;
pub mod job;
pub mod plan;
pub mod privacy;
pub mod statistics;

pub use decryption::{decryption_context, first_decryptors, spread, spread_decryptors, Ranges};
pub use evaluation::{
    final_summary, pooled_metrics, validate_evaluation, Evaluation, EvaluationError, METRICS,
};
pub use job::{validate, JobError, JobField, ValidJob, MAX_DECLARED_SAMPLES, MAX_DECLINES};
pub use plan::{codec, starting_model, training_seed, Enrollment, RoundKind, RoundPlan};
pub use statistics::{statistics_len, statistics_quantization};
