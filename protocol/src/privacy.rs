//! A job's differential privacy: what one round of a hospital's local DP-SGD is as a mechanism,
//! what the rounds it took part in spend, and whether the next round fits the job's budget.
//!
//! A hospital's local training is `local_epochs` epochs of `ceil(rows / batch_size)` steps, each
//! on a Poisson sample of rate `batch_size / rows` (what `fedchain_models::dp::train_dp` does), so
//! everything here follows from the job spec and the rows each hospital declared when it
//! enrolled: the coordinator records it, a hospital checks it against the training it ran, and
//! an auditor recomputes it from the ledger.
//!
//! What it bounds: what the released models (and every aggregate, which is post-processing of
//! the hospitals' noisy updates) reveal about any one training row of a hospital, against anyone
//! who sees them. Each hospital's update is private on its own (the noise is its own), so the
//! bound needs no trust in the other hospitals or the coordinator. Not covered: round 0's pooled
//! feature moments (means and variances of the consortium's rows), the declared row counts and
//! the evaluation figures on held-out rows.

use crate::accountant::{epsilon_of, noise_multiplier_for, AccountantError};
use fedchain_proto::v1::{JobSpec, Privacy};

/// The largest epsilon a job may budget: beyond it a bound says nothing.
pub const MAX_EPSILON: f64 = 100.0;

/// A job's checked privacy parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct JobPrivacy {
    /// The most epsilon any hospital may spend on the job.
    pub epsilon: f64,
    /// The delta of the guarantee.
    pub delta: f64,
    /// Every row's gradient is clipped to this L2 norm.
    pub max_grad_norm: f64,
    /// Noise standard deviation over `max_grad_norm`, the same for every hospital; `None`:
    /// each hospital's own, derived from its rows ([`JobPrivacy::noise_for`]).
    pub noise_multiplier: Option<f64>,
}

impl JobPrivacy {
    /// Checks a spec's `privacy`; the error says which parameter is wrong and what is allowed.
    pub fn check(p: &Privacy) -> Result<JobPrivacy, String> {
        if !(p.epsilon.is_finite() && p.epsilon > 0.0 && p.epsilon <= MAX_EPSILON) {
            return Err(format!(
                "privacy.epsilon must be a positive number of at most {MAX_EPSILON}, got {}",
                p.epsilon
            ));
        }
        if !(p.delta.is_finite() && p.delta > 0.0 && p.delta < 0.01) {
            return Err(format!(
                "privacy.delta must be positive and below 0.01 (below 1 / rows, e.g. 1e-5), got {}",
                p.delta
            ));
        }
        if !(p.max_grad_norm.is_finite() && p.max_grad_norm > 0.0) {
            return Err(format!(
                "privacy.max_grad_norm must be a positive number, got {}",
                p.max_grad_norm
            ));
        }
        // 0 (the field unset): derived for each hospital.
        if !(p.noise_multiplier.is_finite()
            && p.noise_multiplier >= 0.0
            && p.noise_multiplier <= 1e4)
        {
            return Err(format!(
                "privacy.noise_multiplier must be between 0 and 10000, got {} (0, or leave it \
                 out: each hospital derives its own from its rows and the budget)",
                p.noise_multiplier
            ));
        }
        Ok(JobPrivacy {
            epsilon: p.epsilon,
            delta: p.delta,
            max_grad_norm: p.max_grad_norm,
            noise_multiplier: (p.noise_multiplier > 0.0).then_some(p.noise_multiplier),
        })
    }

    /// The job's privacy, if it asks for any (a spec that passed [`crate::validate`]).
    pub fn of(spec: &JobSpec) -> Option<JobPrivacy> {
        spec.privacy.as_ref().and_then(|p| Self::check(p).ok())
    }

    /// The noise multiplier of a hospital of `rows` training rows: the job's, or the smallest
    /// that keeps all of `spec`'s rounds within the budget for such a hospital (a small
    /// hospital's samples are a larger share of its rows, so it needs more noise than a large
    /// one). Each hospital's noise is its own (it protects its own rows), so they need not be
    /// the same; the derivation is deterministic, and every party gets the same figure.
    pub fn noise_for(&self, spec: &JobSpec, rows: u64) -> Result<f64, AccountantError> {
        if let Some(sigma) = self.noise_multiplier {
            return Ok(sigma);
        }
        let m = Mechanism::of(spec, rows);
        noise_multiplier_for(
            m.sampling_rate,
            m.steps.saturating_mul(u64::from(spec.rounds)),
            self.epsilon,
            self.delta,
        )
    }

    /// Epsilon a hospital of `rows` training rows has spent after taking part in `rounds`
    /// training rounds of `spec`.
    pub fn spent(&self, spec: &JobSpec, rows: u64, rounds: u64) -> Result<f64, AccountantError> {
        Ok(self.spend(spec, rows, rounds)?.epsilon)
    }

