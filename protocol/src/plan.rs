//! The plan of a round: what every party derives from the job, the round number and the
//! hospitals' declared rows, so that the coordinator opening a round, a hospital checking the task
//! it is given and the auditor re-deriving the round agree by calling one function.
//!
//! Round 0 is the statistics round ([`crate::statistics`]): its vector is the feature moments,
//! quantized for the total declared rows, and FedAvg applies its average to zeros, so its result is
//! the pooled moments. Rounds 1.. train the model: the vector is the parameters, quantized as the
//! job says, and the first of them starts from [`starting_model`].

use fedchain_crypto::keys::PublicKey;
use fedchain_crypto::quantize::{Quantizer, Rounding};
use fedchain_crypto::update::UpdateCodec;
use fedchain_crypto::CryptoError;
use fedchain_model_core::{init_params, num_parameters};
use fedchain_proto::v1::Quantization;

use crate::job::ValidJob;
use crate::privacy::{DistributedNoise, JobPrivacy};
use crate::statistics::{statistics_len, statistics_quantization};

/// What a round aggregates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoundKind {
    /// Round 0: the hospitals' feature moments.
    Statistics,
    /// Rounds 1..: model updates.
    Model,
}

/// Everything about a round that follows from the job, its number and the declared rows.
#[derive(Debug, Clone, PartialEq)]
pub struct RoundPlan {
    /// The round number.
    pub round: u64,
    /// What it aggregates.
    pub kind: RoundKind,
    /// Values in each hospital's vector.
    pub len: usize,
    /// How they are quantized.
    pub quantization: Quantization,
    /// The weight the codec is built for: every enrolled hospital's declared training rows.
    pub total_weight: u64,
    /// The most updates the round sums: the enrolled hospitals (sizes the scaled layout's slots).
    pub contributors: u64,
    /// The seed of each hospital's local training in this round (model rounds).
    pub training_seed: u64,
    /// A model round of a job with distributed noise: how updates are encoded and noised (or
    /// why the job's noise cannot be derived); the codec follows it, not `quantization`.
    pub distributed: Option<Result<DistributedNoise, String>>,
}

impl RoundPlan {
    /// The plan of round `round` of `job`, with the hospitals `enrolled`.
    pub fn new(job: &ValidJob, round: u64, enrolled: Enrollment) -> RoundPlan {
        let (kind, len, quantization) = if round == 0 {
            let features = job.spec.schema.as_ref().map_or(0, |s| s.features.len());
            (
                RoundKind::Statistics,
                statistics_len(features, job.task),
                statistics_quantization(enrolled.rows),
            )
        } else {
            (
                RoundKind::Model,
                num_parameters(&job.model),
                job.spec.quantization.unwrap_or_default(),
            )
        };
        let distributed = JobPrivacy::of(&job.spec)
            .filter(|p| p.distributed && kind == RoundKind::Model)
            .map(|p| DistributedNoise::of(&p, &job.spec, len).map_err(|e| e.to_string()));
        RoundPlan {
            round,
            kind,
            len,
            quantization,
            total_weight: enrolled.rows,
            contributors: enrolled.hospitals,
            training_seed: training_seed(job.spec.seed, round),
            distributed,
        }
    }

    /// The round's codec (quantizer, packing and slot checks) for the consortium key `pk`.
    pub fn codec(&self, pk: &PublicKey) -> Result<UpdateCodec, CryptoError> {
        if let Some(noise) = &self.distributed {
            let n = noise.clone().map_err(|e| {
                CryptoError::InvalidParameter(format!("the job's distributed noise: {e}"))
            })?;
            return UpdateCodec::distributed(
                pk,
                n.scale,
                n.row_bound,
                n.share_sd,
                self.total_weight,
                self.contributors,
            );
        }
        codec(
            pk,
            &self.quantization,
            Enrollment {
                rows: self.total_weight,
                hospitals: self.contributors,
            },
        )
    }

    /// How a hospital rounds its vector: seeded stochastic rounding with `quant_bits` (few
    /// levels, where nearest rounding would systematically lose small updates), nearest with the
    /// fixed-point layout (as every earlier round did).
    pub fn rounding(&self, seed: u64) -> Rounding {
        if self.quantization.quant_bits > 0 {
            Rounding::Stochastic { seed }
        } else {
            Rounding::Nearest
        }
    }

    /// The vector the round's average is applied to: zeros for the statistics round (so the
    /// result is the pooled moments), the current global model otherwise.
    pub fn base(&self, global: &[f32]) -> Vec<f32> {
        match self.kind {
            RoundKind::Statistics => vec![0.0; self.len],
            RoundKind::Model => global.to_vec(),
        }
    }
}

