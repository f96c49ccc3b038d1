//! `fedchain`: the command-line tool of the fedchain consortium.
//!
//! Thin adapters over the library crates: argument parsing, progress bars and output formats live
//! here; every computation lives in a library. Only this binary uses `anyhow`.

mod bench;
mod data;
mod dataset_args;
mod demo;
mod keys;
mod model;
mod train;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// Privacy-preserving federated learning between hospitals, with an auditable ledger.
#[derive(Parser)]
#[command(name = "fedchain", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Work with datasets: split one across hospitals, list the bundled ones.
    #[command(subcommand)]
    Data(data::DataCommand),
    /// Train a model centrally on one machine (the reference federated training must match).
    Train(train::TrainArgs),
    /// Inspect model files.
    #[command(subcommand)]
    Model(model::ModelCommand),
    /// Run the demo: today the centralized baseline on the three bundled clinical datasets.
    Demo(demo::DemoArgs),
    /// Threshold encryption keys: the dealer ceremony and share checks.
    #[command(subcommand)]
    Keys(keys::KeysCommand),
    /// Measure performance on this machine.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Data(cmd) => data::run(cmd),
        Command::Train(args) => train::run(args),
        Command::Model(cmd) => model::run(cmd),
        Command::Demo(args) => demo::run(args),
        Command::Keys(cmd) => keys::run(cmd),
        Command::Bench(cmd) => bench::run(cmd),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            // Library errors often repeat their source in their own message; print a cause only
            // when it adds something.
            let mut shown = e.to_string();
            for cause in e.chain().skip(1) {
                let text = cause.to_string();
                if !shown.contains(&text) {
                    eprintln!("  caused by: {text}");
                }
                shown = text;
            }
            ExitCode::FAILURE
        }
    }
}
