//! DP-SGD (Abadi et al., CCS 2016) for the built-in networks and TorchScript modules: each step
//! takes a Poisson sample of the rows, clips every row's gradient to `max_grad_norm`, adds Gaussian noise of standard
//! deviation `noise_multiplier * max_grad_norm` to their sum and divides by the expected sample
//! size. The privacy it spends is accounted by `fedchain_protocol::accountant` from the sampling
//! rate, the noise multiplier and the steps.
//!
//! Per-row gradient norms come without a backward pass per row (the "ghost norm" of Goodfellow,
//! arXiv:1510.01799, and Opacus): one backward pass gives the loss's gradient with respect to
//! every layer's output, row by row, and a row's weight gradient is the product of that and the
//! layer's input (an outer product for a linear layer, a product with the unfolded input for a
//! convolution). A second backward pass of the rows' losses weighted by their clipping factors
//! then gives the sum of the clipped gradients directly. So a step costs one forward and two
//! backward passes plus the norms, not a pass per row. A TorchScript module's layers are its own,
//! so for it each row gets its own backward pass: exact, and slower by about the sample size.
//!
//! The noise is drawn from the caller's cryptographically secure generator, never from the job's
//! public seed: anyone who knew it could subtract it. Known limit: it is a floating-point Gaussian
//! (f64 rounded to f32), which leaks through its low bits in theory (Mironov, CCS 2012); the
//! snapping mechanism is not applied.

use rand::{CryptoRng, Rng};
use rand_distr::StandardNormal;
use tch::{Kind, Tensor};

use crate::model::{
    features_tensor, flat_on_host, per_row_loss, targets_tensor, torch_error, Model, Traced,
    CONV_PADDING,
};
use crate::train::{EpochReport, TrainConfig};
use fedchain_datasets::{Dataset, TaskKind};
use fedchain_model_core::{ModelError, Result};

/// DP-SGD's parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DpSgd {
    /// Every row's gradient is scaled down to at most this L2 norm.
    pub max_grad_norm: f64,
    /// Noise standard deviation over `max_grad_norm`.
    pub noise_multiplier: f64,
}

impl DpSgd {
    /// Checks both are usable.
    pub fn validate(&self) -> Result<()> {
        if !(self.max_grad_norm.is_finite() && self.max_grad_norm > 0.0) {
            return Err(ModelError::InvalidArgument(format!(
                "max_grad_norm must be a positive number, got {}",
                self.max_grad_norm
            )));
        }
        if !(self.noise_multiplier.is_finite() && self.noise_multiplier >= 0.0) {
            return Err(ModelError::InvalidArgument(format!(
                "the noise multiplier must be zero or positive, got {}",
                self.noise_multiplier
            )));
        }
        Ok(())
    }
}

/// What a DP-SGD run did: what the accountant needs, and the epochs' losses.
#[derive(Debug, Clone, PartialEq)]
pub struct DpRun {
    /// Probability that a row is in a step's sample: `batch_size / rows`.
    pub sampling_rate: f64,
    /// Optimizer steps taken.
    pub steps: u64,
    /// Rows whose gradient was scaled down, over all steps.
    pub clipped_rows: u64,
    /// Rows sampled, over all steps.
    pub sampled_rows: u64,
    /// One report per epoch (mean per-row loss of the rows sampled in it).
    pub epochs: Vec<EpochReport>,
}

