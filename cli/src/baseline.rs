//! `fedchain demo --centralized`: the centralized baseline on the three bundled clinical datasets.
//!
//! These numbers are the reference the federated, encrypted demo is compared with.

use crate::train::{run_training, HyperArgs, TrainOutcome};
use anyhow::Result;
use fedchain_datasets::Builtin;
use fedchain_models::{describe_device, pick_device, DeviceChoice, ModelKind};
use serde_json::json;

pub struct BaselineArgs {
    pub seed: u64,
    pub device: DeviceChoice,
    pub json: bool,
}

const RUNS: [(Builtin, ModelKind); 3] = [
    (Builtin::BreastCancer, ModelKind::Mlp),
    (Builtin::Digits, ModelKind::Cnn),
    (Builtin::Diabetes, ModelKind::Mlp),
];

pub fn run(args: BaselineArgs) -> Result<()> {
    let device = pick_device(args.device)?;
    if !args.json {
        println!("fedchain demo: centralized baseline");
        println!(
            "  One machine trains on each bundled clinical dataset: the reference figures for the \
             federated, encrypted demo (fedchain demo)."
        );
        println!("  device: {}\n", describe_device(device));
    }
    let hyper = HyperArgs {
        seed: args.seed,
        test_fraction: 0.2,
        device: args.device,
        ..HyperArgs::default()
    };
    let mut outcomes: Vec<TrainOutcome> = Vec::new();
    for (dataset, kind) in RUNS {
        let data = dataset.load()?;
        let label = format!("{dataset} / {kind}");
        let o = run_training(&data, kind, None, &hyper, None, !args.json, &label)?;
        if !args.json {
            println!(
                "{:<20} {:<62} test {}",
                label,
                format!("{} ({} params)", o.model, o.parameters),
                o.test
            );
        }
        outcomes.push(o);
    }
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({ "mode": "centralized", "runs": outcomes }))?
        );
    } else {
        let total: f64 = outcomes.iter().map(|o| o.seconds).sum();
        println!("\nall three trained in {total:.1} s. Try: fedchain train --dataset breast-cancer --model mlp --seed 1");
    }
    Ok(())
}
