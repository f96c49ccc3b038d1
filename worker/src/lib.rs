//! The fedchain hospital worker: local training, encryption and submission of updates.
//!
//! The ML half: prepare the hospital's own rows ([`LocalData`]), train the global model on them and
//! return the update ([`local_round`]), and score a global model on the local test split
//! ([`evaluate_global`]). The process half ([`node`]): dial the coordinator over mutual TLS, follow
//! its tasks, quantize, pack, encrypt, sign and stream updates, check aggregates before decrypting,
//! cosign checkpoints.
//!
//! Architecture invariant: patient rows never leave this process; only encrypted updates, signed
//! digests and aggregate metrics do. Nothing here returns rows, only parameters and metrics.
#![deny(missing_docs)]

pub mod commitments;
pub mod node;
pub mod privacy_log;
pub mod watchdog;

pub use node::share_cost_us;

use fedchain_datasets::{train_test_split, DataError, Dataset, Standardizer};
use fedchain_models::{evaluate, train, Metrics, Model, ModelError, ModelSpec, TrainConfig};
use tch::Device;

/// What can go wrong in a hospital's round.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The hospital's data (boxed: data errors carry file, line and column text).
    #[error(transparent)]
    Data(Box<DataError>),
    /// The model or training.
    #[error(transparent)]
    Model(#[from] ModelError),
}

impl From<DataError> for WorkerError {
    fn from(e: DataError) -> Self {
        WorkerError::Data(Box::new(e))
    }
}

/// Result alias for this crate.
pub type Result<T, E = WorkerError> = std::result::Result<T, E>;

/// A hospital's own rows, split and standardized locally.
///
/// Standardization statistics are fitted on this hospital's training rows only: they are derived
/// from patient data, so they stay here like the rows themselves.
pub struct LocalData {
    /// Standardized training rows.
    pub train: Dataset,
    /// Standardized test rows (never trained on; for local evaluation of global models).
    pub test: Dataset,
    /// The fitted scaling.
    pub scaler: Standardizer,
}

impl LocalData {
    /// Splits `rows` (seeded) and standardizes both parts with statistics of the training part.
    pub fn prepare(rows: &Dataset, test_fraction: f64, seed: u64) -> Result<LocalData> {
        let (train_raw, test_raw) = train_test_split(rows, test_fraction, seed)?;
        let scaler = Standardizer::fit(&train_raw);
        Ok(LocalData {
            train: scaler.apply(&train_raw)?,
            test: scaler.apply(&test_raw)?,
            scaler,
        })
    }

    /// Splits `rows` (seeded) and standardizes both parts with consortium-wide statistics.
    ///
    /// Under label skew each hospital's own statistics differ, and a shared model would see
    /// differently scaled inputs at every hospital; federated training then plateaus below the
    /// centralized baseline. The consortium's statistics are the mean and variance of all
    /// hospitals' training rows, which a job computes from encrypted per-hospital sums (`n`,
    /// `sum x`, `sum x^2`), revealing only the totals.
    pub fn prepare_with(
        rows: &Dataset,
        test_fraction: f64,
        seed: u64,
        scaler: Standardizer,
    ) -> Result<LocalData> {
        let (train_raw, test_raw) = train_test_split(rows, test_fraction, seed)?;
        Ok(LocalData {
            train: scaler.apply(&train_raw)?,
            test: scaler.apply(&test_raw)?,
            scaler,
        })
    }

    /// The FedAvg weight this hospital declares: its number of training rows.
    pub fn samples(&self) -> u64 {
        self.train.len() as u64
    }
}

/// The result of local training in one round.
#[derive(Debug, Clone)]
pub struct LocalUpdate {
    /// `trained - global`, in the flat parameter order.
    pub delta: Vec<f32>,
    /// Training rows used (the FedAvg weight).
    pub samples: u64,
    /// Mean training loss of the last local epoch.
    pub train_loss: f64,
}

/// Trains the global model on the hospital's rows and returns the update. `module`: the job's
/// TorchScript module for a `torchscript` model, empty otherwise.
pub fn local_round(
    spec: &ModelSpec,
    module: &[u8],
    global: &[f32],
    data: &LocalData,
    config: &TrainConfig,
    device: Device,
) -> Result<LocalUpdate> {
    let mut model = Model::for_job(spec, module, global, device)?;
    let reports = train(&mut model, &data.train, config, |_| {})?;
    let trained = model.params()?;
    let delta = trained.iter().zip(global).map(|(t, g)| t - g).collect();
    Ok(LocalUpdate {
        delta,
        samples: data.samples(),
        train_loss: reports.last().map(|r| r.loss).unwrap_or(f64::NAN),
    })
}