/// The L2 norm of each row's gradient of its own loss, `[b]`, for a built-in network.
///
/// Leaves the graph of `loss_rows` in place (a second backward pass may follow).
fn row_gradient_norms(traced: &[Traced], loss_rows: &Tensor) -> Result<Tensor> {
    let outputs: Vec<&Tensor> = traced
        .iter()
        .map(|t| match t {
            Traced::Linear { output, .. } | Traced::Conv { output, .. } => output,
        })
        .collect();
    // The rows are independent, so the gradient of the summed loss with respect to a layer's
    // output is, row by row, the gradient of that row's loss.
    let grads = Tensor::f_run_backward(&[loss_rows.sum(Kind::Float)], &outputs, true, false)
        .map_err(torch_error)?;
    let mut sq = loss_rows.zeros_like().detach();
    for (t, g) in traced.iter().zip(&grads) {
        sq += match t {
            Traced::Linear { input, .. } => {
                // Row i's weight gradient is g_i x_i^T, whose norm is |g_i| |x_i|; its bias
                // gradient is g_i.
                let g2 = g.square().sum_dim_intlist(1, false, Kind::Float);
                let x2 = input.square().sum_dim_intlist(1, false, Kind::Float);
                &g2 * x2 + &g2
            }
            Traced::Conv { input, .. } => {
                let k = [3, 3];
                // [b, c*9, positions]: the input patch under each output position.
                let patches = input.im2col(k, [1, 1], [CONV_PADDING, CONV_PADDING], [1, 1]);
                let g = g.flatten(2, -1);
                let weight = g.bmm(&patches.transpose(1, 2));
                weight
                    .square()
                    .sum_dim_intlist([1, 2].as_slice(), false, Kind::Float)
                    + g.sum_dim_intlist(2, false, Kind::Float)
                        .square()
                        .sum_dim_intlist(1, false, Kind::Float)
            }
        };
    }
    Ok(sq.sqrt())
}

/// One DP-SGD gradient on rows `xs`, `ys`: leaves in the model's gradients the sum of the rows'
/// gradients, each clipped to `max_grad_norm`, and returns the rows' unclipped gradient norms and
/// their mean loss. Noise and scaling are the caller's ([`add_noise`]).
pub(crate) fn clipped_gradient_sum(
    model: &Model,
    task: TaskKind,
    xs: &Tensor,
    ys: &Tensor,
    max_grad_norm: f64,
) -> Result<(Tensor, f64)> {
    let Some((out, traced)) = model.forward_traced(xs, true) else {
        return clipped_gradient_sum_row_by_row(model, task, xs, ys, max_grad_norm);
    };
    let loss_rows = per_row_loss(task, &out, ys);
    let norms = row_gradient_norms(&traced, &loss_rows)?;
    // Opacus's factor: a row within the bound keeps its gradient (up to 1e-6).
    let factors = (max_grad_norm / (&norms + 1e-6)).clamp_max(1.0).detach();
    zero_gradients(model);
    (&loss_rows * &factors)
        .sum(Kind::Float)
        .f_backward()
        .map_err(torch_error)?;
    Ok((norms, loss_rows.mean(Kind::Float).double_value(&[])))
}

/// [`clipped_gradient_sum`] for a TorchScript module, whose layers are its own: a backward pass
/// per row, each row's gradient clipped and added up. Exact, and as many passes as rows.
fn clipped_gradient_sum_row_by_row(
    model: &Model,
    task: TaskKind,
    xs: &Tensor,
    ys: &Tensor,
    max_grad_norm: f64,
) -> Result<(Tensor, f64)> {
    let rows = xs.size().first().copied().unwrap_or(0);
    let mut sum: Vec<Tensor> = model
        .variables()
        .iter()
        .map(|v| v.zeros_like().detach())
        .collect();
    let (mut norms, mut total) = (Vec::with_capacity(rows as usize), 0.0);
    for i in 0..rows {
        zero_gradients(model);
        let out = model.forward_t(&xs.narrow(0, i, 1), true)?;
        let l = crate::model::loss(task, &out, &ys.narrow(0, i, 1));
        l.f_backward().map_err(torch_error)?;
        total += l.double_value(&[]);
        let grads: Vec<Tensor> = model.variables().iter().map(|v| v.grad()).collect();
        let norm = grads
            .iter()
            .filter(|g| g.defined())
            .map(|g| g.square().sum(Kind::Double).double_value(&[]))
            .sum::<f64>()
            .sqrt();
        let factor = (max_grad_norm / (norm + 1e-6)).min(1.0);
        tch::no_grad(|| {
            for (s, g) in sum.iter_mut().zip(&grads) {
                if g.defined() {
                    *s += g * factor;
                }
            }
        });
        norms.push(norm as f32);
    }
    tch::no_grad(|| {
        for (v, s) in model.variables().iter().zip(&sum) {
            let mut g = v.grad();
            if g.defined() {
                g.copy_(s);
            }
        }
    });
    let mean = if rows > 0 { total / rows as f64 } else { 0.0 };
    Ok((Tensor::from_slice(&norms), mean))
}

