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
//!
//! **Distributed noise** (`privacy.distributed`): each round is one full-batch gradient step.
//! Every participant sums its rows' gradients, each clipped to `max_grad_norm`, multiplies the
//! sum by `-learning_rate`, encodes it as integers ([`DistributedNoise`]: deterministic rounding
//! at a scale that makes the rounding add at most 1 % to the sensitivity) and adds discrete
//! Gaussian noise of variance `sigma^2 Delta^2 / m`, `m` the job's `min_participants`. Hospitals
//! decrypt only aggregates of at least `m` updates, so each decrypted aggregate carries at least
//! the whole noise `sigma Delta`, and with `k` participants `sigma sqrt(k / m)`. The coordinator
//! applies `global + aggregate / rows summed`: gradient descent on the mean clipped gradient.
//! A round spends, for each participant's rows, the RDP of a sum of `k` discrete Gaussians
//! (Kairouz, Liu and Steinke, ICML 2021) without sampling; it is computed for the actual
//! participants of each round ([`JobPrivacy::spend_in`]). A round may open, and a hospital
//! trains, only if the worst case (`m` participants) keeps it within the budget.
//!
//! What distributed noise assumes, unlike local noise: every participant adds its share, and
//! nobody learns another's share or update. The threshold decryption gives that against the
//! coordinator and any coalition of fewer than `t` hospitals that does not include the
//! participants whose noise it would remove; a participant who knows its own share can subtract
//! it, so against a coalition of `c` participants the noise left is `sigma sqrt((k - c) / m)`.
//! The sampler compares `f64` exponentials (not the exact arithmetic of Canonne, Kamath and
//! Steinke) and truncates at 12 standard deviations (a draw past it has probability below
//! 1e-31).

