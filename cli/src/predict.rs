//! `fedchain predict --model FILE --csv ROWS [--json]`: a released model applied to raw rows.
//!
//! The model file carries how the hospitals prepared their rows (the features in order, the
//! consortium's pooled scaling, the target and task; `fedchain_models::Preprocessing`). Raw rows
//! are scaled the same way and predicted; when they carry the target column, the metrics are
//! scored as the job scored its models.

use std::path::PathBuf;

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use fedchain_datasets::{load_csv, load_rows, DataError, Schema, TaskKind};
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
    #[arg(long, value_name = "FILE")]
    csv: PathBuf,
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
        image: None,
    };
    let (predictions, metrics, rows, outputs) = match load_csv(&args.csv, &schema) {
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
        Err(DataError::MissingColumn { column, .. }) if column == p.target => {
            let rows = load_rows(&args.csv, &features).with_context(|| columns_hint(&args))?;
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
        args.csv.display(),
        file.digest(),
        p.task,
        p.target
    );
    for (i, v) in predictions.iter().enumerate() {
        match p.task {
            TaskKind::Regression => println!("row {:>6}: {v:.6}", i + 1),
            _ => println!("row {:>6}: class {}", i + 1, *v as i64),
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
        args.csv.display(),
        args.model.display()
    )
}
