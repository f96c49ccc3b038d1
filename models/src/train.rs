use crate::model::{features_tensor, loss, targets_tensor, torch_error, Model};
use fedchain_datasets::{Dataset, Standardizer};
use fedchain_model_core::metrics::{score, Metrics};
use fedchain_model_core::{ModelError, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tch::nn::OptimizerConfig;
use tch::{Kind, Tensor};

/// The optimizer of local training.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "snake_case")]
pub enum Optimizer {
    /// Adam with the usual betas (0.9, 0.999).
    Adam,
    /// Stochastic gradient descent with momentum.
    Sgd {
        /// Momentum (0 for plain SGD).
        momentum: f64,
    },
}

/// How to train: epochs, batches, step size, and the seed that fixes batch order and dropout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// Passes over the data.
    pub epochs: usize,
    /// Rows per optimizer step.
    pub batch_size: usize,
    /// Step size.
    pub learning_rate: f64,
    /// L2 penalty (decoupled from the loss, applied by the optimizer).
    pub weight_decay: f64,
    /// The optimizer.
    pub optimizer: Optimizer,
    /// Seed for the batch order (ChaCha8) and libtorch's dropout masks.
    pub seed: u64,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            epochs: 30,
            batch_size: 32,
            learning_rate: 1e-3,
            weight_decay: 0.0,
            optimizer: Optimizer::Adam,
            seed: 0,
        }
    }
}

impl TrainConfig {
    /// Checks every field is usable.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(ModelError::InvalidArgument(m));
        if self.epochs == 0 {
            return bad("epochs must be at least 1".into());
        }
        if self.batch_size == 0 {
            return bad("batch size must be at least 1".into());
        }
        if !(self.learning_rate.is_finite() && self.learning_rate > 0.0) {
            return bad(format!(
                "learning rate must be a positive number, got {}",
                self.learning_rate
            ));
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return bad(format!(
                "weight decay must be zero or positive, got {}",
                self.weight_decay
            ));
        }
        if let Optimizer::Sgd { momentum } = self.optimizer {
            if !(0.0..1.0).contains(&momentum) {
                return bad(format!("momentum must be in [0, 1), got {momentum}"));
            }
        }
        Ok(())
    }
}

/// What one epoch of training did.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EpochReport {
    /// 1-based epoch.
    pub epoch: usize,
    /// Total epochs.
    pub epochs: usize,
    /// Mean training loss over the epoch's rows.
    pub loss: f64,
}

/// Trains `model` on `data` in place, calling `on_epoch` after every epoch (for progress bars).
///
/// The batch order comes from ChaCha8 seeded with `config.seed`, so on the CPU a run is
/// reproducible: same spec, same initial parameters, same data and config give the same model.
pub fn train(
    model: &mut Model,
    data: &Dataset,
    config: &TrainConfig,
    on_epoch: impl FnMut(&EpochReport),
) -> Result<Vec<EpochReport>> {
    // tch panics where libtorch throws (a researcher's module can make it throw): an error here,
    // not a dead worker.
    contain(|| train_unguarded(model, data, config, on_epoch))
}

/// Runs `f`, turning a panic (tch's way of reporting a libtorch exception) into an error.
fn contain<T>(f: impl FnOnce() -> Result<T>) -> Result<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|panic| {
        let what = panic
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| panic.downcast_ref::<&str>().copied())
            .unwrap_or("a panic");
        // tch's panic quotes libtorch's message, then its C++ stack: keep the message.
        let what = what.split_once("Torch(\"").map_or(what, |(_, m)| m);
        let what = what
            .split("\\n")
            .next()
            .unwrap_or(what)
            .trim_end_matches("\")");
        Err(ModelError::Torch(format!("the model failed: {what}")))
    })
}

fn train_unguarded(
    model: &mut Model,
    data: &Dataset,
    config: &TrainConfig,
    mut on_epoch: impl FnMut(&EpochReport),
) -> Result<Vec<EpochReport>> {
    config.validate()?;
    model.spec().check_fits(data.n_features(), data.task())?;
    if data.is_empty() {
        return Err(ModelError::InvalidArgument(
            "cannot train on an empty dataset".into(),
        ));
    }
    let device = model.device();
    let xs = features_tensor(data, device);
    let ys = targets_tensor(data, device);
    let mut opt = optimizer(model, config)?;
    // Dropout masks come from libtorch's global generator; seed it so runs repeat.
    tch::manual_seed(config.seed as i64);
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
    let mut order: Vec<i64> = (0..data.len() as i64).collect();
    let mut reports = Vec::with_capacity(config.epochs);
    for epoch in 1..=config.epochs {
        order.shuffle(&mut rng);
        let mut total = 0.0;
        for batch in order.chunks(config.batch_size) {
            let idx = Tensor::from_slice(batch).to_device(device);
            let out = model.forward_t(&xs.index_select(0, &idx), true)?;
            let l = loss(data.task(), &out, &ys.index_select(0, &idx));
            opt.backward_step(&l);
            total += l.double_value(&[]) * batch.len() as f64;
        }
        let report = EpochReport {
            epoch,
            epochs: config.epochs,
            loss: total / data.len() as f64,
        };
        if !report.loss.is_finite() {
            return Err(ModelError::Diverged {
                epoch,
                loss: report.loss,
            });
        }
        on_epoch(&report);
        reports.push(report);
    }
    Ok(reports)
}

/// The optimizer `config` names, over `model`'s parameters.
pub(crate) fn optimizer(model: &Model, config: &TrainConfig) -> Result<tch::nn::Optimizer> {
    match config.optimizer {
        Optimizer::Adam => tch::nn::Adam {
            wd: config.weight_decay,
            ..Default::default()
        }
        .build(model.var_store(), config.learning_rate),
        Optimizer::Sgd { momentum } => tch::nn::Sgd {
            momentum,
            wd: config.weight_decay,
            ..Default::default()
        }
        .build(model.var_store(), config.learning_rate),
    }
    .map_err(torch_error)
}

/// Scores `model` on `data`: the task's loss plus accuracy, or R^2 and RMSE.
///
/// For regression, pass the [`Standardizer`] whose target scaling `data` carries, so that RMSE is
/// reported in the target's original units (R^2 does not depend on scale).
pub fn evaluate(model: &Model, data: &Dataset, scaling: Option<&Standardizer>) -> Result<Metrics> {
    contain(|| evaluate_unguarded(model, data, scaling))
}

fn evaluate_unguarded(
    model: &Model,
    data: &Dataset,
    scaling: Option<&Standardizer>,
) -> Result<Metrics> {
    let mut predictions = model.predict(data)?;
    let device = model.device();
    let l = tch::no_grad(|| -> Result<f64> {
        let out = model.forward_t(&features_tensor(data, device), false)?;
        Ok(loss(data.task(), &out, &targets_tensor(data, device))
            .to_kind(Kind::Double)
            .double_value(&[]))
    })?;
    let mut targets = data.targets().to_vec();
    if let Some(s) = scaling {
        if data.task().classes().is_none() {
            for v in predictions.iter_mut().chain(targets.iter_mut()) {
                *v = s.unscale_target(*v);
            }
        }
    }
    let mut m = score(data.task(), &predictions, &targets);
    m.loss = Some(l);
    Ok(m)
}