use crate::accountant::{discrete_sum_tau, epsilon_of, noise_multiplier_for, AccountantError, Rdp};
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
    /// Distributed noise: one full-batch step a round, noise shared among the participants.
    pub distributed: bool,
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
            distributed: p.distributed,
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
        if self.distributed {
            // One noise for the aggregate: the smallest that keeps all rounds within the
            // budget for a hospital whose every row is in every step, at `m` participants.
            return noise_multiplier_for(1.0, u64::from(spec.rounds), self.epsilon, self.delta);
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
    /// per round, its noise multiplier and the epsilon after `rounds` rounds. With distributed
    /// noise, the worst case: every round with the fewest participants a round may decrypt.
    pub fn spend(&self, spec: &JobSpec, rows: u64, rounds: u64) -> Result<Spend, AccountantError> {
        if self.distributed {
            let fewest = u64::from(spec.min_participants);
            let history = vec![fewest; usize::try_from(rounds).unwrap_or(usize::MAX)];
            return self.spend_in(spec, rows, &history);
        }
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

impl JobPrivacy {
    /// What a hospital of `rows` training rows has spent after the rounds it took part in,
    /// `participants[i]` hospitals taking part in the i-th of them: with distributed noise each
    /// round's noise is that of its actual participants; with local noise only their number
    /// counts ([`JobPrivacy::spend`]).
    pub fn spend_in(
        &self,
        spec: &JobSpec,
        rows: u64,
        participants: &[u64],
    ) -> Result<Spend, AccountantError> {
        if !self.distributed {
            return self.spend(spec, rows, participants.len() as u64);
        }
        let mechanism = Mechanism::of(spec, rows);
        let noise_multiplier = self.noise_for(spec, rows)?;
        let fewest = u64::from(spec.min_participants).max(1);
        let mut rdp = Rdp::new();
        for &k in participants {
            // Each share has variance sigma^2 Delta^2 / m: k of them, (sigma sqrt(k / m))^2.
            let sigma = noise_multiplier * (k as f64 / fewest as f64).sqrt();
            rdp.compose_discrete_gaussian_sum(sigma, distributed_tau_d(k), 1)?;
        }
        Ok(Spend {
            mechanism,
            noise_multiplier,
            epsilon: rdp.epsilon(self.delta)?.0,
        })
    }
}

/// The smallest standard deviation of a hospital's share of distributed noise, in integer units:
/// the encoding's scale is raised until the share is at least this, so that the sum of shares is
/// a discrete Gaussian to below `f64` precision ([`crate::accountant::discrete_sum_tau`]).
pub const MIN_SHARE_SD: f64 = 10.0;

/// The most coordinates a model may have, for the bound on `tau d`.
const MAX_DIM: f64 = 1e12;

/// An upper bound on `tau d` for `parties` shares of at least [`MIN_SHARE_SD`] and at most
/// [`MAX_DIM`] coordinates (tau falls as the shares grow).
fn distributed_tau_d(parties: u64) -> f64 {
    discrete_sum_tau(parties, MIN_SHARE_SD) * MAX_DIM
}

/// How a distributed-noise round encodes a hospital's update, from the job and the model's size:
/// every party derives the same figures.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DistributedNoise {
    /// The aggregate's noise over the sensitivity with `m` participants (`sigma`).
    pub noise_multiplier: f64,
    /// Integer units per unit of the update's values.
    pub scale: f64,
    /// One row's most change to the scaled update, in integer units: `scale learning_rate
    /// max_grad_norm`; it also caps each value, per row of the hospital.
    pub row_bound: f64,
    /// The L2 sensitivity of a hospital's integers to one row: `row_bound + sqrt(d)`, the
    /// deterministic rounding moving each of the `d` coordinates by at most one more.
    pub sensitivity: f64,
    /// Each hospital's share: standard deviation `sigma sensitivity / sqrt(m)`.
    pub share_sd: f64,
}

impl DistributedNoise {
    /// The encoding of `spec`'s distributed noise for a model of `dim` parameters.
    pub fn of(privacy: &JobPrivacy, spec: &JobSpec, dim: usize) -> Result<Self, AccountantError> {
        let sigma = privacy.noise_for(spec, 0)?;
        let m = f64::from(spec.min_participants.max(1));
        let root_d = (dim.max(1) as f64).sqrt();
        // The rounding adds at most sqrt(d) to a sensitivity of kappa sqrt(d): 1 % at kappa 100,
        // raised when the share would be below MIN_SHARE_SD.
        let kappa = 100f64.max((MIN_SHARE_SD * m.sqrt() / (sigma.max(1e-9) * root_d)).ceil());
        let row_bound = kappa * root_d;
        let sensitivity = row_bound + root_d;
        Ok(DistributedNoise {
            noise_multiplier: sigma,
            scale: row_bound / (spec.learning_rate * privacy.max_grad_norm),
            row_bound,
            sensitivity,
            share_sd: sigma * sensitivity / m.sqrt(),
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
    /// The mechanism of `spec`'s local training on `rows` rows: with distributed noise, one
    /// step on every row.
    pub fn of(spec: &JobSpec, rows: u64) -> Mechanism {
        if spec.privacy.as_ref().is_some_and(|p| p.distributed) {
            return Mechanism {
                sampling_rate: 1.0,
                steps: 1,
            };
        }
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

/// Whether a job's `delta` means anything for a hospital of `rows` training rows: it must be
/// below `1 / rows`, or a mechanism that publishes one row in the clear, picked at random, would
/// meet the guarantee. `Err`: the hospital's reason to decline.
pub fn delta_fits(delta: f64, rows: u64) -> Result<(), String> {
    if rows > 0 && delta * rows as f64 >= 1.0 {
        return Err(format!(
            "the job's delta {delta} is not below 1 / {rows} (this hospital's training rows): \
             a guarantee at that delta would allow publishing one of them in the clear"
        ));
    }
    Ok(())
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
            distributed: false,
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

    /// Distributed noise: one step a round on every row, one noise for the aggregate derived
    /// for the fewest participants, and each round accounted for its actual participants.
    #[test]
    fn distributed_noise_is_accounted_for_each_round_s_participants() {
        let s = JobSpec {
            rounds: 20,
            min_participants: 2,
            learning_rate: 0.5,
            privacy: Some(Privacy {
                distributed: true,
                ..privacy(3.0, 0.0)
            }),
            ..spec(3, 32, privacy(3.0, 0.0))
        };
        let p = JobPrivacy::of(&s).unwrap();
        assert!(p.distributed);
        assert_eq!(
            Mechanism::of(&s, 500),
            Mechanism {
                sampling_rate: 1.0,
                steps: 1
            }
        );
        // One noise whatever the rows; all 20 rounds at 2 participants spend nearly the budget.
        let sigma = p.noise_for(&s, 19).unwrap();
        assert_eq!(sigma, p.noise_for(&s, 5000).unwrap());
        let all = p.spent(&s, 19, 20).unwrap();
        assert!(all <= 3.0 && all > 2.95, "{all}");
        // The worst case is the Gaussian without sampling at sigma, round for round.
        assert!(same_epsilon(all, epsilon_of(1.0, sigma, 20, 1e-5).unwrap()));
        // Three participants carry 3/2 of the variance: less spent, as with sigma sqrt(3/2).
        let three = p.spend_in(&s, 19, &[3; 20]).unwrap().epsilon;
        assert!(same_epsilon(
            three,
            epsilon_of(1.0, sigma * 1.5f64.sqrt(), 20, 1e-5).unwrap()
        ));
        assert!(three < all);
        let mixed = p.spend_in(&s, 19, &[3, 2, 3]).unwrap().epsilon;
        let (lo, hi) = (
            p.spend_in(&s, 19, &[3; 3]).unwrap().epsilon,
            p.spend_in(&s, 19, &[2; 3]).unwrap().epsilon,
        );
        assert!(lo < mixed && mixed < hi, "{lo} {mixed} {hi}");
        // With local noise the participants do not matter, only the rounds.
        let local = JobPrivacy::of(&spec(1, 50, privacy(2.5, 1.5))).unwrap();
        let ls = spec(1, 50, privacy(2.5, 1.5));
        assert_eq!(
            local.spend_in(&ls, 500, &[2, 9]).unwrap(),
            local.spend(&ls, 500, 2).unwrap()
        );
    }

    #[test]
    fn the_distributed_encoding_rounds_within_a_percent_and_shares_are_wide() {
        let s = JobSpec {
            rounds: 20,
            min_participants: 3,
            learning_rate: 0.5,
            privacy: Some(Privacy {
                distributed: true,
                max_grad_norm: 2.0,
                ..privacy(3.0, 0.0)
            }),
            ..spec(3, 32, privacy(3.0, 0.0))
        };
        let p = JobPrivacy::of(&s).unwrap();
        for dim in [1, 31, 1000, 2_000_000] {
            let n = DistributedNoise::of(&p, &s, dim).unwrap();
            assert!((n.scale * 0.5 * 2.0 - n.row_bound).abs() < 1e-6 * n.row_bound);
            let rounding = n.sensitivity / n.row_bound - 1.0;
            assert!(rounding <= 0.01 + 1e-12, "{dim}: {rounding}");
            assert!(n.share_sd >= MIN_SHARE_SD, "{dim}: {}", n.share_sd);
            let whole = n.share_sd * 3f64.sqrt() / n.sensitivity;
            assert!((whole / n.noise_multiplier - 1.0).abs() < 1e-12);
        }
        // A tiny noise multiplier raises the scale, not the noise, to keep shares wide.
        let tiny = JobPrivacy {
            noise_multiplier: Some(0.001),
            ..p
        };
        let n = DistributedNoise::of(&tiny, &s, 4).unwrap();
        assert!(n.share_sd >= MIN_SHARE_SD && n.noise_multiplier == 0.001);
    }

    #[test]
    fn delta_must_be_below_one_over_the_rows() {
        assert!(delta_fits(1e-5, 99_999).is_ok());
        assert!(delta_fits(0.009, 100).is_ok());
        let e = delta_fits(0.009, 112).unwrap_err();
        assert!(e.contains("1 / 112"), "{e}");
        assert!(delta_fits(1e-5, 100_000).is_err());
        assert!(delta_fits(0.5, 0).is_ok());
    }

    #[test]
    fn epsilons_compare_to_the_last_bits_only() {
        assert!(same_epsilon(1.234_567_890_1, 1.234_567_890_1));
        assert!(same_epsilon(1.0 + 1e-12, 1.0));
        assert!(!same_epsilon(1.0001, 1.0));
        assert!(!same_epsilon(0.9, 1.0));
    }
}