/// What the hospitals enrolled in a job declared, which sizes every round's codec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Enrollment {
    /// Their declared training rows, summed: the total weight `W`.
    pub rows: u64,
    /// How many they are: the most updates one round sums.
    pub hospitals: u64,
}

impl Enrollment {
    /// The enrollment of hospitals declaring these rows, one item per hospital.
    pub fn of(declared: impl IntoIterator<Item = u64>) -> Enrollment {
        declared
            .into_iter()
            .fold(Enrollment::default(), |e, rows| Enrollment {
                rows: e.rows.saturating_add(rows),
                hospitals: e.hospitals + 1,
            })
    }
}

/// The codec of a round: every party builds it from the same inputs. `quant_bits` selects the
/// scaled layout (fedchain-crypto's update module), otherwise `frac_bits` fixed point with the
/// weight in the slot.
pub fn codec(
    pk: &PublicKey,
    quantization: &Quantization,
    enrolled: Enrollment,
) -> Result<UpdateCodec, CryptoError> {
    if quantization.quant_bits > 0 {
        return UpdateCodec::scaled(
            pk,
            quantization.quant_bits,
            quantization.clip,
            enrolled.rows,
            enrolled.hospitals,
        );
    }
    let quantizer = Quantizer::new(quantization.frac_bits, quantization.clip)?;
    UpdateCodec::new(pk, quantizer, enrolled.rows)
}

/// The global model the first model round starts from: the architecture's seeded initialization.
pub fn starting_model(job: &ValidJob) -> Vec<f32> {
    init_params(&job.model, job.spec.seed)
}

/// The seed of a hospital's local training in `round` (batch order): the job's seed plus the round,
/// so every round shuffles differently and every party can say which seed was used.
pub fn training_seed(job_seed: u64, round: u64) -> u64 {
    job_seed.wrapping_add(round)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::validate;
    use fedchain_model_core::ModelSpec;
    use fedchain_proto::v1 as pb;

    fn job(seed: u64) -> ValidJob {
        let model = ModelSpec::LogisticRegression {
            inputs: 3,
            outputs: 1,
        };
        validate(&pb::JobSpec {
            torchscript_module: Vec::new(),
            privacy: None,
            spread_decryption: true,
            schema: Some(pb::DatasetSchema {
                features: vec!["a".into(), "b".into(), "c".into()],
                target: "y".into(),
                task: Some(pb::dataset_schema::Task::Binary(
                    pb::dataset_schema::Binary {},
                )),
                image: None,
            }),
            model: Some(pb::ModelSpec {
                canonical_json: model.canonical_json(),
            }),
            rounds: 2,
            local_epochs: 1,
            learning_rate: 0.1,
            batch_size: 8,
            min_participants: 2,
            round_deadline_seconds: 60,
            credit_budget: 100,
            seed,
            quantization: Some(Quantization {
                frac_bits: 16,
                clip: 1.0,
                quant_bits: 0,
            }),
        })
        .unwrap()
    }

    #[test]
    fn round_zero_pools_moments_and_later_rounds_train_the_model() {
        let j = job(7);
        let stats = RoundPlan::new(&j, 0, enrolled());
        assert_eq!(stats.kind, RoundKind::Statistics);
        assert_eq!(stats.len, 6);
        assert_eq!(stats.quantization, statistics_quantization(300));
        assert_eq!(stats.base(&[1.0; 4]), vec![0.0; 6]);
        let model = RoundPlan::new(&j, 1, enrolled());
        assert_eq!(model.kind, RoundKind::Model);
        assert_eq!(model.len, 4);
        assert_eq!(model.quantization.frac_bits, 16);
        assert_eq!(model.training_seed, 8);
        assert_eq!(model.base(&[1.0; 4]), vec![1.0; 4]);
        assert_eq!(starting_model(&j).len(), 4);
        assert_eq!(starting_model(&j), starting_model(&job(7)));
        assert_ne!(starting_model(&j), starting_model(&job(8)));
        // The seed wraps rather than overflowing at the end of u64.
        assert_eq!(
            RoundPlan::new(&job(u64::MAX), 2, enrolled()).training_seed,
            1
        );
        assert_eq!(model.rounding(5), Rounding::Nearest);
    }

    fn enrolled() -> Enrollment {
        Enrollment::of([100, 150, 50])
    }

    #[test]
    fn enrollment_counts_rows_and_hospitals() {
        assert_eq!(
            enrolled(),
            Enrollment {
                rows: 300,
                hospitals: 3
            }
        );
        assert_eq!(Enrollment::of([]), Enrollment::default());
    }
}
