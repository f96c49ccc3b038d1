//! Choosing a dataset on the command line: a bundled one by name, or a hospital's own CSV export
//! with its schema.

use anyhow::{bail, Context, Result};
use clap::Args;
use fedchain_datasets::{load_csv, Builtin, Dataset, Schema, TaskKind};
use std::path::PathBuf;

#[derive(Args, Debug, Clone)]
#[group(required = true, multiple = false, id = "source")]
pub struct DatasetArgs {
    /// A bundled dataset: breast-cancer, diabetes or digits.
    #[arg(long, group = "source")]
    pub dataset: Option<Builtin>,
    /// Your own CSV file (header row, numeric cells). Needs --target and --task.
    #[arg(long, group = "source", value_name = "FILE")]
    pub csv: Option<PathBuf>,
    #[command(flatten)]
    pub schema: SchemaArgs,
}

#[derive(Args, Debug, Clone)]
pub struct SchemaArgs {
    /// With --csv: the target column.
    #[arg(long, requires = "csv", value_name = "COLUMN")]
    pub target: Option<String>,
    /// With --csv: the task: binary, regression, or multiclass:K for K classes.
    #[arg(long, requires = "csv", value_parser = parse_task)]
    pub task: Option<TaskKind>,
    /// With --csv: feature columns, comma-separated (default: every column but the target).
    #[arg(long, requires = "csv", value_delimiter = ',', value_name = "COLUMNS")]
    pub features: Option<Vec<String>>,
}

fn parse_task(s: &str) -> Result<TaskKind, String> {
    match s.to_ascii_lowercase().as_str() {
        "binary" => Ok(TaskKind::Binary),
        "regression" => Ok(TaskKind::Regression),
        other => match other.strip_prefix("multiclass:").map(str::parse::<usize>) {
            Some(Ok(classes)) if classes >= 2 => Ok(TaskKind::Multiclass { classes }),
            _ => Err(format!(
                "'{s}' is not a task; use binary, regression or multiclass:K (K >= 2 classes)"
            )),
        },
    }
}

impl DatasetArgs {
    /// Loads the chosen dataset.
    pub fn load(&self) -> Result<Dataset> {
        if let Some(b) = self.dataset {
            return b
                .load()
                .with_context(|| format!("loading bundled dataset {b}"));
        }
        let Some(path) = &self.csv else {
            bail!("choose a dataset with --dataset NAME or --csv FILE");
        };
        let (Some(target), Some(task)) = (&self.schema.target, self.schema.task) else {
            bail!(
                "--csv needs --target COLUMN and --task binary|regression|multiclass:K to know what to learn"
            );
        };
        let schema = Schema {
            features: self.schema.features.clone(),
            target: target.clone(),
            task,
            image: None,
        };
        Ok(load_csv(path, &schema)?)
    }
}
