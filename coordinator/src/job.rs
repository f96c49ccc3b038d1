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
use fedchain_model_core::{num_parameters, ModelSpec};
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

/// The metrics a hospital may report on a model, and the range each must lie in.
pub const METRICS: [(&str, f64, f64); 3] = [
    ("accuracy", 0.0, 1.0),
    ("loss", 0.0, f64::INFINITY),
    ("rmse", 0.0, f64::INFINITY),
];

/// A hospital's report on one model, as its `ModelEvaluated` record holds it: held-out rows and
/// mean metrics by name.
pub type Evaluation = (u64, Vec<(String, f64)>);

/// Checks a hospital's report before it is recorded: between 1 and [`MAX_DECLARED_SAMPLES`]
/// rows, and metrics from [`METRICS`], each once, sorted by name, finite and in range.
pub fn validate_evaluation(rows: u64, metrics: &[(String, f64)]) -> Result<(), String> {
    if rows == 0 || rows > MAX_DECLARED_SAMPLES {
        return Err(format!(
            "rows must be between 1 and {MAX_DECLARED_SAMPLES}, got {rows}"
        ));
    }
    if metrics.is_empty() {
        return Err("an evaluation reports at least one metric".into());
    }
    for (i, (name, value)) in metrics.iter().enumerate() {
        let Some(&(_, low, high)) = METRICS.iter().find(|(n, _, _)| n == name) else {
            let known: Vec<&str> = METRICS.iter().map(|(n, _, _)| *n).collect();
            return Err(format!(
                "metric {name:?} is not one of {}",
                known.join(", ")
            ));
        };
        if !value.is_finite() || *value < low || *value > high {
            let range = if high.is_infinite() {
                format!("[{low}, ∞)")
            } else {
                format!("[{low}, {high}]")
            };
            return Err(format!("metric {name} = {value} is outside {range}"));
        }
        if i > 0 && metrics[i - 1].0.as_str() >= name.as_str() {
            return Err("metrics must be sorted by name, each name once".into());
        }
    }
    Ok(())
}

/// The consortium's figures for one model: each metric's mean over the hospitals' reports,
/// weighted by their held-out rows (rmse pooled as the root of the weighted mean square).
/// Reports are summed in the order given, so every party that orders them the same (by
/// hospital name) gets the same bits.
pub fn pooled_metrics<'a>(reports: impl IntoIterator<Item = &'a Evaluation>) -> Vec<(String, f64)> {
    let mut sums: std::collections::BTreeMap<&str, (f64, f64)> = Default::default();
    for (rows, metrics) in reports {
        for (name, value) in metrics {
            let v = if name == "rmse" {
                value * value
            } else {
                *value
            };
            let e = sums.entry(name.as_str()).or_default();
            e.0 += v * *rows as f64;
            e.1 += *rows as f64;
        }
    }
    sums.into_iter()
        .map(|(name, (s, w))| {
            let mean = s / w;
            let value = if name == "rmse" { mean.sqrt() } else { mean };
            (name.to_owned(), value)
        })
        .collect()
}

/// The reason a finished job's `JobFinished` record gives: the pooled figures of the final
/// model and the rows behind them. Auditors recompute it from the `ModelEvaluated` records.
pub fn final_summary<'a>(reports: impl IntoIterator<Item = &'a Evaluation> + Clone) -> String {
    let rows: u64 = reports.clone().into_iter().map(|(rows, _)| rows).sum();
    let metrics = pooled_metrics(reports);
    if metrics.is_empty() {
        return "no hospital evaluated the final model".to_string();
    }
    let parts: Vec<String> = metrics
        .iter()
        .map(|(name, value)| format!("{name}={value:.6}"))
        .collect();
    format!("final model on {rows} held-out rows: {}", parts.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pairs: &[(&str, f64)]) -> Vec<(String, f64)> {
        pairs.iter().map(|(n, v)| (n.to_string(), *v)).collect()
    }

    #[test]
    fn evaluations_are_checked_before_they_are_recorded() {
        assert!(validate_evaluation(10, &m(&[("accuracy", 0.9), ("loss", 0.2)])).is_ok());
        assert!(validate_evaluation(10, &m(&[("loss", 3.5), ("rmse", 1.2)])).is_ok());
        for (rows, metrics, why) in [
            (0, m(&[("loss", 0.2)]), "rows"),
            (MAX_DECLARED_SAMPLES + 1, m(&[("loss", 0.2)]), "rows"),
            (10, m(&[]), "at least one"),
            (10, m(&[("auc", 0.9)]), "not one of"),
            (10, m(&[("accuracy", 1.5)]), "outside"),
            (10, m(&[("loss", -0.1)]), "outside"),
            (10, m(&[("loss", f64::NAN)]), "outside"),
            (10, m(&[("loss", 0.2), ("accuracy", 0.9)]), "sorted"),
            (10, m(&[("loss", 0.2), ("loss", 0.3)]), "sorted"),
        ] {
            let err = validate_evaluation(rows, &metrics).unwrap_err();
            assert!(err.contains(why), "{metrics:?}: {err}");
        }
    }

    #[test]
    fn pooled_figures_weigh_each_report_by_its_rows() {
        let reports: Vec<Evaluation> = vec![
            (30, m(&[("accuracy", 1.0), ("rmse", 2.0)])),
            (10, m(&[("accuracy", 0.6), ("rmse", 4.0)])),
        ];
        let pooled = pooled_metrics(&reports);
        assert_eq!(pooled[0], ("accuracy".to_string(), 0.9));
        // sqrt((30 * 4 + 10 * 16) / 40) = sqrt(7)
        assert!((pooled[1].1 - 7f64.sqrt()).abs() < 1e-12);
        assert_eq!(
            final_summary(&reports),
            format!(
                "final model on 40 held-out rows: accuracy=0.900000 rmse={:.6}",
                7f64.sqrt()
            )
        );
        assert_eq!(
            final_summary(&Vec::<Evaluation>::new()),
            "no hospital evaluated the final model"
        );
    }
}