/// [`local_round`] of job `job` (its module, if any, is the spec's) with DP-SGD (its `privacy`): per-row clipping and Gaussian noise drawn
/// from `rng`, which must be secret. Refuses to return an update whose training is not the
/// mechanism the ledger accounts for this hospital (`fedchain_protocol::privacy::Mechanism`):
/// the privacy spent would not be what is recorded.
pub fn local_round_dp(
    job: &fedchain_proto::v1::JobSpec,
    spec: &ModelSpec,
    global: &[f32],
    data: &LocalData,
    config: &TrainConfig,
    device: Device,
    rng: &mut impl rand::CryptoRng,
) -> Result<LocalUpdate> {
    let privacy = fedchain_protocol::privacy::JobPrivacy::of(job).ok_or_else(|| {
        WorkerError::Model(ModelError::InvalidArgument(
            "the job asks for no differential privacy".into(),
        ))
    })?;
    let dp = fedchain_models::dp::DpSgd {
        max_grad_norm: privacy.max_grad_norm,
        noise_multiplier: privacy
            .noise_for(job, data.samples())
            .map_err(|e| ModelError::InvalidArgument(format!("the job's noise: {e}")))?,
    };
    let mut model = Model::for_job(spec, &job.torchscript_module, global, device)?;
    let run = fedchain_models::dp::train_dp(&mut model, &data.train, config, &dp, rng, |_| {})?;
    let expected = fedchain_protocol::privacy::Mechanism::of(job, data.samples());
    if run.steps != expected.steps || run.sampling_rate != expected.sampling_rate {
        return Err(WorkerError::Model(ModelError::InvalidArgument(format!(
            "DP-SGD ran {} steps at sampling rate {}, but the job accounts {} at {}",
            run.steps, run.sampling_rate, expected.steps, expected.sampling_rate
        ))));
    }
    let trained = model.params()?;
    let delta = trained.iter().zip(global).map(|(t, g)| t - g).collect();
    Ok(LocalUpdate {
        delta,
        samples: data.samples(),
        train_loss: run.epochs.last().map(|r| r.loss).unwrap_or(f64::NAN),
    })
}

/// A round of job `job` with distributed noise (its `privacy.distributed`): one full-batch
/// gradient step's update, `-learning_rate` times the sum of every training row's gradient
/// clipped to `max_grad_norm`, with no noise yet: the round's codec adds this hospital's share
/// of the noise to the integers it becomes, and the coordinator divides the aggregate by the
/// rows summed. `delta` holds that update; `samples` the rows it sums.
pub fn local_round_distributed(
    job: &fedchain_proto::v1::JobSpec,
    spec: &ModelSpec,
    global: &[f32],
    data: &LocalData,
    device: Device,
) -> Result<LocalUpdate> {
    let privacy = fedchain_protocol::privacy::JobPrivacy::of(job)
        .filter(|p| p.distributed)
        .ok_or_else(|| {
            WorkerError::Model(ModelError::InvalidArgument(
                "the job asks for no distributed noise".into(),
            ))
        })?;
    let model = Model::for_job(spec, &job.torchscript_module, global, device)?;
    let sum =
        fedchain_models::dp::clipped_gradient_sum_all(&model, &data.train, privacy.max_grad_norm)?;
    let step = -(job.learning_rate as f32);
    Ok(LocalUpdate {
        delta: sum.gradient.iter().map(|g| step * g).collect(),
        samples: sum.rows,
        train_loss: sum.loss,
    })
}

/// Scores global parameters on the hospital's test rows (only these metrics leave the hospital).
pub fn evaluate_global(
    spec: &ModelSpec,
    module: &[u8],
    params: &[f32],
    data: &LocalData,
    device: Device,
) -> Result<Metrics> {
    let model = Model::for_job(spec, module, params, device)?;
    Ok(evaluate(&model, &data.test, Some(&data.scaler))?)
}

/// A hospital's report on a model, as it signs it and the ledger records it: its held-out rows and
/// its mean metrics, finite ones only, sorted by name ([`fedchain_protocol::validate_evaluation`]
/// checks the same shape, and [`fedchain_protocol::pooled_metrics`] pools these).
pub fn report(m: &Metrics) -> fedchain_protocol::Evaluation {
    let mut metrics: Vec<(String, f64)> =
        [("accuracy", m.accuracy), ("loss", m.loss), ("rmse", m.rmse)]
            .into_iter()
            .filter_map(|(name, v)| v.filter(|v| v.is_finite()).map(|v| (name.to_string(), v)))
            .collect();
    metrics.sort_by(|a, b| a.0.cmp(&b.0));
    (m.rows as u64, metrics)
}
