//! `fedchain`: the command-line tool of the fedchain consortium.
//!
//! Thin adapters over the library crates: argument parsing, progress bars and output formats live
//! here; every computation lives in a library. Only this binary uses `anyhow`.

mod audit;
mod baseline;
mod bench;
mod bench_dashboard;
mod bench_dp;
mod bench_round;
mod consortium;
mod dashboard;
mod data;
mod dataset_args;
mod demo;
mod dial;
mod exit;
mod fhir;
mod job;
mod keys;
mod model;
mod predict;
mod privacy;
mod serve;
mod simulation;
mod train;
mod work;

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
    /// Apply a released model to raw rows: predictions, and the metrics when the rows carry the
    /// target.
    Predict(predict::PredictArgs),
    /// Run the demo: a whole encrypted federated job on loopback (consortium, coordinator, three
    /// hospital workers, researcher, auditor).
    Demo(demo::DemoArgs),
    /// Run the coordinator (gRPC over mutual TLS, job lifecycle, ledger).
    Coordinator(serve::CoordinatorArgs),
    /// Run a hospital's worker (local training, encryption, decryption shares, cosigning).
    Worker(work::WorkerArgs),
    /// Submit, follow and download jobs (researchers).
    #[command(subcommand)]
    Job(job::JobCommand),
    /// Audit a ledger without trusting the coordinator.
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// Provision a consortium: CA, role certificates, identity keys, threshold key ceremony.
    #[command(subcommand)]
    Consortium(consortium::ConsortiumCommand),
    /// Threshold encryption keys: the dealer ceremony and share checks.
    #[command(subcommand)]
    Keys(keys::KeysCommand),
    /// Measure performance on this machine.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// The privacy accountant: what DP-SGD spends, or the noise a budget needs.
    #[command(subcommand)]
    Privacy(privacy::PrivacyCommand),
    /// Serve a read-only web dashboard of a ledger: jobs, rounds, checkpoints, credits,
    /// parties, each figure re-derived by the auditor's replay before it is drawn.
    Dashboard(dashboard::DashboardArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let done = |r: anyhow::Result<()>| r.map(|()| ExitCode::SUCCESS);
    let result = match cli.command {
        Command::Data(cmd) => done(data::run(cmd)),
        Command::Train(args) => done(train::run(args)),
        Command::Model(cmd) => done(model::run(cmd)),
        Command::Predict(args) => done(predict::run(args)),
        Command::Demo(args) => done(demo::run(args)),
        Command::Coordinator(args) => done(serve::coordinator(args)),
        Command::Worker(args) => done(work::worker(args)),
        Command::Job(cmd) => job::run(cmd),
        // A failed audit is a verdict, not an error: exit 1 after printing the report.
        Command::Audit(cmd) => audit::run(cmd),
        Command::Consortium(cmd) => done(consortium::run(cmd)),
        Command::Keys(cmd) => done(keys::run(cmd)),
        Command::Bench(cmd) => done(bench::run(cmd)),
        Command::Privacy(cmd) => done(privacy::run(cmd)),
        Command::Dashboard(args) => done(dashboard::run(args)),
    };
    exit::code(result)
}
