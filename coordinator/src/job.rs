//! What a job is, independent of the network: validation of a researcher's [`JobSpec`], its
//! digest, the codec of each round, and the statistics round.
//!
//! Every job runs **round 0, the statistics round**, before its model rounds. Under label skew each
//! hospital's own feature statistics differ, and a shared model that sees differently scaled
//! inputs at every hospital plateaus well below the centralized baseline. So each hospital
//! encrypts the per-row moments of its training rows (`datasets::FeatureSums::moments`: means,
//! mean squares) weighted by its row count, exactly as it encrypts a model update, and the
//! consortium decrypts only the pooled moments, from which every hospital derives the same
//! scaling (`Standardizer::from_moments`). Round 0 goes through the same submission, aggregation,
//! threshold decryption, ledger and credit path as every other round.

use fedchain_crypto::keys::PublicKey;
use fedchain_crypto::quantize::Quantizer;
use fedchain_crypto::update::UpdateCodec;
use fedchain_crypto::CryptoError;
use fedchain_datasets::TaskKind;
use fedchain_ledger::{sha256, Hash};
use fedchain_models::{num_parameters, ModelSpec};
use fedchain_proto::limits;
use fedchain_proto::v1::{dataset_schema, JobSpec, Quantization};
use prost::Message;

/// Most fractional bits of the statistics round's quantizer.
pub const STATISTICS_FRAC_BITS: u32 = 24;
/// Clipping bound of the statistics round's quantizer: 2^27, so a mean square up to 1.3e8 (a
/// feature up to about 11,000 in absolute value) passes. A hospital whose moments exceed it
/// refuses to submit rather than send clipped statistics.
pub const STATISTICS_CLIP: f32 = 134_217_728.0;
/// Most training rows one hospital may declare (the packing slots grow with the total).
pub const MAX_DECLARED_SAMPLES: u64 = 1 << 30;
/// Most rounds a job may ask for.
pub const MAX_ROUNDS: u32 = 10_000;
/// Longest round deadline, in seconds (a day).
pub const MAX_DEADLINE_SECONDS: u32 = 86_400;

/// The statistics round's quantization for hospitals declaring `total_weight` rows in all.
///
/// The packed sums must stay below 2^61 (the packer's widest slot): with a bound of
/// 2^(27 + frac_bits) per value and weights summing to `total_weight`, that leaves
/// `34 - bits(total_weight)` fractional bits, capped at 24 (a resolution of 6e-8) and never
/// below 8. Every party computes the same value from the same total.
pub fn statistics_quantization(total_weight: u64) -> Quantization {
    let weight_bits = 64 - total_weight.leading_zeros();
    Quantization {
        frac_bits: 34u32
            .saturating_sub(weight_bits)
            .clamp(8, STATISTICS_FRAC_BITS),
        clip: STATISTICS_CLIP,
    }
}

/// A job spec that passed [`validate`], with what is derived from it.
#[derive(Debug, Clone)]
pub struct ValidJob {
    /// The spec as submitted.
    pub spec: JobSpec,
    /// Its canonical protobuf encoding (the blob the ledger keeps).
    pub bytes: Vec<u8>,
    /// SHA-256 of `bytes`, recorded in `JobSubmitted`.
    pub digest: Hash,
    /// The model architecture.
    pub model: ModelSpec,
    /// The task the schema declares.
    pub task: TaskKind,
}