    /// Everything about such a hospital's spending, each figure computed once: its mechanism
    /// per round, its noise multiplier and the epsilon after `rounds` rounds.
    pub fn spend(&self, spec: &JobSpec, rows: u64, rounds: u64) -> Result<Spend, AccountantError> {
        let mechanism = Mechanism::of(spec, rows);
        let noise_multiplier = self.noise_for(spec, rows)?;
        let epsilon = epsilon_of(
            mechanism.sampling_rate,
            noise_multiplier,
            mechanism.steps.saturating_mul(rounds),
            self.delta,
        )?;
        Ok(Spend {
            mechanism,
            noise_multiplier,
            epsilon,
        })
    }
}

/// A hospital's spending on a job ([`JobPrivacy::spend`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spend {
    /// Its mechanism per round.
    pub mechanism: Mechanism,
    /// Its noise multiplier.
    pub noise_multiplier: f64,
    /// Epsilon spent.
    pub epsilon: f64,
}

/// One hospital's local training in one round, as the accountant sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Mechanism {
    /// Probability that a row is in a step's sample: `batch_size / rows`, at most 1.
    pub sampling_rate: f64,
    /// Steps per round: `local_epochs * ceil(rows / batch_size)`.
    pub steps: u64,
}

impl Mechanism {
    /// The mechanism of `spec`'s local training on `rows` rows.
    pub fn of(spec: &JobSpec, rows: u64) -> Mechanism {
        let batch = u64::from(spec.batch_size.max(1));
        let rows = rows.max(1);
        Mechanism {
            sampling_rate: (batch as f64 / rows as f64).min(1.0),
            steps: u64::from(spec.local_epochs).saturating_mul(rows.div_ceil(batch)),
        }
    }
}

/// A hospital about to take part in another round.
#[derive(Debug, Clone, PartialEq)]
pub struct Participant<'a> {
    /// Its name.
    pub hospital: &'a str,
    /// Its declared training rows.
    pub rows: u64,
    /// Training rounds of this job it took part in so far.
    pub rounds: u64,
}

/// Why the next round does not fit the budget: the first hospital it would take past it.
#[derive(Debug, Clone, PartialEq)]
pub struct OverBudget {
    /// The hospital.
    pub hospital: String,
    /// What it would have spent after the round.
    pub epsilon: f64,
    /// The job's budget.
    pub budget: f64,
}

impl std::fmt::Display for OverBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the next round would take {} to epsilon {:.4}, above the job's budget of {}",
            self.hospital, self.epsilon, self.budget
        )
    }
}

/// Whether one more round, taken by every hospital in `who`, keeps each within the budget.
pub fn next_round_fits<'a>(
    privacy: &JobPrivacy,
    spec: &JobSpec,
    who: impl IntoIterator<Item = Participant<'a>>,
) -> Result<(), OverBudget> {
    for p in who {
        // A figure that cannot be computed (a parameter out of the accountant's range) is no
        // guarantee: the round does not run.
        let epsilon = privacy
            .spent(spec, p.rows, p.rounds + 1)
            .unwrap_or(f64::INFINITY);
        if epsilon > privacy.epsilon {
            return Err(OverBudget {
                hospital: p.hospital.to_string(),
                epsilon,
                budget: privacy.epsilon,
            });
        }
    }
    Ok(())
}

/// The summary of a job the budget stopped after `last` rounds of the `rounds` it asked for:
/// what `JobFinished` says before the final figures.
pub fn budget_stop_reason(last: u64, rounds: u64, over: &OverBudget) -> String {
    format!("stopped by the privacy budget after round {last} of {rounds}: {over}")
}

