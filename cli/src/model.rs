//! `fedchain model info`: what a model file holds, verified.

use anyhow::Result;
use clap::Subcommand;
use fedchain_models::{layout, ModelFile};
use serde_json::json;
use std::path::PathBuf;

#[derive(Subcommand, Debug)]
pub enum ModelCommand {
    /// Show a model file's architecture, parameter layout and digest (after verifying it).
    Info {
        /// The .safetensors file.
        file: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(cmd: ModelCommand) -> Result<()> {
    match cmd {
        ModelCommand::Info { file, json } => {
            let m = ModelFile::load(&file)?;
            let tensors = layout(m.spec());
            if json {
                let out = json!({
                    "file": file,
                    "spec": m.spec(),
                    "parameters": m.params().len(),
                    "digest": m.digest().to_hex(),
                    "tensors": tensors,
                    "preprocessing": m.preprocessing(),
                });
                println!("{}", serde_json::to_string_pretty(&out)?);
                return Ok(());
            }
            println!("file:       {}", file.display());
            println!("model:      {}", m.spec());
            println!("spec:       {}", m.spec().canonical_json());
            println!("parameters: {}", m.params().len());
            println!("digest:     sha256:{} (verified)", m.digest());
            match m.preprocessing() {
                Some(p) => {
                    println!(
                    "applies to: rows of {} feature columns ({} ...), target {} ({}), scaled as \
                     the hospitals scaled them: `fedchain predict --model FILE --csv ROWS`",
                    p.scaling.feature_names.len(),
                    p.scaling.feature_names.first().map(String::as_str).unwrap_or(""),
                    p.target,
                    p.task
                )
                }
                None => println!("applies to: no preprocessing recorded (scale rows yourself)"),
            }
            println!("tensors (flat order):");
            for t in tensors {
                println!(
                    "  {:<16} {:<16} offset {}",
                    t.name,
                    format!("{:?}", t.shape),
                    t.offset
                );
            }
            Ok(())
        }
    }
}
