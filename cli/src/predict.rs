//! `fedchain predict --model FILE --csv ROWS | --images DIR [--json]`: a released model applied
//! to raw rows or raw image files.
//!
//! The model file carries how the hospitals prepared their rows (the features in order, the
//! consortium's pooled scaling, the target and task; `fedchain_models::Preprocessing`). Raw rows
//! are scaled the same way and predicted; when they carry the target column, the metrics are
//! scored as the job scored its models.

use std::path::PathBuf;

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use fedchain_datasets::{
    image_folder, load_csv, load_image_rows, load_images_named, load_rows, DataError, Schema,
    TaskKind,
};
use fedchain_models::{evaluate, Model, ModelFile, ModelSpec};
use serde_json::json;
use tch::Device;

use crate::job::MetricMap;

#[derive(Args, Debug)]
pub struct PredictArgs {
    /// The model file (`fedchain job download`, or `fedchain train --out`).
    #[arg(long, value_name = "FILE")]
    model: PathBuf,
    /// Raw rows: a CSV file with a header naming at least the model's feature columns (other
    /// columns are ignored; the target column, when present, is scored).
    #[arg(
        long,
        value_name = "FILE",
        required_unless_present = "images",
        conflicts_with = "images"
    )]
    csv: Option<PathBuf>,
    /// Raw images, for a model trained on images: a folder of PNG, JPEG or DICOM files of the
    /// shape the model was trained on. With a labels.csv (`file,<target>`) it lists the files and
    /// its labels are scored; without one, every file in the folder is predicted, in name order.
    #[arg(long, value_name = "DIR")]
    images: Option<PathBuf>,
    /// For a TorchScript model, its module (default: the model file's name with `.pt`, where
    /// `fedchain train --model-file` writes the trained module).
    #[arg(long, value_name = "FILE")]
    module: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(args: PredictArgs) -> Result<()> {
    let file = ModelFile::load(&args.model)?;
    let p = file.preprocessing().cloned().ok_or_else(|| {
        anyhow!(
            "{} carries no preprocessing (the features and the scaling the model was trained \
             with), so it cannot be applied to raw rows; download it again with `fedchain job \
             download`, which releases it with its preprocessing",
            args.model.display()
        )
    })?;
    let model = match file.spec() {
        ModelSpec::Torchscript { .. } => {
            let module = args
                .module
                .clone()
                .unwrap_or_else(|| crate::train::module_path(&args.model));
            if !module.exists() {
                bail!(
                    "{} is a TorchScript model: give its module with --module FILE (no {} beside it)",
                    args.model.display(),
                    module.display()
                );
            }
            Model::from_module_params(file.spec(), &module, file.params(), Device::Cpu)?
        }
        spec => Model::from_params(spec, file.params(), Device::Cpu)?,
    };
    let features = p.scaling.feature_names.clone();
    let schema = Schema {
        features: Some(features.clone()),
        target: p.target.clone(),
        task: p.task,
        image: p.scaling.image,
    };
    let source = match (&args.csv, &args.images, p.scaling.image) {
        (Some(csv), None, None) => csv.clone(),
        (None, Some(dir), Some(_)) => dir.clone(),
        (_, _, Some(shape)) => bail!(
            "{} was trained on {shape} images: give them with --images DIR",
            args.model.display()
        ),
        (_, _, None) => bail!(
            "{} was trained on table rows ({} features): give them with --csv FILE",
            args.model.display(),
            features.len()
        ),
    };
    if args.images.is_some() && !source.exists() {
        bail!(
            "{}: no such folder (give a folder of image files, or its labels.csv)",
            source.display()
        );
    }
    let mut files: Option<Vec<String>> = None;
    let source_path = source.clone();
    let loaded = match p.scaling.image {
        Some(_) => load_images_named(&source, &schema).map(|(ds, names)| {
            files = Some(names);
            ds
        }),
        None => load_csv(&source, &schema),
    };
    let (predictions, metrics, rows, outputs) = match loaded {
        Ok(data) => {
            let scaled = p.scaling.apply(&data)?;
            let m = evaluate(&model, &scaled, Some(&p.scaling))?;
            let predictions = model.predict(&scaled)?;
            let outputs = model.outputs_rows(scaled.features(), scaled.n_features())?;
            let metrics: MetricMap = [("accuracy", m.accuracy), ("loss", m.loss), ("rmse", m.rmse)]
                .into_iter()
                .filter_map(|(n, v)| v.filter(|v| v.is_finite()).map(|v| (n.to_string(), v)))
                .collect();
            (predictions, Some(metrics), data.len(), outputs)
        }
        // Images without labels: a folder without labels.csv, or one without the target.
        Err(e)
            if p.scaling.image.is_some()
                && match &e {
                    DataError::Io { path, source } => {
                        source.kind() == std::io::ErrorKind::NotFound
                            && *path == image_folder(&source_path).1
                    }
                    DataError::MissingColumn { column, .. } => *column == p.target,
                    _ => false,
                } =>
        {
            let shape = p.scaling.image.expect("checked above");
            let (rows, names) = load_image_rows(&source, shape)?;
            let scaled = p.scaling.apply_rows(&rows)?;
            let predictions = model.predict_rows(&scaled, rows.n_features(), p.task)?;
            let outputs = model.outputs_rows(&scaled, rows.n_features())?;
            files = Some(names);
            (predictions, None, rows.len(), outputs)
        }
        Err(DataError::MissingColumn { column, .. }) if column == p.target => {
            let rows = load_rows(&source, &features).with_context(|| columns_hint(&args))?;
            let scaled = p.scaling.apply_rows(&rows)?;
            let predictions = model.predict_rows(&scaled, features.len(), p.task)?;
            let outputs = model.outputs_rows(&scaled, features.len())?;
            (predictions, None, rows.len(), outputs)
        }
        Err(e) => return Err(e).with_context(|| columns_hint(&args)),
    };
    let predictions: Vec<f32> = match p.task {
        TaskKind::Regression => predictions
            .iter()
            .map(|v| p.scaling.unscale_target(*v))
            .collect(),
        _ => predictions,
    };
    if args.json {
        let v = json!({
            "model": args.model,
            "model_sha256": file.digest().to_hex(),
            "task": p.task,
            "rows": rows,
            "files": files,
            "predictions": predictions,
            // What the model itself returns for each row (logits; scaled values for regression),
            // to compare with the same model run elsewhere.
            "outputs": outputs,
            "metrics": metrics,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!(
        "{} rows of {}, model sha256:{} ({}, target {})",
        rows,
        source.display(),
        file.digest(),
        p.task,
        p.target
    );
    for (i, v) in predictions.iter().enumerate() {
        let what = match &files {
            Some(names) => names[i].clone(),
            None => format!("row {:>6}", i + 1),
        };
        match p.task {
            TaskKind::Regression => println!("{what}: {v:.6}"),
            _ => println!("{what}: class {}", *v as i64),
        }
    }
    if let Some(m) = metrics {
        let shown: Vec<String> = m.iter().map(|(n, v)| format!("{n} {v:.4}")).collect();
        println!("scored against {}: {}", p.target, shown.join(", "));
    }
    Ok(())
}

/// What to do about rows the model cannot read.
fn columns_hint(args: &PredictArgs) -> String {
    format!(
        "{} does not fit the model; `fedchain model info {}` lists the columns it takes",
        args.csv
            .as_ref()
            .or(args.images.as_ref())
            .map_or(String::new(), |p| p.display().to_string()),
        args.model.display()
    )
}
