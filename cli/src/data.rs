//! `fedchain data`: split a dataset across hospitals; list the bundled datasets.

use crate::dataset_args::DatasetArgs;
use anyhow::{bail, Context, Result};
use clap::Subcommand;
use fedchain_datasets::{
    partition, write_split_as, write_split_images, Builtin, ImageFormat, Scheme,
};
use std::path::PathBuf;

// Parsed once per run; the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
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
        /// Number of hospitals (or give --names).
        #[arg(long, required_unless_present = "names")]
        hospitals: Option<usize>,
        /// The hospitals' names, in order: each one's rows go to NAME.csv (`hospital-1.csv`...
        /// without it). Use the names of `consortium init --hospitals`, so each file's owner is
        /// plain.
        #[arg(long, value_delimiter = ',', value_name = "NAME,...")]
        names: Vec<String>,
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
        /// What each hospital gets: csv (NAME.csv), or png or dicom (a folder NAME/ of image
        /// files with labels.csv, what a hospital's worker reads images from; for datasets of
        /// images: digits).
        #[arg(long, default_value = "csv", value_name = "csv|png|dicom")]
        format: String,
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
            names,
            scheme,
            alpha,
            seed,
            out,
            force,
            format,
            json,
        } => {
            let scheme = Scheme::parse(&scheme, alpha)?;
            let images = match format.to_ascii_lowercase().as_str() {
                "csv" => None,
                other => {
                    let f: ImageFormat = other.parse()?;
                    let Some(shape) = data.dataset.and_then(|b| b.image_shape()) else {
                        bail!(
                            "--format {other} writes images, and only the bundled digits are \
                             images (1x8x8); use --dataset digits, or --format csv"
                        );
                    };
                    Some((f, shape))
                }
            };
            let ds = data.load()?;
            if !force && folder_has_files(&out)? {
                bail!(
                    "{} is not empty; choose another --out folder or pass --force to overwrite",
                    out.display()
                );
            }
            let hospitals = match (hospitals, names.len()) {
                (Some(n), k) if k > 0 && n != k => {
                    bail!("--hospitals {n} but --names lists {k} names; give one of them, or agree")
                }
                (Some(n), _) => n,
                (None, k) => k,
            };
            for n in &names {
                fedchain_consortium::validate_name(n)?;
            }
            let names = if names.is_empty() {
                (1..=hospitals).map(|k| format!("hospital-{k}")).collect()
            } else {
                names
            };
            let part = partition(&ds, hospitals, scheme, seed)?;
            let summary = match images {
                None => write_split_as(&ds, &part, &out, &names)?,
                Some((f, shape)) => write_split_images(&ds, &part, &out, &names, shape, f)?,
            };
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
                for h in &summary.hospitals {
                    println!(
                        "wrote {}: {} {} for hospital {}",
                        out.join(&h.file).display(),
                        h.rows,
                        if images.is_some() { "images" } else { "rows" },
                        names[h.hospital - 1]
                    );
                }
                println!("wrote {}", out.join("summary.json").display());
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
