//! `fedchain train`: centralized training on one machine, the reference for federated runs.

use crate::dataset_args::DatasetArgs;
use anyhow::{Context, Result};
use clap::Args;
use fedchain_datasets::{train_test_split, Dataset, Standardizer};
use fedchain_models::dp::{train_dp, DpSgd};
use fedchain_models::{
    describe_device, evaluate, metrics, num_parameters, pick_device, train, DeviceChoice, Metrics,
    Model, ModelKind, ModelSpec, Optimizer, TrainConfig,
};
use indicatif::{ProgressBar, ProgressStyle};
use rand::SeedableRng;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Args, Debug)]
pub struct TrainArgs {
    #[command(flatten)]
    pub data: DatasetArgs,
    /// Model family: logreg, mlp or cnn (cnn needs square images such as the 8x8 digits).
    #[arg(long, default_value = "mlp")]
    pub model: ModelKind,
    /// Your own network instead: a TorchScript module (`torch.jit.script(net).save(FILE)`, or a
    /// trace) taking rows of the dataset's features and returning one output per class (one for
    /// binary and regression tasks). Its operators are checked before it is loaded (`fedchain
    /// model inspect`); training starts from its own parameters. With --out, the trained module
    /// is written beside the model as FILE.pt.
    #[arg(long, value_name = "FILE", conflicts_with = "model")]
    pub model_file: Option<PathBuf>,
    #[command(flatten)]
    pub hyper: HyperArgs,
    /// Where to save the trained model (safetensors, with its spec and digest); the feature scaling
    /// goes beside it as FILE.standardizer.json.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Print one JSON object instead of text (no progress bar).
    #[arg(long)]
    pub json: bool,
}

/// Training hyperparameters; unset ones take the model family's defaults.
#[derive(Args, Debug, Clone, Default)]
pub struct HyperArgs {
    /// Passes over the training rows.
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Adam step size.
    #[arg(long = "lr")]
    pub learning_rate: Option<f64>,
    /// Rows per optimizer step.
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Seed for the split, the initial parameters and the batch order.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Fraction of rows held out for testing (stratified by class).
    #[arg(long, default_value_t = 0.2)]
    pub test_fraction: f64,
    /// Device: auto (CUDA when available), cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    pub device: DeviceChoice,
    #[command(flatten)]
    pub dp: DpArgs,
}

/// Differentially private training (DP-SGD), centralized.
#[derive(Args, Debug, Clone, Default)]
pub struct DpArgs {
    /// Train with DP-SGD within this epsilon (at --delta) for the training rows: the noise
    /// multiplier is the smallest whose steps stay within it (Rényi DP accountant). The feature
    /// scaling is fitted on the training rows without noise, so it is not covered.
    #[arg(long, value_name = "EPSILON")]
    pub epsilon: Option<f64>,
    /// The delta of --epsilon (a per-row failure probability; well below 1 / rows).
    #[arg(long, default_value_t = 1e-5, requires = "epsilon")]
    pub delta: f64,
    /// With --epsilon: every row's gradient is scaled down to at most this L2 norm.
    #[arg(long, default_value_t = 1.0, requires = "epsilon")]
    pub max_grad_norm: f64,
}

/// What DP-SGD spent.
#[derive(Debug, Serialize)]
pub struct PrivacySpent {
    /// The epsilon asked for, and the one spent (at most that).
    pub epsilon_target: f64,
    pub epsilon: f64,
    pub delta: f64,
    pub max_grad_norm: f64,
    pub noise_multiplier: f64,
    pub sampling_rate: f64,
    pub steps: u64,
    /// Fraction of sampled rows whose gradient was scaled down. Like the training loss, it is
    /// computed from the rows without noise: for whoever holds the data, not for release.
    pub clipped_fraction: f64,
}

/// Defaults per model family, tuned on the bundled datasets (see ARCHITECTURE.md).
fn default_config(kind: ModelKind) -> TrainConfig {
    let (epochs, learning_rate) = match kind {
        ModelKind::Logreg => (60, 1e-2),
        ModelKind::Mlp => (30, 1e-3),
        ModelKind::Cnn => (20, 2e-3),
        ModelKind::Torchscript => (20, 1e-3),
    };
    TrainConfig {
        epochs,
        batch_size: 32,
        learning_rate,
        weight_decay: 0.0,
        optimizer: Optimizer::Adam,
        seed: 0,
    }
}

