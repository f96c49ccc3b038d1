//! Discrete Gaussian noise on integers, for distributed differential privacy.
//!
//! With distributed noise each hospital adds a share of the noise to its own integer-encoded
//! update, and only the decrypted sum carries all of it. Integers are summed exactly by the
//! homomorphic sum, so the noise must be integer too: the discrete Gaussian `N_Z(0, sd^2)`,
//! whose mass at `x` is proportional to `exp(-x^2 / (2 sd^2))`. Kairouz, Liu and Steinke (ICML
//! 2021) bound the privacy of a sum of such shares; `fedchain-protocol`'s privacy module does
//! the accounting, this module only draws.
//!
//! The sampler is the rejection sampler of Canonne, Kamath and Steinke (NeurIPS 2020,
//! Algorithm 3): a discrete Laplace proposal of scale `floor(sd) + 1`, accepted with probability
//! `exp(-(|y| - sd^2 / t)^2 / (2 sd^2))`, about 0.7 of the time or more. Its Bernoulli trials
//! compare an `f64` uniform with an `f64` exponential, as tensorflow-privacy's sampler does;
//! the exact rational arithmetic of the paper is not used, so the mass of each integer is right
//! only to `f64` precision (stated in the privacy module's limits).
//!
//! The generator is the caller's, and must be secret: anyone who can replay it can subtract
//! the noise.

use rand::{CryptoRng, Rng};

use crate::{CryptoError, Result};

/// The smallest standard deviation [`DiscreteGaussian::new`] accepts: below it the bound on the
/// sum of shares (which needs `sd >= 1/2`) says little, and no caller needs it.
pub const MIN_SD: f64 = 0.5;

/// The largest: proposals are integers of about `sd` in an `i64`, far below 2^62.
pub const MAX_SD: f64 = 1e15;

/// A discrete Gaussian `N_Z(0, sd^2)`, truncated at `±bound`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DiscreteGaussian {
    sd: f64,
    /// `sd^2 / t`, the proposal's shift in the acceptance test.
    shift: f64,
    /// The discrete Laplace proposal's scale `t = floor(sd) + 1`.
    t: u64,
    bound: i64,
}

impl DiscreteGaussian {
    /// `N_Z(0, sd^2)` whose draws beyond `±bound` are drawn again (a caller sizes `bound` so
    /// that this never happens in practice: 12 standard deviations is below 1e-31 a draw).
    ///
    /// Errors: [`CryptoError::InvalidParameter`] for `sd` outside [`MIN_SD`]..=[`MAX_SD`] or a
    /// bound below `sd`.
    pub fn new(sd: f64, bound: i64) -> Result<DiscreteGaussian> {
        if !(sd.is_finite() && (MIN_SD..=MAX_SD).contains(&sd)) {
            return Err(CryptoError::InvalidParameter(format!(
                "the discrete Gaussian's standard deviation must be between {MIN_SD} and \
                 {MAX_SD}, got {sd}"
            )));
        }
        if (bound as f64) < sd {
            return Err(CryptoError::InvalidParameter(format!(
                "the discrete Gaussian's truncation bound {bound} is below its standard \
                 deviation {sd}"
            )));
        }
        let t = sd.floor() as u64 + 1;
        Ok(DiscreteGaussian {
            sd,
            shift: sd * sd / t as f64,
            t,
            bound,
        })
    }

    /// The standard deviation it was built with.
    pub fn sd(&self) -> f64 {
        self.sd
    }

    /// The truncation bound: every draw lies in `[-bound, bound]`.
    pub fn bound(&self) -> i64 {
        self.bound
    }

    /// One draw.
    pub fn sample<R: Rng + CryptoRng + ?Sized>(&self, rng: &mut R) -> i64 {
        loop {
            let y = discrete_laplace(self.t, rng);
            let d = y.unsigned_abs() as f64 - self.shift;
            if bernoulli_exp(d * d / (2.0 * self.sd * self.sd), rng) && y.abs() <= self.bound {
                return y;
            }
        }
    }
}

