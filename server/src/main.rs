//! `fedchain-server`: the coordinator and the auditor's commands, without libtorch.
//!
//! A coordinator host never trains: it multiplies ciphertexts, checks proofs and keeps the
//! ledger. The `fedchain` binary links libtorch for the hospitals' and researchers' commands, so
//! it needs the torch install (about 4 GB) and maps its libraries into every process. This binary
//! is built from the same command sources (`cli/src/serve.rs`, `audit.rs`, `dial.rs`, `fhir.rs`,
//! `exit.rs`) with only the crates they need, so `fedchain-server coordinator` and `fedchain
//! coordinator` behave identically, and so do the `audit` commands.

#[path = "../../cli/src/audit.rs"]
mod audit;
#[path = "../../cli/src/dial.rs"]
mod dial;
#[path = "../../cli/src/exit.rs"]
mod exit;
#[path = "../../cli/src/fhir.rs"]
mod fhir;
#[path = "../../cli/src/privacy.rs"]
mod privacy;
#[path = "../../cli/src/serve.rs"]
mod serve;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// fedchain for the coordinator's host and for auditors (no libtorch).
#[derive(Parser)]
#[command(name = "fedchain-server", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the coordinator (gRPC over mutual TLS, job lifecycle, ledger).
    Coordinator(serve::CoordinatorArgs),
    /// Audit a ledger without trusting the coordinator.
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// The privacy accountant: what DP-SGD spends, or the noise a budget needs.
    #[command(subcommand)]
    Privacy(privacy::PrivacyCommand),
}

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::Coordinator(args) => serve::coordinator(args).map(|()| ExitCode::SUCCESS),
        // A failed audit is a verdict, not an error: exit 1 after printing the report.
        Command::Audit(cmd) => audit::run(cmd),
        Command::Privacy(cmd) => privacy::run(cmd).map(|()| ExitCode::SUCCESS),
    };
    exit::code(result)
}