/// Adds `N(0, (noise_multiplier max_grad_norm)^2)` to every gradient entry, from `rng`, then
/// divides the gradients by `expected_rows`.
fn add_noise(
    model: &Model,
    dp: &DpSgd,
    expected_rows: f64,
    rng: &mut impl CryptoRng,
) -> Result<()> {
    let std = dp.noise_multiplier * dp.max_grad_norm;
    tch::no_grad(|| {
        for v in model.variables() {
            let mut g = v.grad();
            if !g.defined() {
                continue;
            }
            if std > 0.0 {
                let n = g.numel();
                let noise: Vec<f32> = (0..n)
                    .map(|_| (std * rng.sample::<f64, _>(StandardNormal)) as f32)
                    .collect();
                let noise = Tensor::from_slice(&noise)
                    .view(g.size().as_slice())
                    .to_device(g.device());
                let _ = g.f_add_(&noise).map_err(torch_error)?;
            }
            let _ = g.f_div_scalar_(expected_rows).map_err(torch_error)?;
        }
        Ok(())
    })
}

/// Trains `model` on `data` with DP-SGD: `config.epochs` epochs of `ceil(rows / batch_size)` steps,
/// each on a Poisson sample of rate `batch_size / rows` (the sampling the accountant assumes),
/// with the optimizer of `config`. The samples and the noise both come from `rng`, which must be
/// secret: the accountant's gain from sampling holds only if nobody knows which rows a step
/// took. `config.seed` fixes nothing here but libtorch's dropout masks.
pub fn train_dp(
    model: &mut Model,
    data: &Dataset,
    config: &TrainConfig,
    dp: &DpSgd,
    rng: &mut impl CryptoRng,
    mut on_epoch: impl FnMut(&EpochReport),
) -> Result<DpRun> {
    config.validate()?;
    dp.validate()?;
    let (xs, ys) = rows_on_device(model, data, "train on")?;
    let mut opt = crate::train::optimizer(model, config)?;
    define_gradients(model)?;
    tch::manual_seed(config.seed as i64);
    let rows = data.len();
    let q = (config.batch_size as f64 / rows as f64).min(1.0);
    let steps_per_epoch = rows.div_ceil(config.batch_size).max(1);
    let mut run = DpRun {
        sampling_rate: q,
        steps: 0,
        clipped_rows: 0,
        sampled_rows: 0,
        epochs: Vec::with_capacity(config.epochs),
    };
    for epoch in 1..=config.epochs {
        let (mut total, mut seen) = (0.0, 0usize);
        for _ in 0..steps_per_epoch {
            let sample: Vec<i64> = (0..rows as i64)
                .filter(|_| rng.random::<f64>() < q)
                .collect();
            let (clipped, loss) = step(
                model,
                &mut opt,
                data.task(),
                (&xs, &ys),
                &sample,
                dp,
                q * rows as f64,
                rng,
            )?;
            run.steps += 1;
            run.clipped_rows += clipped;
            run.sampled_rows += sample.len() as u64;
            total += loss;
            seen += sample.len();
        }
        let report = EpochReport {
            epoch,
            epochs: config.epochs,
            loss: total / seen.max(1) as f64,
        };
        if !report.loss.is_finite() {
            return Err(ModelError::Diverged {
                epoch,
                loss: report.loss,
            });
        }
        on_epoch(&report);
        run.epochs.push(report);
    }
    Ok(run)
}

/// One full-batch step's gradient, before any noise: what a hospital sends in a round of
/// distributed noise ([`clipped_gradient_sum_all`]).
#[derive(Debug, Clone, PartialEq)]
pub struct ClippedSum {
    /// The sum over the rows of each row's gradient clipped to `max_grad_norm`, flat in the
    /// model's parameter order (the order of [`Model::params`]).
    pub gradient: Vec<f32>,
    /// Rows summed.
    pub rows: u64,
    /// Rows whose gradient was scaled down.
    pub clipped_rows: u64,
    /// Mean per-row loss.
    pub loss: f64,
}

/// Rows a chunk of [`clipped_gradient_sum_all`] takes at once: bounds the memory of the
/// per-row norms (a layer's outputs for every row of the chunk).
const CHUNK_ROWS: usize = 256;

