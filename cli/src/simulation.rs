//! The demo's federated job simulated in one process, shared by `fedchain demo --plaintext` and
//! `fedchain bench round`: the demo's job and split, each hospital's rows prepared exactly as its
//! worker prepares them, and the consortium's figures pooled as the coordinator pools the
//! hospitals' reports. Each rule comes from where the real parties take it (`fedchain-protocol`
//! for the training seed and the pooling, `fedchain-worker` for a hospital's report), so the
//! simulation cannot drift from the real thing.

use anyhow::{bail, Context, Result};
use fedchain_datasets::{
    partition, train_test_split, Builtin, Dataset, FeatureSums, Scheme, Standardizer, TaskKind,
};
use fedchain_models::{ModelKind, ModelSpec, TrainConfig};
use fedchain_proto::v1 as pb;
use fedchain_worker::{evaluate_global, report, LocalData};

use crate::job::JobFile;

/// The demo's clip with `quant_bits`.
pub const QUANT_CLIP: f32 = 0.25;

/// The job the demo runs.
pub fn demo_job(
    dataset: Builtin,
    model: Option<ModelKind>,
    module: Option<&std::path::Path>,
    rounds: Option<u32>,
    quant_bits: Option<u32>,
    seed: u64,
    images: bool,
) -> JobFile {
    let digits = dataset == Builtin::Digits;
    // As images, the job declares their shape; hospitals read folders of image files.
    let schema = dataset.image_shape().filter(|_| images).map(|shape| {
        let b = dataset.schema();
        crate::job::SchemaFile {
            kind: Some("image".into()),
            features: Vec::new(),
            channels: Some(shape.channels as u32),
            height: Some(shape.height as u32),
            width: Some(shape.width as u32),
            target: b.target,
            task: match b.task {
                TaskKind::Binary => "binary".into(),
                TaskKind::Regression => "regression".into(),
                TaskKind::Multiclass { .. } => "multiclass".into(),
            },
            classes: b
                .task
                .classes()
                .map(|c| c as u32)
                .filter(|_| b.task.outputs() > 1),
        }
    });
    let model = model.unwrap_or(if digits {
        ModelKind::Cnn
    } else {
        ModelKind::Mlp
    });
    JobFile {
        dataset: schema.is_none().then(|| dataset.name().to_string()),
        schema,
        model: match module {
            Some(path) => crate::job::ModelChoice::Torchscript {
                torchscript: path.to_path_buf(),
            },
            None => crate::job::ModelChoice::Builtin(model.name().to_string()),
        },
        rounds: rounds.unwrap_or(if digits { 5 } else { 8 }),
        local_epochs: 2,
        learning_rate: 2e-3,
        batch_size: 32,
        min_participants: 2,
        round_deadline_seconds: 300,
        credit_budget: 2000,
        seed,
        frac_bits: None,
        quant_bits,
        // With few levels per value the clip is their range: the demo's updates (two epochs of
        // Adam at 2e-3) stay well inside 0.25, and the clipped values are counted.
        clip: if quant_bits.is_some() {
            QUANT_CLIP
        } else {
            1.0
        },
        privacy: None,
        spread_decryption: true,
    }
}

/// The demo's split: one dataset per hospital.
pub fn demo_split(
    dataset: Builtin,
    hospitals: usize,
    alpha: f64,
    seed: u64,
    images: bool,
) -> Result<(Dataset, fedchain_datasets::Partition)> {
    let data = dataset.load()?;
    let data = match dataset.image_shape().filter(|_| images) {
        Some(shape) => data.as_images(shape)?,
        None if images => bail!("{dataset} is not a dataset of images; only digits is"),
        None => data,
    };
    let part = partition(&data, hospitals, Scheme::Dirichlet { alpha }, seed)?;
    Ok((data, part))
}

/// Each hospital's rows of the demo split, split and scaled exactly as its worker does: a seeded
/// train/test split, then the pooled statistics of round 0 (computed here in plaintext).
pub fn plaintext_hospitals(
    dataset: Builtin,
    hospitals: usize,
    alpha: f64,
    seed: u64,
    spec_pb: &pb::JobSpec,
    files: Option<fedchain_datasets::ImageFormat>,
) -> Result<(ModelSpec, Vec<LocalData>)> {
    let images = spec_pb.schema.as_ref().is_some_and(|s| s.image.is_some());
    let (data, part) = demo_split(dataset, hospitals, alpha, seed, images)?;
    // Image files, as the workers read them: written, then decoded back.
    let shares = match (files, data.image()) {
        (Some(format), Some(shape)) => {
            let dir = tempfile::tempdir()?;
            let names: Vec<String> = (1..=hospitals).map(|k| format!("h{k}")).collect();
            fedchain_datasets::write_split_images(&data, &part, dir.path(), &names, shape, format)?;
            let schema = data.schema();
            names
                .iter()
                .map(|n| {
                    Ok(fedchain_datasets::load_images(
                        &dir.path().join(n),
                        &schema,
                    )?)
                })
                .collect::<Result<Vec<_>>>()?
        }
        _ => part.datasets(&data),
    };
    let model = ModelSpec::from_json(
        &spec_pb
            .model
            .as_ref()
            .map(|m| m.canonical_json.clone())
            .unwrap_or_default(),
    )?;
    let task = data.task();
    let splits: Vec<(Dataset, Dataset)> = shares
        .iter()
        .map(|rows| train_test_split(rows, 0.2, spec_pb.seed).map_err(anyhow::Error::from))
        .collect::<Result<_>>()?;
    // Round 0: the pooled moments, the row-weighted average of each hospital's.
    let mut pooled: Vec<f64> = Vec::new();
    let mut total = 0f64;
    for (train, _) in &splits {
        let m = FeatureSums::of(train)
            .moments()
            .context("a hospital without rows")?;
        pooled.resize(m.len(), 0.0);
        for (p, v) in pooled.iter_mut().zip(&m) {
            *p += f64::from(*v) * train.len() as f64;
        }
        total += train.len() as f64;
    }
    let moments: Vec<f32> = pooled.iter().map(|p| (p / total) as f32).collect();
    let scaler =
        Standardizer::from_moments(data.feature_names(), task == TaskKind::Regression, &moments)?
            .with_image(data.image());
    let hospitals = splits
        .iter()
        .map(|(train, test)| -> Result<LocalData> {
            Ok(LocalData {
                train: scaler.apply(train)?,
                test: scaler.apply(test)?,
                scaler: scaler.clone(),
            })
        })
        .collect::<Result<_>>()?;
    Ok((model, hospitals))
}

/// The local training of `round` as every hospital runs it: the job's hyperparameters and the
/// protocol's training seed.
pub fn round_config(spec: &pb::JobSpec, round: u64) -> TrainConfig {
    TrainConfig {
        epochs: spec.local_epochs as usize,
        batch_size: spec.batch_size as usize,
        learning_rate: spec.learning_rate,
        seed: fedchain_protocol::training_seed(spec.seed, round),
        ..TrainConfig::default()
    }
}

/// The consortium's figures for `params`: each hospital's report on its held-out rows, pooled as
/// the coordinator pools the recorded reports.
pub fn pooled_metrics(
    model: &ModelSpec,
    module: &[u8],
    params: &[f32],
    hospitals: &[LocalData],
    device: tch::Device,
) -> Result<crate::job::MetricMap> {
    let reports = hospitals
        .iter()
        .map(|h| Ok(report(&evaluate_global(model, module, params, h, device)?)))
        .collect::<Result<Vec<_>>>()?;
    Ok(fedchain_protocol::pooled_metrics(&reports)
        .into_iter()
        .collect())
}