/// The result of one training run, as printed with --json.
#[derive(Debug, Serialize)]
pub struct TrainOutcome {
    pub dataset: String,
    pub task: String,
    pub rows: usize,
    pub features: usize,
    pub train_rows: usize,
    pub test_rows: usize,
    pub model: ModelSpec,
    pub parameters: usize,
    pub config: TrainConfig,
    pub device: String,
    pub final_train_loss: f64,
    pub test: Metrics,
    pub baseline: Metrics,
    pub model_digest: String,
    pub seconds: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub saved: Option<PathBuf>,
    /// With --epsilon: what DP-SGD spent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub privacy: Option<PrivacySpent>,
}

/// Loads, splits, standardizes, trains and evaluates; `progress` shows a bar on stderr.
pub fn run_training(
    data: &Dataset,
    kind: ModelKind,
    module: Option<&Path>,
    hyper: &HyperArgs,
    out: Option<&Path>,
    progress: bool,
    label: &str,
) -> Result<TrainOutcome> {
    let started = Instant::now();
    if let (Some(module), Some(out)) = (module, out) {
        let trained = module_path(out);
        if trained == out {
            anyhow::bail!(
                "--out {} would be overwritten by the trained module, which goes beside the model \
                 as FILE.pt; name the model FILE.safetensors",
                out.display()
            );
        }
        let same = |a: &Path, b: &Path| match (a.canonicalize(), b.canonicalize()) {
            (Ok(a), Ok(b)) => a == b,
            _ => false,
        };
        if same(module, &trained) {
            anyhow::bail!(
                "--out {} would write the trained module over {}, the module you train from; \
                 choose another --out",
                out.display(),
                module.display()
            );
        }
    }
    let device = pick_device(hyper.device)?;
    let (train_raw, test_raw) = train_test_split(data, hyper.test_fraction, hyper.seed)?;
    let scaler = Standardizer::fit(&train_raw);
    let train_set = scaler.apply(&train_raw)?;
    let test_set = scaler.apply(&test_raw)?;

    let (spec, mut model) = match module {
        Some(path) => {
            let model = Model::from_module(path, data.n_features(), data.task().outputs(), device)?;
            (model.spec().clone(), model)
        }
        None => {
            let spec = ModelSpec::preset(kind, data.n_features(), data.task())?;
            let model = Model::new(&spec, device, hyper.seed)?;
            (spec, model)
        }
    };
    let mut config = default_config(spec.kind());
    config.seed = hyper.seed;
    config.epochs = hyper.epochs.unwrap_or(config.epochs);
    config.learning_rate = hyper.learning_rate.unwrap_or(config.learning_rate);
    config.batch_size = hyper.batch_size.unwrap_or(config.batch_size);
    config.validate()?;

    let bar = if progress {
        let bar = ProgressBar::new(config.epochs as u64);
        bar.set_style(
            ProgressStyle::with_template("{prefix} [{bar:30.cyan/blue}] epoch {pos}/{len} {msg}")
                .expect("static template")
                .progress_chars("=> "),
        );
        bar.set_prefix(label.to_string());
        bar
    } else {
        ProgressBar::hidden()
    };
    let on_epoch = |r: &fedchain_models::EpochReport| {
        bar.set_message(format!("loss {:.4}", r.loss));
        bar.inc(1);
    };
    let d = &hyper.dp;
    let (reports, privacy) = match d.epsilon {
        None => (train(&mut model, &train_set, &config, on_epoch)?, None),
        Some(target) => {
            use fedchain_protocol::accountant::{epsilon_of, noise_multiplier_for};
            let rows = train_set.len();
            let q = (config.batch_size as f64 / rows as f64).min(1.0);
            let steps = (config.epochs * rows.div_ceil(config.batch_size)) as u64;
            let sigma = noise_multiplier_for(q, steps, target, d.delta)?;
            let params = DpSgd {
                max_grad_norm: d.max_grad_norm,
                noise_multiplier: sigma,
            };
            // The noise must be secret: the machine's own randomness, not the seed.
            let mut rng = rand_chacha::ChaCha20Rng::from_os_rng();
            let run = train_dp(&mut model, &train_set, &config, &params, &mut rng, on_epoch)?;
            let spent = PrivacySpent {
                epsilon_target: target,
                epsilon: epsilon_of(run.sampling_rate, sigma, run.steps, d.delta)?,
                delta: d.delta,
                max_grad_norm: d.max_grad_norm,
                noise_multiplier: sigma,
                sampling_rate: run.sampling_rate,
                steps: run.steps,
                clipped_fraction: run.clipped_rows as f64 / run.sampled_rows.max(1) as f64,
            };
            (run.epochs, Some(spent))
        }
    };
    bar.finish_and_clear();

    let test = evaluate(&model, &test_set, Some(&scaler))?;
    let baseline = metrics::baseline(data.task(), train_raw.targets(), test_raw.targets());
    let digest = model.digest()?;
    let saved = match out {
        Some(path) => {
            // The file carries its preprocessing, so `fedchain predict` applies it to raw rows;
            // the standardizer beside it stays for tools that read it.
            model
                .to_file()?
                .with_preprocessing(fedchain_models::Preprocessing {
                    target: data.target_name().to_string(),
                    task: data.task(),
                    scaling: scaler.clone(),
                    statistics: None,
                })?
                .save(path)?;
            let stats = standardizer_path(path);
            std::fs::write(&stats, scaler.to_json())
                .with_context(|| format!("writing {}", stats.display()))?;
            if module.is_some() {
                model.save_module(&module_path(path))?;
            }
            Some(path.to_path_buf())
        }
        None => None,
    };
    Ok(TrainOutcome {
        dataset: data.name().to_string(),
        task: data.task().to_string(),
        rows: data.len(),
        features: data.n_features(),
        train_rows: train_set.len(),
        test_rows: test_set.len(),
        parameters: num_parameters(&spec),
        model: spec,
        config,
        device: describe_device(device),
        final_train_loss: reports.last().map(|r| r.loss).unwrap_or(f64::NAN),
        test,
        baseline,
        model_digest: digest.to_hex(),
        seconds: started.elapsed().as_secs_f64(),
        saved,
        privacy,
    })
}

