//! `fedchain audit`: what an auditor runs, with nothing but the ledger folder and public keys.

use anyhow::{Context, Result};
use clap::Subcommand;
use fedchain_ledger::note::{self, Checkpoint};
use fedchain_ledger::verify::{verify, Trust};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Subcommand, Debug)]
pub enum AuditCommand {
    /// Verify a ledger offline: record encodings, the Merkle log against every checkpoint,
    /// checkpoint signatures and cosignature quorums, consistency between checkpoints, blob
    /// digests, submission signatures and credit invariants. Exit 0 when everything holds, 1
    /// otherwise, naming each failure.
    Verify {
        /// The ledger folder.
        #[arg(long, value_name = "DIR")]
        ledger: PathBuf,
        /// Trusted keys: a file with a `log VKEY` line, `witness VKEY` lines and `quorum N`.
        /// Without it, signatures are not checked (the report says so).
        #[arg(long, value_name = "FILE")]
        trust: Option<PathBuf>,
        /// A checkpoint a hospital cosigned and kept (its witness state file, or any signed
        /// checkpoint note); repeatable. The ledger must still reproduce it: this is what catches
        /// an operator who deletes recent checkpoints and rewrites what followed. Needs --trust.
        #[arg(long, value_name = "FILE", requires = "trust")]
        anchor: Vec<PathBuf>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Reads a checkpoint from a witness state file or a signed note.
fn read_anchor(path: &std::path::Path) -> Result<Checkpoint> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let body = match note::parse(&text) {
        Ok(signed) => signed.text,
        Err(_) => text,
    };
    Checkpoint::from_text(&body)
        .with_context(|| format!("{} does not hold a checkpoint", path.display()))
}

pub fn run(cmd: AuditCommand) -> Result<ExitCode> {
    match cmd {
        AuditCommand::Verify {
            ledger,
            trust,
            anchor,
            json,
        } => {
            let trust = match &trust {
                Some(path) => {
                    let mut t = Trust::parse(
                        &std::fs::read_to_string(path)
                            .with_context(|| format!("reading {}", path.display()))?,
                    )?;
                    for a in &anchor {
                        t.anchors.push(read_anchor(a)?);
                    }
                    Some(t)
                }
                None => None,
            };
            let report = verify(&ledger, trust.as_ref())
                .with_context(|| format!("verifying {}", ledger.display()))?;
            if json {
                let mut v = serde_json::to_value(&report)?;
                v["ok"] = serde_json::Value::Bool(report.ok());
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                println!(
                    "ledger {}: {} records, {} checkpoints (latest covers {}), {} blobs, {} credits in circulation",
                    ledger.display(),
                    report.records,
                    report.checkpoints,
                    report.checkpointed_size,
                    report.blobs,
                    report.credit_supply
                );
                if !report.signatures_checked {
                    println!(
                        "note: no --trust file given, so checkpoint signatures were not checked"
                    );
                }
                if report.records > report.checkpointed_size {
                    println!(
                        "note: the last {} records are not yet covered by a checkpoint",
                        report.records - report.checkpointed_size
                    );
                }
                for f in &report.findings {
                    match f.record {
                        Some(i) => println!("FAIL {} {i}: {}", f.object, f.problem),
                        None => println!("FAIL {}: {}", f.object, f.problem),
                    }
                }
                println!(
                    "{}",
                    if report.ok() {
                        "verdict: OK".to_string()
                    } else {
                        format!("verdict: FAILED ({} problems)", report.findings.len())
                    }
                );
            }
            Ok(if report.ok() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}