/// `Bernoulli(exp(-gamma))`, `gamma >= 0`.
fn bernoulli_exp<R: Rng + ?Sized>(gamma: f64, rng: &mut R) -> bool {
    rng.random::<f64>() < (-gamma).exp()
}

/// The discrete Laplace distribution of scale `t`: mass at `x` proportional to `exp(-|x| / t)`
/// (Canonne, Kamath and Steinke, Algorithm 2, with `s = 1`).
fn discrete_laplace<R: Rng + ?Sized>(t: u64, rng: &mut R) -> i64 {
    loop {
        let u = rng.random_range(0..t);
        if !bernoulli_exp(u as f64 / t as f64, rng) {
            continue;
        }
        // A geometric count of whole scales: P(v) proportional to exp(-v).
        let mut v: u64 = 0;
        while bernoulli_exp(1.0, rng) {
            v += 1;
        }
        let x = (u + t.saturating_mul(v)).min(i64::MAX as u64) as i64;
        let negative: bool = rng.random();
        if negative && x == 0 {
            continue;
        }
        return if negative { -x } else { x };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    /// The discrete Gaussian's exact mass at each `x` in `-k..=k`, normalized over a wide range.
    fn mass(sd: f64, k: i64) -> Vec<f64> {
        let w = |x: i64| (-((x * x) as f64) / (2.0 * sd * sd)).exp();
        let z: f64 = (-1000..=1000).map(w).sum();
        (-k..=k).map(|x| w(x) / z).collect()
    }

    #[test]
    fn small_deviations_have_the_discrete_gaussian_mass() {
        // sd 0.8: mostly -2..=2, where rounding a continuous Gaussian would be far off.
        for sd in [0.8, 1.5, 3.0] {
            let g = DiscreteGaussian::new(sd, 1000).unwrap();
            let mut rng = ChaCha20Rng::seed_from_u64(7);
            let n = 200_000;
            let k = (3.0 * sd).ceil() as i64;
            let mut counts = vec![0u64; (2 * k + 1) as usize];
            for _ in 0..n {
                let x = g.sample(&mut rng);
                if x.abs() <= k {
                    counts[(x + k) as usize] += 1;
                }
            }
            for (i, (&c, p)) in counts.iter().zip(mass(sd, k)).enumerate() {
                let want = p * n as f64;
                // Five binomial standard deviations.
                let tol = 5.0 * (want * (1.0 - p)).sqrt() + 1.0;
                assert!(
                    (c as f64 - want).abs() <= tol,
                    "sd {sd}, x {}: {c} draws, expected {want:.0} ± {tol:.0}",
                    i as i64 - k
                );
            }
        }
    }

    #[test]
    fn large_deviations_have_the_variance_asked_for() {
        // Above sd 1 the discrete Gaussian's variance is sd^2 to within exp(-2 pi^2 sd^2).
        for sd in [10.0, 1234.5, 3.0e6] {
            let g = DiscreteGaussian::new(sd, (12.0 * sd) as i64).unwrap();
            let mut rng = ChaCha20Rng::seed_from_u64(11);
            let n = 100_000;
            let draws: Vec<f64> = (0..n).map(|_| g.sample(&mut rng) as f64).collect();
            let mean = draws.iter().sum::<f64>() / n as f64;
            let var = draws.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
            // The sample variance's relative standard error is sqrt(2 / n), 0.45 %.
            assert!(
                (var / (sd * sd) - 1.0).abs() < 0.02,
                "sd {sd}: variance {var}, expected {}",
                sd * sd
            );
            assert!(
                mean.abs() < 5.0 * sd / (n as f64).sqrt(),
                "sd {sd}: mean {mean}"
            );
        }
    }

    #[test]
    fn draws_stay_within_the_bound_and_bad_parameters_are_refused() {
        let g = DiscreteGaussian::new(5.0, 6).unwrap();
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        assert!((0..10_000).all(|_| g.sample(&mut rng).abs() <= 6));
        for (sd, bound) in [(0.1, 10), (f64::NAN, 10), (2e15, i64::MAX), (10.0, 5)] {
            assert!(
                DiscreteGaussian::new(sd, bound).is_err(),
                "sd {sd}, bound {bound}"
            );
        }
    }
}