/// `model.safetensors` -> `model.pt`, where a TorchScript model's trained module goes.
pub fn module_path(model: &Path) -> PathBuf {
    model.with_extension("pt")
}

/// `model.safetensors` -> `model.standardizer.json`.
pub fn standardizer_path(model: &Path) -> PathBuf {
    model.with_extension("standardizer.json")
}

pub fn run(args: TrainArgs) -> Result<()> {
    let data = args.data.load()?;
    if !args.json {
        println!(
            "dataset: {} ({} rows x {} features, {})",
            data.name(),
            data.len(),
            data.n_features(),
            data.task()
        );
        // Say which device is used before the long part, so a GPU host sees it at once.
        println!(
            "device:  {}",
            describe_device(pick_device(args.hyper.device)?)
        );
    }
    let o = run_training(
        &data,
        args.model,
        args.model_file.as_deref(),
        &args.hyper,
        args.out.as_deref(),
        !args.json,
        "training",
    )?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&o)?);
        return Ok(());
    }
    println!(
        "split:   {} train / {} test rows (seed {}); features standardized on training rows only",
        o.train_rows, o.test_rows, o.config.seed
    );
    println!("model:   {} ({} parameters)", o.model, o.parameters);
    println!(
        "trained: {} epochs, batch {}, Adam lr {}; final training loss {:.4}",
        o.config.epochs, o.config.batch_size, o.config.learning_rate, o.final_train_loss
    );
    if let Some(p) = &o.privacy {
        println!(
            "privacy: DP-SGD, epsilon {:.3} at delta {:e} (asked {}): noise multiplier {:.3}, \
             gradients clipped to {} ({:.0} % of rows scaled down), {} steps on samples of rate \
             {:.4}; the feature scaling, the training loss and the clipped share are not \
             private (for this machine only)",
            p.epsilon,
            p.delta,
            p.epsilon_target,
            p.noise_multiplier,
            p.max_grad_norm,
            100.0 * p.clipped_fraction,
            p.steps,
            p.sampling_rate
        );
    }
    println!("test:    {}", o.test);
    println!(
        "trivial baseline ({}): {}",
        if o.test.accuracy.is_some() {
            "majority class"
        } else {
            "predict the mean"
        },
        o.baseline
    );
    println!("digest:  sha256:{}", o.model_digest);
    if let Some(path) = &o.saved {
        println!(
            "saved:   {} (+ {}{})",
            path.display(),
            standardizer_path(path).display(),
            match o.model {
                ModelSpec::Torchscript { .. } => format!(
                    ", and the trained module {}, which torch.jit.load opens",
                    module_path(path).display()
                ),
                _ => String::new(),
            }
        );
    }
    println!("time:    {:.1} s", o.seconds);
    Ok(())
}