/// The sum of every row's gradient of `data`, each clipped to `max_grad_norm` (the per-row
/// clipping of [`train_dp`], on all rows, in chunks), without noise and without changing the
/// model's parameters. With distributed noise the noise is added to the integers this becomes,
/// by the caller's codec.
pub fn clipped_gradient_sum_all(
    model: &Model,
    data: &Dataset,
    max_grad_norm: f64,
) -> Result<ClippedSum> {
    DpSgd {
        max_grad_norm,
        noise_multiplier: 0.0,
    }
    .validate()?;
    let (xs, ys) = rows_on_device(model, data, "take a gradient of")?;
    define_gradients(model)?;
    let mut sum: Vec<Tensor> = model
        .variables()
        .iter()
        .map(|v| v.zeros_like().detach())
        .collect();
    let (mut clipped_rows, mut total) = (0u64, 0.0);
    let rows = data.len();
    for start in (0..rows).step_by(CHUNK_ROWS) {
        let n = CHUNK_ROWS.min(rows - start) as i64;
        let (norms, mean) = clipped_gradient_sum(
            model,
            data.task(),
            &xs.narrow(0, start as i64, n),
            &ys.narrow(0, start as i64, n),
            max_grad_norm,
        )?;
        clipped_rows += norms.gt(max_grad_norm).sum(Kind::Int64).int64_value(&[]) as u64;
        total += mean * n as f64;
        tch::no_grad(|| {
            for (s, v) in sum.iter_mut().zip(model.variables()) {
                let g = v.grad();
                if g.defined() {
                    *s += g;
                }
            }
        });
    }
    zero_gradients(model);
    Ok(ClippedSum {
        gradient: flat_on_host(&sum)?,
        rows: rows as u64,
        clipped_rows,
        loss: total / rows as f64,
    })
}

/// `data`'s features and targets on the model's device, once it is checked that the model fits
/// them and there is at least one row (`cannot {what} an empty dataset` otherwise).
fn rows_on_device(model: &Model, data: &Dataset, what: &str) -> Result<(Tensor, Tensor)> {
    model.spec().check_fits(data.n_features(), data.task())?;
    if data.is_empty() {
        return Err(ModelError::InvalidArgument(format!(
            "cannot {what} an empty dataset"
        )));
    }
    let device = model.device();
    Ok((features_tensor(data, device), targets_tensor(data, device)))
}

/// Gives every parameter a gradient (of zeros), so that every step adds noise to every one, an
/// empty sample's included (libtorch skips a parameter without a gradient).
fn define_gradients(model: &Model) -> Result<()> {
    let zero = model
        .variables()
        .iter()
        .map(|v| (v * 0.0).sum(Kind::Float))
        .reduce(|a, b| a + b);
    if let Some(zero) = zero {
        zero_gradients(model);
        zero.f_backward().map_err(torch_error)?;
    }
    Ok(())
}

/// Sets every defined gradient to zero (in place: the optimizer's `zero_grad` would undefine them).
fn zero_gradients(model: &Model) {
    for v in model.variables() {
        let mut g = v.grad();
        if g.defined() {
            let _ = g.zero_();
        }
    }
}

