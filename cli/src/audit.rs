//! `fedchain audit`: what an auditor runs, with nothing but the ledger folder and public keys.

use anyhow::{Context, Result};
use clap::Subcommand;
use fedchain_ledger::note::{self, Checkpoint};
use fedchain_ledger::verify::{verify, Trust};
use std::path::{Path, PathBuf};
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
    /// Export the ledger for a SIEM: one FHIR R4 AuditEvent per record (IHE BALP style), in a
    /// collection Bundle.
    Export {
        /// The ledger folder.
        #[arg(long, value_name = "DIR")]
        ledger: PathBuf,
        /// Output format.
        #[arg(long, value_parser = ["fhir-auditevent"], default_value = "fhir-auditevent")]
        format: String,
        /// The log's origin (its key name).
        #[arg(long, default_value = "fedchain-log")]
        origin: String,
        /// Write here instead of standard output.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Replay every round from the ledger alone: re-multiply the submitted ciphertexts, re-verify
    /// every decryption share and recombine, re-apply FedAvg and compare model digests, check
    /// signatures against the trusted identity keys, recompute every credit movement. Runs
    /// `audit verify`'s checks first. Exit 0 when everything matches, 1 naming each discrepancy.
    Replay {
        /// The ledger folder (offline; stop the coordinator or copy the folder first).
        #[arg(long, value_name = "DIR")]
        ledger: PathBuf,
        /// A party folder from `consortium init` (an auditor's): its consortium.json, trust.txt
        /// and public.key are the trusted public material.
        #[arg(long, value_name = "DIR")]
        consortium: PathBuf,
        /// Witness state files of hospitals (anchors, as for `audit verify`); repeatable.
        #[arg(long, value_name = "FILE")]
        anchor: Vec<PathBuf>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
}

fn replay(ledger: &Path, party: &Path, anchors: &[PathBuf], json: bool) -> Result<ExitCode> {
    use fedchain_coordinator::consortium::{Consortium, TRUST_FILE};
    use fedchain_coordinator::replay::{replay, TrustedHospital};
    use fedchain_crypto::keys::{PublicKey, PUBLIC_KEY_FILE};
    use fedchain_ledger::note::NoteVerifier;
    use std::collections::BTreeMap;

    let started = std::time::Instant::now();
    let description = Consortium::load(party)?.description;
    let pk = PublicKey::load(&party.join(PUBLIC_KEY_FILE))?;
    anyhow::ensure!(
        hex::encode(pk.digest()) == description.public_key_sha256,
        "{} is not the public key consortium.json names",
        party.join(PUBLIC_KEY_FILE).display()
    );
    let trust_path = party.join(TRUST_FILE);
    let mut trust = Trust::parse(
        &std::fs::read_to_string(&trust_path)
            .with_context(|| format!("reading {}", trust_path.display()))?,
    )?;
    for a in anchors {
        trust.anchors.push(read_anchor(a)?);
    }
    let mut hospitals = BTreeMap::new();
    for h in description.hospitals() {
        let (Some(party), Some(vkey)) = (h.index, h.identity_vkey.as_deref()) else {
            anyhow::bail!(
                "consortium.json: hospital {:?} lacks its index or key",
                h.name
            );
        };
        let identity = NoteVerifier::from_vkey(vkey)?.public_key();
        anyhow::ensure!(
            trust.witnesses.iter().any(|w| w.public_key() == identity),
            "hospital {:?}'s identity key is not in {}",
            h.name,
            trust_path.display()
        );
        hospitals.insert(h.name.clone(), TrustedHospital { party, identity });
    }
    let verified =
        verify(ledger, Some(&trust)).with_context(|| format!("verifying {}", ledger.display()))?;
    let store = fedchain_ledger::store::Store::open(ledger, trust.log.name())
        .with_context(|| format!("opening {}", ledger.display()))?;
    let report = replay(&store, &pk, &hospitals)?;
    drop(store);
    let ok = verified.ok() && report.ok();
    if json {
        let v = serde_json::json!({
            "ok": ok,
            "seconds": started.elapsed().as_secs_f64(),
            "verify": verified,
            "replay": report,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!(
            "ledger {}: {} records, {} jobs, {} rounds replayed in {:.2} s",
            ledger.display(),
            report.records,
            report.jobs,
            report.rounds.len(),
            started.elapsed().as_secs_f64()
        );
        for r in &report.rounds {
            println!(
                "  job {} round {:>3}: {} signatures, aggregate {}, {} shares re-verified, model {}, {} credit movements recomputed",
                r.job,
                r.round,
                r.signatures_verified,
                if r.aggregate_matches { "matches" } else { "DIFFERS" },
                r.shares_checked,
                if r.model_matches { "matches" } else { "DIFFERS" },
                r.credits_checked
            );
        }
        for f in &verified.findings {
            println!("FAIL {} {:?}: {}", f.object, f.record, f.problem);
        }
        for d in &report.discrepancies {
            println!(
                "FAIL job {} round {:?} record {:?}: {}: expected {}, found {}",
                d.job, d.round, d.record, d.check, d.expected, d.found
            );
        }
        println!(
            "{}",
            if ok {
                "verdict: OK".to_string()
            } else {
                format!(
                    "verdict: FAILED ({} problems)",
                    verified.findings.len() + report.discrepancies.len()
                )
            }
        );
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
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
        AuditCommand::Export {
            ledger,
            format: _,
            origin,
            out,
        } => {
            let bundle = crate::fhir::export(&ledger, &origin)?;
            let text = serde_json::to_string_pretty(&bundle)?;
            match out {
                Some(path) => {
                    std::fs::write(&path, text + "\n")
                        .with_context(|| format!("writing {}", path.display()))?;
                    eprintln!(
                        "wrote {} AuditEvents to {}",
                        bundle["total"],
                        path.display()
                    );
                }
                None => println!("{text}"),
            }
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Replay {
            ledger,
            consortium,
            anchor,
            json,
        } => replay(&ledger, &consortium, &anchor, json),
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