/// Whether two epsilons are the same figure (a recorded one and its recomputation, which may
/// differ in the last bits after a round trip through text).
pub fn same_epsilon(recorded: f64, recomputed: f64) -> bool {
    (recorded - recomputed).abs() <= 1e-9 * recomputed.abs().max(1e-9)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(epochs: u32, batch: u32, p: Privacy) -> JobSpec {
        JobSpec {
            local_epochs: epochs,
            batch_size: batch,
            privacy: Some(p),
            ..Default::default()
        }
    }

    fn privacy(epsilon: f64, sigma: f64) -> Privacy {
        Privacy {
            epsilon,
            delta: 1e-5,
            max_grad_norm: 1.0,
            noise_multiplier: sigma,
        }
    }

    #[test]
    fn the_mechanism_is_what_train_dp_runs() {
        let s = spec(3, 32, privacy(3.0, 1.0));
        // 100 rows: 4 steps per epoch (the last sample is as large as any), rate 0.32.
        assert_eq!(
            Mechanism::of(&s, 100),
            Mechanism {
                sampling_rate: 0.32,
                steps: 12
            }
        );
        // Fewer rows than a batch: every row in every step, one step per epoch.
        assert_eq!(
            Mechanism::of(&s, 10),
            Mechanism {
                sampling_rate: 1.0,
                steps: 3
            }
        );
    }

    #[test]
    fn bad_parameters_are_refused_naming_them() {
        for (p, says) in [
            (privacy(0.0, 1.0), "privacy.epsilon"),
            (privacy(f64::NAN, 1.0), "privacy.epsilon"),
            (privacy(1000.0, 1.0), "privacy.epsilon"),
            (privacy(1.0, -1.0), "privacy.noise_multiplier"),
            (privacy(1.0, f64::NAN), "each hospital derives its own"),
            (
                Privacy {
                    delta: 0.5,
                    ..privacy(1.0, 1.0)
                },
                "privacy.delta",
            ),
            (
                Privacy {
                    max_grad_norm: 0.0,
                    ..privacy(1.0, 1.0)
                },
                "privacy.max_grad_norm",
            ),
        ] {
            let e = JobPrivacy::check(&p).unwrap_err();
            assert!(e.contains(says), "{e} lacks {says}");
        }
    }

    /// Spending composes over rounds, grows with the rounds taken, and the budget stops the first
    /// round that would pass it for any participant.
    #[test]
    fn the_budget_admits_rounds_until_one_would_pass_it() {
        let s = spec(1, 50, privacy(2.5, 1.5));
        let p = JobPrivacy::of(&s).unwrap();
        let one = p.spent(&s, 500, 1).unwrap();
        let two = p.spent(&s, 500, 2).unwrap();
        assert!(0.0 < one && one < two, "{one} {two}");
        // Composing rounds is composing their steps.
        let m = Mechanism::of(&s, 500);
        assert_eq!(
            two,
            epsilon_of(m.sampling_rate, 1.5, 2 * m.steps, 1e-5).unwrap()
        );
        let fits = (0..100)
            .take_while(|&r| p.spent(&s, 500, r + 1).unwrap() <= 2.5)
            .count() as u64;
        assert!(fits >= 2, "{fits}");
        let at = |rounds: u64| Participant {
            hospital: "h1",
            rows: 500,
            rounds,
        };
        assert!(next_round_fits(&p, &s, [at(fits - 1)]).is_ok());
        let over = next_round_fits(&p, &s, [at(fits)]).unwrap_err();
        assert_eq!(over.hospital, "h1");
        assert!(over.epsilon > 2.5);
        // A smaller hospital (larger sampling rate) spends more per round: fewer rounds fit it,
        // and it is the one named when it is the one the next round would take past the budget.
        let fits_small = (0..100)
            .take_while(|&r| p.spent(&s, 120, r + 1).unwrap() <= 2.5)
            .count() as u64;
        assert!(fits_small < fits, "{fits_small} {fits}");
        let small = Participant {
            hospital: "h2",
            rows: 120,
            rounds: fits_small,
        };
        let over = next_round_fits(&p, &s, [at(fits_small), small]).unwrap_err();
        assert_eq!(over.hospital, "h2");
        assert!(
            budget_stop_reason(3, 10, &next_round_fits(&p, &s, [at(fits)]).unwrap_err())
                .starts_with(
                "stopped by the privacy budget after round 3 of 10: the next round would take h1"
            )
        );
    }

    /// Without a noise multiplier in the spec, each hospital's is derived from its rows: all the
    /// job's rounds spend at most the budget, nearly all of it, and a small hospital gets more
    /// noise than a large one.
    #[test]
    fn a_derived_noise_multiplier_fits_each_hospital_to_the_budget() {
        let s = JobSpec {
            rounds: 8,
            ..spec(2, 32, privacy(3.0, 0.0))
        };
        let p = JobPrivacy::of(&s).unwrap();
        assert_eq!(p.noise_multiplier, None);
        let (small, large) = (p.noise_for(&s, 15).unwrap(), p.noise_for(&s, 400).unwrap());
        assert!(small > large && large > 0.5, "{small} {large}");
        for rows in [15, 40, 120, 400, 5000] {
            let all = p.spent(&s, rows, 8).unwrap();
            assert!(all <= 3.0 && all > 2.9, "{rows} rows: {all}");
            assert!(next_round_fits(
                &p,
                &s,
                [Participant {
                    hospital: "h",
                    rows,
                    rounds: 7
                }]
            )
            .is_ok());
        }
        // Given, it is everyone's.
        let fixed = JobPrivacy::of(&spec(2, 32, privacy(3.0, 1.3))).unwrap();
        assert_eq!(fixed.noise_for(&s, 15).unwrap(), 1.3);
        assert_eq!(fixed.noise_for(&s, 400).unwrap(), 1.3);
    }

    #[test]
    fn epsilons_compare_to_the_last_bits_only() {
        assert!(same_epsilon(1.234_567_890_1, 1.234_567_890_1));
        assert!(same_epsilon(1.0 + 1e-12, 1.0));
        assert!(!same_epsilon(1.0001, 1.0));
        assert!(!same_epsilon(0.9, 1.0));
    }
}