/// One DP-SGD step on the rows `sample` of `xs`, `ys` (possibly none: the step is taken, noise
/// only, as the accountant counts it). Returns the rows clipped and the sample's summed loss.
#[allow(clippy::too_many_arguments)]
fn step(
    model: &Model,
    opt: &mut tch::nn::Optimizer,
    task: TaskKind,
    (xs, ys): (&Tensor, &Tensor),
    sample: &[i64],
    dp: &DpSgd,
    expected_rows: f64,
    rng: &mut impl CryptoRng,
) -> Result<(u64, f64)> {
    let mut out = (0, 0.0);
    if sample.is_empty() {
        zero_gradients(model);
    } else {
        let idx = Tensor::from_slice(sample).to_device(xs.device());
        let (norms, mean) = clipped_gradient_sum(
            model,
            task,
            &xs.index_select(0, &idx),
            &ys.index_select(0, &idx),
            dp.max_grad_norm,
        )?;
        out = (
            norms.gt(dp.max_grad_norm).sum(Kind::Int64).int64_value(&[]) as u64,
            mean * sample.len() as f64,
        );
    }
    add_noise(model, dp, expected_rows, rng)?;
    opt.step();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::loss;
    use fedchain_datasets::{Builtin, Standardizer};
    use fedchain_model_core::{ModelKind, ModelSpec};
    use rand::SeedableRng;
    use rand_chacha::ChaCha20Rng;
    use tch::Device;

    /// `rows` standardized rows of a bundled dataset, and a fresh model of `kind` for it.
    fn setup(b: Builtin, kind: ModelKind, rows: i64) -> (Model, TaskKind, Tensor, Tensor) {
        let raw = b.load().unwrap();
        let data = Standardizer::fit(&raw).apply(&raw).unwrap();
        let spec = ModelSpec::preset(kind, data.n_features(), data.task()).unwrap();
        let model = Model::new(&spec, Device::Cpu, 3).unwrap();
        let xs = features_tensor(&data, Device::Cpu).narrow(0, 0, rows);
        let ys = targets_tensor(&data, Device::Cpu).narrow(0, 0, rows);
        (model, data.task(), xs, ys)
    }

    /// Each row's gradient the slow way: a backward pass of its own loss.
    fn row_by_row(model: &Model, task: TaskKind, xs: &Tensor, ys: &Tensor) -> Vec<Vec<Tensor>> {
        (0..xs.size()[0])
            .map(|i| {
                zero_gradients(model);
                let out = model.forward_t(&xs.narrow(0, i, 1), true).unwrap();
                loss(task, &out, &ys.narrow(0, i, 1)).backward();
                model.variables().iter().map(|v| v.grad().copy()).collect()
            })
            .collect()
    }

    fn norm(grads: &[Tensor]) -> f64 {
        grads
            .iter()
            .map(|g| g.square().sum(Kind::Double).double_value(&[]))
            .sum::<f64>()
            .sqrt()
    }

    /// The full-batch sum, in chunks, is the sum of the clipped rows, flat in parameter order,
    /// and leaves the parameters as they were.
    #[test]
    fn the_whole_batch_clipped_sum_is_the_rows_clipped_and_added() {
        let raw = Builtin::BreastCancer.load().unwrap();
        let data = Standardizer::fit(&raw).apply(&raw).unwrap();
        let data = data.subset(&(0..300).collect::<Vec<_>>());
        let spec = ModelSpec::preset(ModelKind::Mlp, data.n_features(), data.task()).unwrap();
        let model = Model::new(&spec, Device::Cpu, 5).unwrap();
        let before = model.params().unwrap();
        let xs = features_tensor(&data, Device::Cpu);
        let ys = targets_tensor(&data, Device::Cpu);
        let rows = row_by_row(&model, data.task(), &xs, &ys);
        // The median norm: some rows clipped, some not.
        let mut norms: Vec<f64> = rows.iter().map(|g| norm(g)).collect();
        norms.sort_by(f64::total_cmp);
        let bound = norms[150];
        let got = clipped_gradient_sum_all(&model, &data, bound).unwrap();
        let mut want = vec![0f64; before.len()];
        let mut clipped = 0;
        for g in &rows {
            let n = norm(g);
            clipped += u64::from(n > bound);
            let factor = (bound / (n + 1e-6)).min(1.0);
            let flat: Vec<f32> = g
                .iter()
                .flat_map(|t| Vec::<f32>::try_from(&t.contiguous().view(-1)).unwrap())
                .collect();
            for (w, x) in want.iter_mut().zip(flat) {
                *w += f64::from(x) * factor;
            }
        }
        assert_eq!((got.rows, got.clipped_rows), (300, clipped));
        assert!(clipped > 0 && clipped < 300, "{clipped}");
        assert_eq!(got.gradient.len(), want.len());
        for (i, (g, w)) in got.gradient.iter().zip(&want).enumerate() {
            assert!(
                (f64::from(*g) - w).abs() <= 1e-4 * w.abs().max(1.0),
                "{i}: {g} vs {w}"
            );
        }
        assert_eq!(model.params().unwrap(), before);
        assert!(clipped_gradient_sum_all(&model, &data, 0.0).is_err());
    }

    #[test]
    fn row_norms_and_the_clipped_sum_match_a_backward_pass_per_row() {
        let cases = [
            (Builtin::BreastCancer, ModelKind::Logreg),
            (Builtin::BreastCancer, ModelKind::Mlp),
            (Builtin::Digits, ModelKind::Mlp),
            (Builtin::Digits, ModelKind::Cnn),
        ];
        for (b, kind) in cases {
            let (model, task, xs, ys) = setup(b, kind, 12);
            let rows = row_by_row(&model, task, &xs, &ys);
            let want: Vec<f64> = rows.iter().map(|g| norm(g)).collect();
            // A bound between the smallest and largest norm, so that some rows are clipped and
            // some are not.
            let mut sorted = want.clone();
            sorted.sort_by(f64::total_cmp);
            let bound = sorted[sorted.len() / 2];
            let (norms, _) = clipped_gradient_sum(&model, task, &xs, &ys, bound).unwrap();
            let got: Vec<f64> = Vec::<f32>::try_from(&norms)
                .unwrap()
                .into_iter()
                .map(f64::from)
                .collect();
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert!(
                    (g - w).abs() <= 1e-4 * w.max(1e-3),
                    "{kind:?} row {i}: {g} vs {w}"
                );
            }
            // The sum of the clipped rows, computed row by row.
            let mut clipped = 0;
            for (v_index, v) in model.variables().iter().enumerate() {
                let expected = rows
                    .iter()
                    .zip(&want)
                    .map(|(g, n)| &g[v_index] * (bound / (n + 1e-6)).min(1.0))
                    .reduce(|a, b| a + b)
                    .unwrap();
                let diff = (v.grad() - &expected).abs().max().double_value(&[]);
                let scale = expected.abs().max().double_value(&[]).max(1e-3);
                assert!(
                    diff <= 1e-4 * scale,
                    "{kind:?} variable {v_index}: off by {diff}"
                );
            }
            for (g, n) in rows.iter().zip(&want) {
                let scaled: Vec<Tensor> = g
                    .iter()
                    .map(|t| t * (bound / (n + 1e-6)).min(1.0))
                    .collect();
                assert!(norm(&scaled) <= bound * (1.0 + 1e-6));
                clipped += usize::from(*n > bound);
            }
            assert!(
                clipped > 0 && clipped < want.len(),
                "{kind:?}: {clipped} clipped"
            );
        }
    }

    #[test]
    fn a_torchscript_module_gets_the_same_clipped_sum_row_by_row() {
        // The examples' TorchScript restatement of the breast-cancer MLP, given the built-in
        // MLP's parameters (each tensor's shape is unique, so shapes pair them up).
        let (builtin, task, xs, ys) = setup(Builtin::BreastCancer, ModelKind::Mlp, 10);
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../examples/breast_cancer_mlp.pt");
        let script = Model::from_module(&path, 30, 1, Device::Cpu).unwrap();
        assert!(script.forward_traced(&xs, true).is_none());
        tch::no_grad(|| {
            for v in script.variables() {
                let src = builtin
                    .variables()
                    .iter()
                    .find(|b| b.size() == v.size())
                    .expect("a built-in tensor of the same shape");
                let mut v = v.shallow_clone();
                v.copy_(src);
            }
        });
        let (n1, l1) = clipped_gradient_sum(&builtin, task, &xs, &ys, 0.5).unwrap();
        let (n2, l2) = clipped_gradient_sum(&script, task, &xs, &ys, 0.5).unwrap();
        assert!((l1 - l2).abs() < 1e-5, "{l1} vs {l2}");
        let diff = (&n1 - &n2).abs().max().double_value(&[]);
        assert!(diff < 1e-4, "norms differ by {diff}");
        for v in script.variables() {
            let b = builtin
                .variables()
                .iter()
                .find(|b| b.size() == v.size())
                .unwrap();
            let diff = (v.grad() - b.grad()).abs().max().double_value(&[]);
            assert!(diff < 1e-5, "{:?}: clipped sums differ by {diff}", v.size());
        }
    }

    #[test]
    fn the_noise_has_the_stated_deviation_and_is_divided_by_the_expected_rows() {
        let (model, task, xs, ys) = setup(Builtin::Digits, ModelKind::Mlp, 4);
        // A bound so small that the data's contribution vanishes: what is left is the noise.
        let _ = clipped_gradient_sum(&model, task, &xs, &ys, 1e-12).unwrap();
        let dp = DpSgd {
            max_grad_norm: 1.5,
            noise_multiplier: 2.0,
        };
        add_noise(&model, &dp, 4.0, &mut ChaCha20Rng::seed_from_u64(1)).unwrap();
        let all = Tensor::cat(
            &model
                .variables()
                .iter()
                .map(|v| v.grad().flatten(0, -1))
                .collect::<Vec<_>>(),
            0,
        );
        let n = all.numel() as f64;
        let mean = all.mean(Kind::Double).double_value(&[]);
        let std = all.std(true).double_value(&[]);
        // 2.0 x 1.5 / 4 = 0.75, over about 2,600 entries: within 5 %.
        assert!(n > 2000.0, "{n}");
        assert!((std - 0.75).abs() < 0.05 * 0.75, "std {std}");
        assert!(mean.abs() < 4.0 * 0.75 / n.sqrt(), "mean {mean}");
        // Two generators, two noises; no noise multiplier, no noise.
        let first = all.copy();
        let _ = clipped_gradient_sum(&model, task, &xs, &ys, 1e-12).unwrap();
        add_noise(&model, &dp, 4.0, &mut ChaCha20Rng::seed_from_u64(2)).unwrap();
        let second = model.variables()[0].grad().flatten(0, -1);
        assert!(!second.equal(&first.narrow(0, 0, second.numel() as i64)));
        let _ = clipped_gradient_sum(&model, task, &xs, &ys, 1e-12).unwrap();
        let quiet = DpSgd {
            noise_multiplier: 0.0,
            ..dp
        };
        add_noise(&model, &quiet, 4.0, &mut ChaCha20Rng::seed_from_u64(1)).unwrap();
        let max = model.variables()[0].grad().abs().max().double_value(&[]);
        assert!(max < 1e-9, "{max}");
    }

    #[test]
    fn a_step_on_an_empty_sample_still_moves_every_parameter_by_noise() {
        let (model, task, xs, ys) = setup(Builtin::BreastCancer, ModelKind::Mlp, 4);
        let config = TrainConfig {
            optimizer: crate::Optimizer::Sgd { momentum: 0.0 },
            learning_rate: 0.1,
            ..Default::default()
        };
        let mut opt = crate::train::optimizer(&model, &config).unwrap();
        define_gradients(&model).unwrap();
        let before: Vec<Tensor> = model.variables().iter().map(|v| v.copy()).collect();
        let dp = DpSgd {
            max_grad_norm: 1.0,
            noise_multiplier: 1.0,
        };
        let mut rng = ChaCha20Rng::seed_from_u64(4);
        let (clipped, loss) =
            step(&model, &mut opt, task, (&xs, &ys), &[], &dp, 2.0, &mut rng).unwrap();
        assert_eq!((clipped, loss), (0, 0.0));
        for (v, b) in model.variables().iter().zip(&before) {
            // Every entry moved: noise of deviation 0.1 x 1 / 2 on each.
            let unmoved = v.eq_tensor(b).sum(Kind::Int64).int64_value(&[]);
            assert_eq!(unmoved, 0, "{:?}", v.size());
        }
    }

    #[test]
    fn dp_sgd_trains_breast_cancer_and_counts_what_the_accountant_needs() {
        let raw = Builtin::BreastCancer.load().unwrap();
        let data = Standardizer::fit(&raw).apply(&raw).unwrap();
        let spec = ModelSpec::preset(ModelKind::Logreg, data.n_features(), data.task()).unwrap();
        let mut model = Model::new(&spec, Device::Cpu, 1).unwrap();
        let config = TrainConfig {
            epochs: 5,
            batch_size: 64,
            learning_rate: 0.05,
            ..Default::default()
        };
        let dp = DpSgd {
            max_grad_norm: 1.0,
            noise_multiplier: 1.0,
        };
        let mut rng = ChaCha20Rng::seed_from_u64(9);
        let run = train_dp(&mut model, &data, &config, &dp, &mut rng, |_| {}).unwrap();
        let steps = 5 * data.len().div_ceil(64) as u64;
        assert_eq!(run.steps, steps);
        assert!((run.sampling_rate - 64.0 / data.len() as f64).abs() < 1e-12);
        // Poisson samples: about 64 rows a step.
        let mean = run.sampled_rows as f64 / steps as f64;
        assert!((mean - 64.0).abs() < 12.0, "{mean}");
        let acc = crate::evaluate(&model, &data, None).unwrap();
        assert!(acc.accuracy.unwrap() > 0.9, "{acc:?}");
        // A TorchScript-free refusal of bad parameters.
        let bad = DpSgd {
            max_grad_norm: 0.0,
            ..dp
        };
        assert!(train_dp(&mut model, &data, &config, &bad, &mut rng, |_| {}).is_err());
    }
}
