//! `fedchain bench dp`: what DP-SGD's per-row clipping and noise cost against ordinary training
//! of the same model on the same rows (issue 18's target: at most 3x a non-private epoch).

use std::time::Instant;

use anyhow::Result;
use fedchain_datasets::{Builtin, Standardizer};
use fedchain_models::dp::{train_dp, DpSgd};
use fedchain_models::{evaluate, train, Model, ModelKind, ModelSpec, TrainConfig};
use rand::SeedableRng;
use serde::Serialize;
use tch::Device;

#[derive(Debug, Serialize)]
pub struct DpBench {
    pub dataset: String,
    pub model: String,
    pub rows: usize,
    pub batch_size: usize,
    pub epochs: usize,
    pub max_grad_norm: f64,
    pub noise_multiplier: f64,
    /// Seconds per epoch of ordinary training (shuffled batches).
    pub plain_epoch_s: f64,
    /// Seconds per epoch of DP-SGD (Poisson samples of the same expected size, as many steps).
    pub dp_epoch_s: f64,
    /// `dp_epoch_s / plain_epoch_s`.
    pub ratio: f64,
    /// Accuracy on the training rows after each run (a sanity figure, not a privacy one).
    pub plain_accuracy: Option<f64>,
    pub dp_accuracy: Option<f64>,
}

pub fn run(
    dataset: Builtin,
    kind: Option<ModelKind>,
    epochs: usize,
    batch: usize,
) -> Result<DpBench> {
    let raw = dataset.load()?;
    let data = Standardizer::fit(&raw).apply(&raw)?;
    let kind = kind.unwrap_or(if dataset == Builtin::Digits {
        ModelKind::Cnn
    } else {
        ModelKind::Mlp
    });
    let spec = ModelSpec::preset(kind, data.n_features(), data.task())?;
    let config = TrainConfig {
        epochs,
        batch_size: batch,
        learning_rate: 2e-3,
        ..Default::default()
    };
    let dp = DpSgd {
        max_grad_norm: 1.0,
        noise_multiplier: 1.0,
    };
    // One epoch of each first, so that neither pays libtorch's first-call costs.
    let warm = TrainConfig {
        epochs: 1,
        ..config.clone()
    };
    let mut rng = rand_chacha::ChaCha20Rng::from_os_rng();
    train(
        &mut Model::new(&spec, Device::Cpu, 1)?,
        &data,
        &warm,
        |_| {},
    )?;
    train_dp(
        &mut Model::new(&spec, Device::Cpu, 1)?,
        &data,
        &warm,
        &dp,
        &mut rng,
        |_| {},
    )?;

    let mut plain = Model::new(&spec, Device::Cpu, 1)?;
    let t = Instant::now();
    train(&mut plain, &data, &config, |_| {})?;
    let plain_epoch_s = t.elapsed().as_secs_f64() / epochs as f64;
    let mut private = Model::new(&spec, Device::Cpu, 1)?;
    let t = Instant::now();
    train_dp(&mut private, &data, &config, &dp, &mut rng, |_| {})?;
    let dp_epoch_s = t.elapsed().as_secs_f64() / epochs as f64;
    Ok(DpBench {
        dataset: dataset.name().into(),
        model: kind.to_string(),
        rows: data.len(),
        batch_size: batch,
        epochs,
        max_grad_norm: dp.max_grad_norm,
        noise_multiplier: dp.noise_multiplier,
        plain_epoch_s,
        dp_epoch_s,
        ratio: dp_epoch_s / plain_epoch_s,
        plain_accuracy: evaluate(&plain, &data, None)?.accuracy,
        dp_accuracy: evaluate(&private, &data, None)?.accuracy,
    })
}
