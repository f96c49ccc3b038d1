//! `fedchain privacy`: the accountant on the command line, for a researcher choosing a DP-SGD
//! setting before training and an auditor recomputing a figure. Pure arithmetic
//! (`fedchain_protocol::accountant`), so `fedchain-server` carries it too.

use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use fedchain_protocol::accountant::{epsilon_of, noise_multiplier_for};
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
