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
    /// List the ledger's signed checkpoints: tree size, root and the hospitals whose cosignatures
    /// verify, each checked against the trust file. Exit 0 when every signature verifies and the
    /// newest checkpoint carries its quorum, 1 otherwise.
    #[command(group(clap::ArgGroup::new("source").required(true).args(["ledger", "coordinator"])))]
    Checkpoints {
        /// The ledger folder (offline; stop the coordinator or copy the folder first).
        #[arg(long, value_name = "DIR")]
        ledger: Option<PathBuf>,
        /// Or ask a running coordinator's ledger service, as the party of --consortium.
        #[arg(long, value_name = "URL")]
        coordinator: Option<String>,
        /// A party folder from `consortium init`: its trust.txt holds the keys to check with.
        #[arg(long, value_name = "DIR")]
        consortium: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Replay every round from the ledger alone: re-multiply the submitted ciphertexts, re-verify
    /// every decryption share and recombine, re-apply FedAvg and compare model digests, check
    /// signatures against the trusted identity keys, recompute every credit movement. Runs
    /// `audit verify`'s checks first. Exit 0 when everything matches, 1 naming each discrepancy.
    #[command(group(clap::ArgGroup::new("source").required(true).args(["ledger", "coordinator"])))]
    Replay {
        /// The ledger folder (offline; stop the coordinator or copy the folder first).
        #[arg(long, value_name = "DIR")]
        ledger: Option<PathBuf>,
        /// Or mirror the ledger from a running coordinator over its ledger service, as the party
        /// of --consortium (an auditor), checking the records against the latest checkpoint
        /// cosigned by a quorum of hospitals.
        #[arg(long, value_name = "URL")]
        coordinator: Option<String>,
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

/// An error opening the ledger folder `dir`, with what to do when a running coordinator holds
/// it: sled lets one process open a folder at a time, and copying a live folder is not safe.
fn live(e: anyhow::Error, dir: &Path) -> anyhow::Error {
    let busy = e
        .chain()
        .any(|c| c.to_string().contains("is in use by another process"));
    let e = e.context(format!("cannot read the ledger in {}", dir.display()));
    if busy {
        e.context(
            "a running coordinator holds this ledger folder. Audit it live over its ledger \
             service instead: `fedchain audit replay --coordinator URL --consortium PARTY_DIR` \
             (it mirrors and verifies every record) or `fedchain audit checkpoints --coordinator \
             URL --consortium PARTY_DIR`; or stop the coordinator, or copy the folder while it is \
             stopped",
        )
    } else {
        e
    }
}

/// Lists the checkpoints of a ledger folder or a running coordinator, checked against the trust
/// file of the party folder `party`.
fn checkpoints(
    ledger: Option<&Path>,
    url: Option<&str>,
    party: &Path,
    json: bool,
) -> Result<ExitCode> {
    use fedchain_audit::checkpoints;
    use fedchain_consortium::TRUST_FILE;

    let trust_path = party.join(TRUST_FILE);
    let trust = Trust::parse(
        &std::fs::read_to_string(&trust_path)
            .with_context(|| format!("cannot read {}", trust_path.display()))?,
    )?;
    let views = match (ledger, url) {
        (Some(dir), _) => {
            let store = fedchain_ledger::store::Store::open(dir, trust.log.name())
                .map_err(|e| live(e.into(), dir))?;
            checkpoints::of_store(&store, &trust)?
        }
        (None, Some(url)) => crate::serve::runtime()?.block_on(async {
            let ch = crate::dial::connect(url, party).await?;
            let mut client =
                fedchain_proto::v1::ledger_service_client::LedgerServiceClient::new(ch)
                    .max_decoding_message_size(fedchain_proto::limits::MAX_MESSAGE_BYTES);
            checkpoints::of_service(&mut client, &trust)
                .await
                .with_context(|| format!("listing the checkpoints of {url}"))
        })?,
        (None, None) => unreachable!("clap requires one source"),
    };
    let ok = !views.is_empty() && views.iter().all(|v| v.ok);
    if json {
        let v = serde_json::json!({ "ok": ok, "checkpoints": views });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!("{:>8}  {:<16}  {:<7}  cosigners", "size", "root", "quorum");
        for v in &views {
            println!(
                "{:>8}  {:<16}  {:<7}  {}{}",
                v.size,
                &v.root[..v.root.len().min(16)],
                format!("{}/{}", v.cosigners.len(), v.quorum),
                if v.cosigners.is_empty() {
                    "-".to_string()
                } else {
                    v.cosigners.join(", ")
                },
                match (&v.problem, v.ok) {
                    (Some(p), false) => format!("  FAIL: {p}"),
                    (Some(p), true) => format!("  note: {p}"),
                    (None, _) => String::new(),
                }
            );
        }
        println!(
            "{} checkpoints; {}",
            views.len(),
            if ok {
                "every signature verifies and the newest carries its quorum"
            } else if views.is_empty() {
                "no checkpoint was signed yet"
            } else {
                "FAILED"
            }
        );
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Copies the coordinator's ledger into `into` over the ledger service, checked against the trust
/// file of the party folder `party` (see `fedchain_audit::mirror`). Returns a one-line account.
pub async fn mirror(url: &str, party: &Path, into: &Path) -> Result<String> {
    use fedchain_consortium::TRUST_FILE;
    use fedchain_proto::v1 as pb;

    let trust_path = party.join(TRUST_FILE);
    let trust = Trust::parse(
        &std::fs::read_to_string(&trust_path)
            .with_context(|| format!("cannot read {}", trust_path.display()))?,
    )?;
    let ch = crate::dial::connect(url, party).await?;
    let mut client = pb::ledger_service_client::LedgerServiceClient::new(ch)
        .max_decoding_message_size(fedchain_proto::limits::MAX_MESSAGE_BYTES);
    let m = fedchain_audit::mirror(&mut client, &trust, into)
        .await
        .with_context(|| format!("mirroring the ledger of {url}"))?;
    Ok(format!(
        "mirrored {} records and {} blobs from {url}: they reproduce the checkpoint of size {} \
         signed by the log and cosigned by {}",
        m.records,
        m.blobs,
        m.records,
        m.cosigners.join(", ")
    ))
}

fn replay(ledger: &Path, party: &Path, anchors: &[PathBuf], json: bool) -> Result<ExitCode> {
    use fedchain_audit::replay;
    use fedchain_consortium::AuditorFolder;

    let started = std::time::Instant::now();
    let folder = AuditorFolder::open(party)?;
    let mut trust = folder.trust;
    for a in anchors {
        trust.anchors.push(read_anchor(a)?);
    }
    let hospitals = folder.hospitals;
    let pk = folder.public_key;
    let verified = verify(ledger, Some(&trust)).map_err(|e| live(e.into(), ledger))?;
    // Records changed after hospitals cosigned them are `verify`'s finding; replaying them
    // anyway says which rounds they touch.
    let (store, _damaged) = fedchain_ledger::store::Store::open_to_read(ledger, trust.log.name())
        .map_err(|e| live(e.into(), ledger))?;
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
                "  job {} round {:>3}: {} signatures, aggregate {}, {} shares re-verified, model {}, {} credit movements recomputed{}",
                r.job,
                r.round,
                r.signatures_verified,
                if r.aggregate_matches { "matches" } else { "DIFFERS" },
                r.shares_checked,
                match (r.model_checked, r.model_matches) {
                    (false, _) => "not re-derived (an earlier round's is unknown)",
                    (true, true) => "matches",
                    (true, false) => "DIFFERS",
                },
                r.credits_checked,
                // Round 0 pools statistics: there is no model to evaluate.
                if r.round == 0 {
                    String::new()
                } else {
                    format!(", {} evaluations", r.evaluations_verified)
                }
            );
        }
        println!(
            "  jobs' ends: {} credit movements recomputed (deposits returned, escrow refunded); \
             {} cancelled by their researcher; {} declined by a hospital (signed)",
            report.end_credits_checked, report.cancelled, report.declined
        );
        if report.privacy_checked > 0 {
            println!(
                "  privacy: {} hospitals' spending in a round recomputed from the spec, the \
                 declared rows and the rounds taken part in, each within its job's budget",
                report.privacy_checked
            );
        }
        let at = |what: &str, n: Option<u64>| n.map(|n| format!(" {what} {n}")).unwrap_or_default();
        for f in &verified.findings {
            println!("FAIL {}{}: {}", f.object, at("record", f.record), f.problem);
        }
        for d in &report.discrepancies {
            println!(
                "FAIL job {}{}{}: {}: expected {}, found {}",
                d.job,
                at("round", d.round),
                at("record", d.record),
                d.check,
                d.expected,
                d.found
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
pub fn read_anchor(path: &std::path::Path) -> Result<Checkpoint> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    note::checkpoint_in(&text)
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
            let bundle = crate::fhir::export(&ledger, &origin).map_err(|e| live(e, &ledger))?;
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
            coordinator,
            consortium,
            anchor,
            json,
        } => match (ledger, coordinator) {
            (Some(ledger), _) => replay(&ledger, &consortium, &anchor, json),
            (None, Some(url)) => {
                let tmp = tempfile::tempdir()?;
                let mirrored =
                    crate::serve::runtime()?.block_on(mirror(&url, &consortium, tmp.path()))?;
                if !json {
                    println!("{mirrored}");
                }
                replay(tmp.path(), &consortium, &anchor, json)
            }
            (None, None) => unreachable!("clap requires one source"),
        },
        AuditCommand::Checkpoints {
            ledger,
            coordinator,
            consortium,
            json,
        } => checkpoints(ledger.as_deref(), coordinator.as_deref(), &consortium, json),
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
            let report = verify(&ledger, trust.as_ref()).map_err(|e| live(e.into(), &ledger))?;
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
                for (size, why) in &report.superseded_uncosigned {
                    println!(
                        "note: checkpoint at size {size} was superseded before its quorum ({why}); \
                         the newest checkpoint's cosignatures cover its records"
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
