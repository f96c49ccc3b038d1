//! `fedchain data`: split a dataset across hospitals; list the bundled datasets.

use crate::dataset_args::DatasetArgs;
use anyhow::{bail, Context, Result};
use clap::Subcommand;
use fedchain_datasets::{partition, write_split, Builtin, Scheme};
use std::path::PathBuf;

#[derive(Subcommand, Debug)]
pub enum DataCommand {
    /// Split a dataset across hospitals: one CSV per hospital plus summary.json.
    ///
    /// Schemes, as real consortia look: iid (equal random shares), dirichlet (label skew: each
    /// class spread over hospitals by Dirichlet(alpha); smaller alpha = more skew), quantity (size
    /// skew: hospital sizes by Dirichlet(alpha), labels iid).
    Split {
        #[command(flatten)]
        data: DatasetArgs,
        /// Number of hospitals.
        #[arg(long)]
        hospitals: usize,
        /// iid, dirichlet or quantity.
        #[arg(long, default_value = "iid")]
        scheme: String,
        /// Concentration for dirichlet and quantity (default 0.5).
        #[arg(long)]
        alpha: Option<f64>,
        /// Seed of the random assignment.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Output folder (created; must be empty unless --force).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Overwrite files in a non-empty output folder.
        #[arg(long)]
        force: bool,
        /// Print the summary as JSON.
        #[arg(long)]
        json: bool,
    },
    /// List the bundled clinical datasets.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(cmd: DataCommand) -> Result<()> {
    match cmd {
        DataCommand::Split {
            data,
            hospitals,
            scheme,
            alpha,
            seed,
            out,
            force,
            json,
        } => {
            let scheme = Scheme::parse(&scheme, alpha)?;
            let ds = data.load()?;
            if !force && folder_has_files(&out)? {
                bail!(
                    "{} is not empty; choose another --out folder or pass --force to overwrite",
                    out.display()
                );
            }
            let part = partition(&ds, hospitals, scheme, seed)?;
            let summary = write_split(&ds, &part, &out)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&summary)?);
            } else {
                println!(
                    "split {} ({} rows) across {} hospitals, scheme {}, seed {}:",
                    ds.name(),
                    ds.len(),
                    hospitals,
                    scheme,
                    seed
                );
                println!("{}", summary.to_table());
                println!(
                    "wrote {}/hospital-1.csv .. hospital-{}.csv and summary.json",
                    out.display(),
                    hospitals
                );
            }
            Ok(())
        }
        DataCommand::List { json } => {
            if json {
                let list: Vec<_> = Builtin::ALL
                    .iter()
                    .map(|b| serde_json::json!({"name": b.name(), "description": b.describe()}))
                    .collect();
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                for b in Builtin::ALL {
                    println!("{:<14} {}", b.name(), b.describe());
                }
                println!("\nProvenance and licences: datasets/data/PROVENANCE.md");
            }
            Ok(())
        }
    }
}

fn folder_has_files(dir: &std::path::Path) -> Result<bool> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => Ok(entries.next().is_some()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e).with_context(|| format!("reading {}", dir.display())),
    }
}
