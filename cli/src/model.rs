//! `fedchain model info`: what a model file holds, verified. `fedchain model inspect`: what a
//! TorchScript module would run on a hospital's machine.

use anyhow::{bail, Result};
use clap::Subcommand;
use fedchain_models::torchscript::{inspect, ALLOWED_OPERATORS};
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
    /// Show what a TorchScript module would run: its code, the operators it calls (checked
    /// against the allowlist a worker enforces) and, when they are all allowed, its parameters.
    /// Exits 1 when a worker would refuse it.
    Inspect {
        /// The TorchScript file (`torch.jit.script(m).save(...)`, or a trace).
        file: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// Omit the code (text output only).
        #[arg(long)]
        no_code: bool,
    },
}

pub fn run(cmd: ModelCommand) -> Result<()> {
    match cmd {
        ModelCommand::Inspect {
            file,
            json,
            no_code,
        } => {
            let i = inspect(&file)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&i)?);
            } else {
                println!("file:       {} (sha256:{})", file.display(), i.sha256);
                println!(
                    "code:       sha256:{} (the module's identity: the same after training)",
                    i.code_sha256
                );
                if !no_code {
                    for (path, source) in &i.sources {
                        println!("--- {path} ---");
                        print!("{source}");
                        if !source.ends_with('\n') {
                            println!();
                        }
                    }
                }
                println!(
                    "operators:  {} ({})",
                    i.operators.join(", "),
                    i.operators.len()
                );
                match (&i.parameters, i.num_parameters()) {
                    (Some(ps), Some(n)) => {
                        println!(
                            "parameters: {n} in {} tensors (byte-wise name order, the order of a \
                             job's flat vector):",
                            ps.len()
                        );
                        for p in ps {
                            println!("  {:<32} {:?}", p.name, p.shape);
                        }
                    }
                    _ => println!("parameters: not read (the module was not loaded, see below)"),
                }
            }
            if !i.forbidden.is_empty() {
                bail!(
                    "REFUSED: {} calls {} outside the {} allowed tensor and neural-network \
                     operators: {}; a worker will not load or run it",
                    file.display(),
                    if i.forbidden.len() == 1 {
                        "an operator"
                    } else {
                        "operators"
                    },
                    ALLOWED_OPERATORS.len(),
                    i.forbidden.join(", ")
                );
            }
            if !json {
                println!(
                    "verdict:    allowed: every operator is tensor maths or a neural-network layer"
                );
            }
            Ok(())
        }
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
                Some(p) if p.scaling.image.is_some() => {
                    let shape = p.scaling.image.expect("matched");
                    println!(
                        "applies to: {shape} images (files, channel by channel), label {} ({}), \
                         scaled per channel as the hospitals scaled them: `fedchain predict \
                         --model FILE --images DIR`",
                        p.target, p.task
                    )
                }
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
