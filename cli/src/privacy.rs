//! `fedchain privacy`: the accountant on the command line, for a researcher choosing a DP-SGD
//! setting before training and an auditor recomputing a figure (pure arithmetic,
//! `fedchain_protocol::accountant`), and the privacy each hospital spent, read from a ledger.
//! No libtorch, so `fedchain-server` carries it too.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use fedchain_ledger::record::Body;
use fedchain_ledger::verify::Trust;
use fedchain_protocol::accountant::{epsilon_of, noise_multiplier_for};
use fedchain_protocol::privacy::JobPrivacy;
use prost::Message;
use serde::Serialize;

#[derive(Subcommand, Debug)]
pub enum PrivacyCommand {
    /// The epsilon that DP-SGD spends: STEPS steps with noise multiplier NOISE on Poisson
    /// samples of rate Q (batch size / rows), at DELTA.
    Epsilon {
        #[command(flatten)]
        run: RunArgs,
        /// Noise standard deviation over the clipping norm.
        #[arg(long)]
        noise_multiplier: f64,
    },
    /// The smallest noise multiplier that keeps such a run within EPSILON at DELTA.
    Noise {
        #[command(flatten)]
        run: RunArgs,
        /// The privacy budget.
        #[arg(long)]
        epsilon: f64,
    },
    /// What each hospital spent on each job with differential privacy, as the ledger records it
    /// (`PrivacySpent`, which `fedchain audit replay` recomputes), and what is left of each job's
    /// budget.
    Report {
        /// The ledger folder (a copy, or one no coordinator is running on).
        #[arg(long, value_name = "DIR")]
        ledger: PathBuf,
        /// A party folder of the consortium (for the log's name in its trust file).
        #[arg(long, value_name = "PARTY_DIR")]
        consortium: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// One hospital's spending on one job.
#[derive(Debug, Serialize)]
struct Spending {
    hospital: String,
    job: u64,
    /// Training rounds it took part in.
    rounds: u64,
    /// Epsilon spent on the job (the latest `PrivacySpent` figure).
    epsilon: f64,
    delta: f64,
    /// The job's budget (none when the job's spec is not on the ledger).
    budget: Option<f64>,
    /// What is left of it.
    left: Option<f64>,
    /// The record of the latest figure.
    record: u64,
}

/// A hospital's spending over every job: the sums, by basic composition (an upper bound).
#[derive(Debug, Serialize)]
struct Total {
    hospital: String,
    jobs: usize,
    epsilon: f64,
    delta: f64,
}

#[derive(Debug, Serialize)]
struct Report {
    records: u64,
    spending: Vec<Spending>,
    totals: Vec<Total>,
}

fn report(ledger: &Path, consortium: &Path) -> Result<Report> {
    let trust_path = consortium.join(fedchain_consortium::TRUST_FILE);
    let trust = Trust::parse(
        &std::fs::read_to_string(&trust_path)
            .with_context(|| format!("cannot read {}", trust_path.display()))?,
    )?;
    if !ledger.join(fedchain_ledger::store::DB_DIR).is_dir() {
        bail!(
            "{} holds no ledger (no {} folder): name the coordinator's ledger folder, or a copy",
            ledger.display(),
            fedchain_ledger::store::DB_DIR
        );
    }
    let store = fedchain_ledger::store::Store::open(ledger, trust.log.name())
        .with_context(|| format!("cannot read the ledger in {}", ledger.display()))?;
    let mut budgets: BTreeMap<u64, JobPrivacy> = BTreeMap::new();
    let mut spent: BTreeMap<(String, u64), Spending> = BTreeMap::new();
    for index in 0..store.len() {
        let (record, _) = store.record(index)?;
        match record.body {
            Body::JobSubmitted { job, spec, .. } => {
                let privacy = store
                    .blob(&spec)?
                    .and_then(|b| fedchain_proto::v1::JobSpec::decode(b.as_slice()).ok())
                    .and_then(|s| JobPrivacy::of(&s));
                if let Some(p) = privacy {
                    budgets.insert(job, p);
                }
            }
            Body::PrivacySpent {
                job,
                delta,
                spent: s,
                ..
            } => {
                let budget = budgets.get(&job).map(|p| p.epsilon);
                for h in s {
                    spent.insert(
                        (h.hospital.clone(), job),
                        Spending {
                            hospital: h.hospital,
                            job,
                            rounds: h.rounds,
                            epsilon: h.epsilon,
                            delta,
                            budget,
                            left: budget.map(|b| b - h.epsilon),
                            record: index,
                        },
                    );
                }
            }
            _ => {}
        }
    }
    let mut totals: BTreeMap<String, Total> = BTreeMap::new();
    for s in spent.values() {
        let t = totals.entry(s.hospital.clone()).or_insert_with(|| Total {
            hospital: s.hospital.clone(),
            jobs: 0,
            epsilon: 0.0,
            delta: 0.0,
        });
        t.jobs += 1;
        t.epsilon += s.epsilon;
        t.delta += s.delta;
    }
    Ok(Report {
        records: store.len(),
        spending: spent.into_values().collect(),
        totals: totals.into_values().collect(),
    })
}

/// A DP-SGD run, as the accountant sees it.
#[derive(Args, Debug)]
pub struct RunArgs {
    /// Sampling rate: a row's probability of being in a step's sample (batch size / rows).
    #[arg(long, value_name = "Q")]
    sampling_rate: f64,
    /// Optimizer steps (epochs x rows / batch size).
    #[arg(long)]
    steps: u64,
    /// The delta of (epsilon, delta).
    #[arg(long, default_value_t = 1e-5)]
    delta: f64,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Serialize)]
struct Figure {
    sampling_rate: f64,
    steps: u64,
    delta: f64,
    noise_multiplier: f64,
    epsilon: f64,
}

pub fn run(cmd: PrivacyCommand) -> Result<()> {
    let (figure, json) = match cmd {
        PrivacyCommand::Report {
            ledger,
            consortium,
            json,
        } => {
            let r = report(&ledger, &consortium)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
                return Ok(());
            }
            if r.spending.is_empty() {
                println!(
                    "no job with differential privacy has spent anything in the {} records of {}",
                    r.records,
                    ledger.display()
                );
                return Ok(());
            }
            println!(
                "{:<16} {:>5} {:>7} {:>10} {:>8} {:>10} {:>10}",
                "hospital", "job", "rounds", "epsilon", "delta", "budget", "left"
            );
            let shown = |v: Option<f64>| v.map_or("?".to_string(), |v| format!("{v:.4}"));
            for s in &r.spending {
                println!(
                    "{:<16} {:>5} {:>7} {:>10.4} {:>8.0e} {:>10} {:>10}",
                    s.hospital,
                    s.job,
                    s.rounds,
                    s.epsilon,
                    s.delta,
                    shown(s.budget),
                    shown(s.left)
                );
            }
            println!("over all jobs (sums: an upper bound by basic composition):");
            for t in &r.totals {
                println!(
                    "  {}: epsilon {:.4}, delta {:.0e} over {} job(s)",
                    t.hospital, t.epsilon, t.delta, t.jobs
                );
            }
            return Ok(());
        }
        PrivacyCommand::Epsilon {
            run,
            noise_multiplier,
        } => {
            if !(noise_multiplier.is_finite() && noise_multiplier >= 0.0) {
                bail!(
                    "--noise-multiplier must be zero or a positive number, got {noise_multiplier}"
                );
            }
            let epsilon = epsilon_of(run.sampling_rate, noise_multiplier, run.steps, run.delta)?;
            (figure(&run, noise_multiplier, epsilon), run.json)
        }
        PrivacyCommand::Noise { run, epsilon } => {
            let sigma = noise_multiplier_for(run.sampling_rate, run.steps, epsilon, run.delta)?;
            let spent = epsilon_of(run.sampling_rate, sigma, run.steps, run.delta)?;
            (figure(&run, sigma, spent), run.json)
        }
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&figure)?);
    } else {
        println!(
            "{} steps on Poisson samples of rate {} with noise multiplier {:.4}: epsilon {:.4} at \
             delta {:e} (Rényi DP accountant)",
            figure.steps,
            figure.sampling_rate,
            figure.noise_multiplier,
            figure.epsilon,
            figure.delta
        );
    }
    Ok(())
}

fn figure(run: &RunArgs, noise_multiplier: f64, epsilon: f64) -> Figure {
    Figure {
        sampling_rate: run.sampling_rate,
        steps: run.steps,
        delta: run.delta,
        noise_multiplier,
        epsilon,
    }
}