/// Checks a researcher's spec; the error says which field is wrong and what is allowed.
pub fn validate(spec: &JobSpec) -> Result<ValidJob, String> {
    let schema = spec
        .schema
        .as_ref()
        .ok_or("the job has no dataset schema")?;
    if schema.target.is_empty() {
        return Err("the schema names no target column".into());
    }
    if schema.features.is_empty() {
        return Err("the schema must list its feature columns (in model input order)".into());
    }
    if schema.features.iter().any(|f| f == &schema.target) {
        return Err(format!(
            "the target column {:?} is also listed as a feature",
            schema.target
        ));
    }
    let task = task_of(schema.task.as_ref())?;
    let model_json = spec
        .model
        .as_ref()
        .map(|m| m.canonical_json.as_str())
        .ok_or("the job has no model spec")?;
    let model = ModelSpec::from_json(model_json).map_err(|e| format!("model spec: {e}"))?;
    if model.canonical_json() != model_json {
        return Err(
            "the model spec is not in canonical JSON form (serialize it with ModelSpec::canonical_json)"
                .into(),
        );
    }
    model
        .check_fits(schema.features.len(), task)
        .map_err(|e| format!("model spec does not fit the schema: {e}"))?;
    let file_bytes = num_parameters(&model) * 4 + 4096;
    if file_bytes > limits::MAX_INLINE_MODEL_BYTES {
        return Err(format!(
            "the model has {} parameters; this coordinator sends models inline, up to {} bytes",
            num_parameters(&model),
            limits::MAX_INLINE_MODEL_BYTES
        ));
    }
    if spec.rounds == 0 || spec.rounds > MAX_ROUNDS {
        return Err(format!(
            "rounds must be between 1 and {MAX_ROUNDS}, got {}",
            spec.rounds
        ));
    }
    if spec.local_epochs == 0 || spec.local_epochs > 1000 {
        return Err(format!(
            "local_epochs must be between 1 and 1000, got {}",
            spec.local_epochs
        ));
    }
    if !(spec.learning_rate.is_finite() && spec.learning_rate > 0.0 && spec.learning_rate < 10.0) {
        return Err(format!(
            "learning_rate must be a positive number below 10, got {}",
            spec.learning_rate
        ));
    }
    if spec.batch_size == 0 || spec.batch_size > 1 << 20 {
        return Err(format!(
            "batch_size must be between 1 and 2^20, got {}",
            spec.batch_size
        ));
    }
    if spec.min_participants < 2 {
        return Err(format!(
            "min_participants must be at least 2 (hospitals never decrypt a single hospital's \
             update), got {}",
            spec.min_participants
        ));
    }
    if spec.round_deadline_seconds == 0 || spec.round_deadline_seconds > MAX_DEADLINE_SECONDS {
        return Err(format!(
            "round_deadline_seconds must be between 1 and {MAX_DEADLINE_SECONDS}, got {}",
            spec.round_deadline_seconds
        ));
    }
    if spec.credit_budget == 0 {
        return Err("credit_budget must be positive: it pays the hospitals".into());
    }
    let q = spec
        .quantization
        .as_ref()
        .ok_or("the job has no quantization")?;
    Quantizer::new(q.frac_bits, q.clip).map_err(|e| format!("quantization: {e}"))?;
    let bytes = spec.encode_to_vec();
    Ok(ValidJob {
        spec: spec.clone(),
        digest: sha256(&bytes),
        bytes,
        model,
        task,
    })
}

/// The task of a schema's `task` field.
pub fn task_of(task: Option<&dataset_schema::Task>) -> Result<TaskKind, String> {
    match task {
        Some(dataset_schema::Task::Binary(_)) => Ok(TaskKind::Binary),
        Some(dataset_schema::Task::Regression(_)) => Ok(TaskKind::Regression),
        Some(dataset_schema::Task::Multiclass(m)) if m.classes >= 2 => Ok(TaskKind::Multiclass {
            classes: m.classes as usize,
        }),
        Some(dataset_schema::Task::Multiclass(m)) => Err(format!(
            "a multiclass task needs at least 2 classes, got {}",
            m.classes
        )),
        None => Err("the schema has no task (binary, multiclass or regression)".into()),
    }
}

/// Length of the statistics round's vector for `features` features.
pub fn statistics_len(features: usize, task: TaskKind) -> usize {
    2 * features + if task == TaskKind::Regression { 2 } else { 0 }
}

/// The codec of a round: every party builds it from the same three inputs.
pub fn codec(
    pk: &PublicKey,
    quantization: &Quantization,
    total_weight: u64,
) -> Result<UpdateCodec, CryptoError> {
    let quantizer = Quantizer::new(quantization.frac_bits, quantization.clip)?;
    UpdateCodec::new(pk, quantizer, total_weight)
}
