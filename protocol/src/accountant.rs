//! The privacy accountant: Rényi differential privacy (RDP) of the Poisson-sampled Gaussian
//! mechanism, which is what one step of DP-SGD is, composed over steps and rounds and converted to
//! `(epsilon, delta)`.
//!
//! Every party recomputes it from the same numbers: a hospital before it trains, the coordinator
//! before it releases a round's model, an auditor when it replays the ledger. So it is pure
//! arithmetic on `f64`, deterministic, with no I/O.
//!
//! It follows Google's `dp-accounting` (`RdpAccountant`, version 0.6.0) step for step, so that the
//! figures agree with the reference implementation (the tests hold a table computed with it):
//! - RDP of one step at order `a`: `log(A_a) / (a - 1)`, with `A_a` summed exactly for integer
//!   orders and by the two-sided series of Mironov, Talwar and Zhang (arXiv:1908.10530, §3.3) for
//!   fractional ones (an order whose series does not converge in 1,000 terms is left out, as
//!   there); `a / (2 sigma^2)` without sampling (`q = 1`).
//! - Composition adds RDP order by order.
//! - Conversion: `epsilon = min over a of rdp + log1p(-1/a) - log(delta a) / (a - 1)` (Canonne,
//!   Kamath and Steinke, arXiv:2004.00010, Proposition 12), 0 where the KL bound already gives
//!   `delta`, over [`default_orders`].

use thiserror::Error;

/// Why a mechanism or a target cannot be accounted.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum AccountantError {
    /// The sampling rate is not a probability.
    #[error("the sampling rate must be between 0 and 1, got {0}")]
    SamplingRate(f64),
    /// The noise multiplier is negative or not a number.
    #[error("the noise multiplier must be a non-negative number, got {0}")]
    NoiseMultiplier(f64),
    /// The target delta is not in (0, 1).
    #[error("delta must be strictly between 0 and 1, got {0}")]
    Delta(f64),
    /// The target epsilon is not a positive number.
    #[error("epsilon must be a positive number, got {0}")]
    Epsilon(f64),
    /// No noise multiplier up to 10,000 reaches the target.
    #[error(
        "epsilon {epsilon} at delta {delta} needs a noise multiplier above 10,000: allow a larger \
         epsilon, or train fewer steps on smaller samples"
    )]
    Unreachable {
        /// The target.
        epsilon: f64,
        /// At this delta.
        delta: f64,
    },
}

/// The orders at which RDP is tracked: `dp-accounting`'s defaults (1.1 to 10.9 by 0.1, 11 to 63,
/// then 128, 256, 512 and 1024).
pub fn default_orders() -> Vec<f64> {
    (1..100)
        .map(|x| 1.0 + f64::from(x) / 10.0)
        .chain((11..64).map(f64::from))
        .chain([128.0, 256.0, 512.0, 1024.0])
        .collect()
}

/// RDP guarantees at [`default_orders`], composed so far.
#[derive(Debug, Clone, PartialEq)]
pub struct Rdp {
    orders: Vec<f64>,
    rdp: Vec<f64>,
}

impl Default for Rdp {
    fn default() -> Rdp {
        Rdp::new()
    }
}

impl Rdp {
    /// Nothing spent yet.
    pub fn new() -> Rdp {
        let orders = default_orders();
        let rdp = vec![0.0; orders.len()];
        Rdp { orders, rdp }
    }

    /// Composes `steps` steps of the Gaussian mechanism with noise multiplier `sigma` (noise
    /// standard deviation over the L2 sensitivity), each on a Poisson sample of rate `q`.
    pub fn compose_sampled_gaussian(
        &mut self,
        q: f64,
        sigma: f64,
        steps: u64,
    ) -> Result<(), AccountantError> {
        if !(0.0..=1.0).contains(&q) {
            return Err(AccountantError::SamplingRate(q));
        }
        if sigma.is_nan() || sigma < 0.0 {
            return Err(AccountantError::NoiseMultiplier(sigma));
        }
        if steps == 0 {
            return Ok(());
        }
        for (r, &a) in self.rdp.iter_mut().zip(&self.orders) {
            *r += steps as f64 * sampled_gaussian_rdp(q, sigma, a);
        }
        Ok(())
    }

    /// Composes `steps` releases of a sum of discrete Gaussian shares (distributed noise,
    /// every row in every release: no sampling) whose whole noise is `sigma` times the L2
    /// sensitivity, with `tau_d` the sum's distance from one discrete Gaussian
    /// ([`discrete_sum_tau`] times the dimension). Kairouz, Liu and Steinke (ICML 2021,
    /// Proposition 14) bound its RDP at order `a` by `a / (2 sigma^2)` plus a `tau_d` term;
    /// printed forms differ on whether that term grows with the order (`tau_d` or
    /// `a tau_d / 4`), so the larger is taken.
    pub fn compose_discrete_gaussian_sum(
        &mut self,
        sigma: f64,
        tau_d: f64,
        steps: u64,
    ) -> Result<(), AccountantError> {
        // The Gaussian part is the sampled Gaussian at rate 1.
        self.compose_sampled_gaussian(1.0, sigma, steps)?;
        if tau_d > 0.0 {
            for (r, &a) in self.rdp.iter_mut().zip(&self.orders) {
                *r += steps as f64 * tau_d * (a / 4.0).max(1.0);
            }
        }
        Ok(())
    }

    /// The smallest `epsilon` these guarantees give at `delta`, with the order that gives it.
    pub fn epsilon(&self, delta: f64) -> Result<(f64, f64), AccountantError> {
        if !(delta > 0.0 && delta < 1.0) {
            return Err(AccountantError::Delta(delta));
        }
        let mut best = (f64::INFINITY, self.orders[0]);
        for (&a, &r) in self.orders.iter().zip(&self.rdp) {
            let eps = if r.is_nan() {
                f64::INFINITY
            } else if r < 0.0 || delta * delta + (-r).exp_m1() > 0.0 {
                // Negative only by rounding; otherwise the KL bound delta <= sqrt(1 - exp(-KL))
                // already holds.
                0.0
            } else if a > 1.01 {
                r + (-1.0 / a).ln_1p() - (delta * a).ln() / (a - 1.0)
            } else {
                f64::INFINITY
            };
            if eps < best.0 {
                best = (eps, a);
            }
        }
        Ok((best.0.max(0.0), best.1))
    }
}

/// `(epsilon, delta)` of `steps` steps of the Gaussian mechanism with noise multiplier `sigma` on
/// Poisson samples of rate `q`.
pub fn epsilon_of(q: f64, sigma: f64, steps: u64, delta: f64) -> Result<f64, AccountantError> {
    let mut rdp = Rdp::new();
    rdp.compose_sampled_gaussian(q, sigma, steps)?;
    Ok(rdp.epsilon(delta)?.0)
}

/// `tau` of the bound on a sum of `parties` independent discrete Gaussians of standard deviation
/// `sd` each (Kairouz, Liu and Steinke, Proposition 14): `10 sum_{k=1}^{n-1} exp(-2 pi^2 sd^2
/// k / (k + 1))`. It is how far the sum is from one discrete Gaussian; at `sd >= 10` it is below
/// `10 n exp(-987)`, under the smallest `f64`.
pub fn discrete_sum_tau(parties: u64, sd: f64) -> f64 {
    let c = 2.0 * std::f64::consts::PI * std::f64::consts::PI * sd * sd;
    10.0 * (1..parties)
        .map(|k| (-c * k as f64 / (k + 1) as f64).exp())
        .sum::<f64>()
}

/// The largest noise multiplier [`noise_multiplier_for`] considers.
const MAX_NOISE_MULTIPLIER: f64 = 1e4;

/// The smallest noise multiplier (to 0.1 %) whose `steps` steps on Poisson samples of rate `q`
/// stay within `epsilon` at `delta`. Errs if `epsilon` is not positive or would need a noise
/// multiplier above 10,000.
pub fn noise_multiplier_for(
    q: f64,
    steps: u64,
    epsilon: f64,
    delta: f64,
) -> Result<f64, AccountantError> {
    if !(epsilon.is_finite() && epsilon > 0.0) {
        return Err(AccountantError::Epsilon(epsilon));
    }
    let within =
        |sigma: f64| Ok::<_, AccountantError>(epsilon_of(q, sigma, steps, delta)? <= epsilon);
    if within(0.0)? {
        // Nothing is spent (no steps, or nothing sampled): no noise is needed.
        return Ok(0.0);
    }
    let mut hi = 1.0;
    while !within(hi)? {
        if hi >= MAX_NOISE_MULTIPLIER {
            return Err(AccountantError::Unreachable { epsilon, delta });
        }
        hi = (hi * 2.0).min(MAX_NOISE_MULTIPLIER);
    }
    let mut lo = 0.0;
    // epsilon falls as the noise grows: bisect until the bracket is within 0.1 %.
    while hi - lo > 1e-3 * hi {
        let mid = (lo + hi) / 2.0;
        if within(mid)? {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    Ok(hi)
}

/// RDP of one step of the Poisson-sampled Gaussian mechanism at order `a > 1`.
pub fn sampled_gaussian_rdp(q: f64, sigma: f64, a: f64) -> f64 {
    if q == 0.0 {
        return 0.0;
    }
    if a.is_infinite() || sigma == 0.0 {
        return f64::INFINITY;
    }
    if q == 1.0 {
        return a / (2.0 * sigma * sigma);
    }
    let log_a = if a.fract() == 0.0 && a < 1e9 {
        log_a_int(q, sigma, a as u64)
    } else {
        log_a_frac(q, sigma, a)
    };
    log_a / (a - 1.0)
}

/// `log(exp(x) + exp(y))`.
fn log_add(x: f64, y: f64) -> f64 {
    let (a, b) = if x < y { (x, y) } else { (y, x) };
    if a == f64::NEG_INFINITY {
        return b;
    }
    (a - b).exp().ln_1p() + b
}

/// `log |binomial(n, k)|` for real `n` (a fractional order's coefficients alternate in sign;
/// the reference sums their magnitudes, and so does this).
fn log_comb(n: f64, k: f64) -> f64 {
    libm::lgamma(n + 1.0) - libm::lgamma(k + 1.0) - libm::lgamma(n - k + 1.0)
}

/// `log(A_a)` for an integer order: the exact binomial sum.
fn log_a_int(q: f64, sigma: f64, a: u64) -> f64 {
    let (log_q, log_1mq) = (q.ln(), (-q).ln_1p());
    let two_s2 = 2.0 * sigma * sigma;
    (0..=a).fold(f64::NEG_INFINITY, |acc, i| {
        let i_f = i as f64;
        let coef = log_comb(a as f64, i_f) + i_f * log_q + (a - i) as f64 * log_1mq;
        log_add(acc, coef + (i_f * i_f - i_f) / two_s2)
    })
}

/// Terms of the fractional series before it is declared not to converge, as in the reference.
const MAX_FRAC_TERMS: u32 = 1000;

/// `log(A_a)` for a fractional order: the two integrals over `(-inf, z0]` and `[z0, inf)` as
/// series, stopped once both terms decrease and are 30 nats below the total. Infinite (the order
/// is left out) if that does not happen in [`MAX_FRAC_TERMS`] terms.
fn log_a_frac(q: f64, sigma: f64, a: f64) -> f64 {
    let (mut log_a0, mut log_a1) = (f64::NEG_INFINITY, f64::NEG_INFINITY);
    let z0 = sigma * sigma * (1.0 / q - 1.0).ln() + 0.5;
    let (log_q, log_1mq) = (q.ln(), (-q).ln_1p());
    let two_s2 = 2.0 * sigma * sigma;
    let root2_sigma = std::f64::consts::SQRT_2 * sigma;
    let (mut last0, mut last1) = (f64::NEG_INFINITY, f64::NEG_INFINITY);
    for i in 0..MAX_FRAC_TERMS {
        let i = f64::from(i);
        let coef = log_comb(a, i);
        let j = a - i;
        let t0 = coef + i * log_q + j * log_1mq;
        let t1 = coef + j * log_q + i * log_1mq;
        let e0 = 0.5f64.ln() + log_erfc((i - z0) / root2_sigma);
        let e1 = 0.5f64.ln() + log_erfc((z0 - j) / root2_sigma);
        let s0 = t0 + (i * i - i) / two_s2 + e0;
        let s1 = t1 + (j * j - j) / two_s2 + e1;
        log_a0 = log_add(log_a0, s0);
        log_a1 = log_add(log_a1, s1);
        let total = log_add(log_a0, log_a1);
        if s0 < last0 && s1 < last1 && s0.max(s1) < total - 30.0 {
            return total;
        }
        (last0, last1) = (s0, s1);
    }
    f64::INFINITY
}

/// `log(erfc(x))`, accurate far into the tail, where `erfc` itself underflows (x > 26).
fn log_erfc(x: f64) -> f64 {
    let r = libm::erfc(x);
    // Below the smallest normal f64 erfc has lost precision (x > 26.5): the series is exact there.
    if r >= f64::MIN_POSITIVE {
        return r.ln();
    }
    log_erfc_tail(x)
}

/// The asymptotic series of `log(erfc(x))` at infinity (the reference's fallback):
/// `erfc(x) ~ exp(-x^2 - 0.5/x^2 + 0.625/x^4 - ...) / (x sqrt(pi))`.
fn log_erfc_tail(x: f64) -> f64 {
    let x2 = x * x;
    -std::f64::consts::PI.ln() / 2.0 - x.ln() - x2 - 0.5 / x2 + 0.625 / (x2 * x2)
        - 37.0 / 24.0 / (x2 * x2 * x2)
        + 353.0 / 64.0 / (x2 * x2 * x2 * x2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_sampling_the_gaussian_has_its_closed_form() {
        // RDP of the Gaussian mechanism: a / (2 sigma^2) at every order.
        for a in [1.5, 2.0, 10.0, 64.0] {
            assert_eq!(sampled_gaussian_rdp(1.0, 2.0, a), a / 8.0);
        }
        assert_eq!(sampled_gaussian_rdp(0.0, 1.0, 2.0), 0.0);
        assert_eq!(sampled_gaussian_rdp(0.1, 0.0, 2.0), f64::INFINITY);
    }

    #[test]
    fn a_sum_of_discrete_gaussians_is_accounted_as_one_gaussian_plus_its_distance() {
        // tau: zero for one party; for two of sd 1/2, 10 exp(-pi^2 / 4), by hand.
        assert_eq!(discrete_sum_tau(1, 5.0), 0.0);
        let by_hand = 10.0 * (-std::f64::consts::PI.powi(2) / 4.0).exp();
        assert!((discrete_sum_tau(2, 0.5) - by_hand).abs() < 1e-15);
        // At sd 10 even a million parties' tau times 1e12 coordinates is below the smallest f64.
        assert_eq!(discrete_sum_tau(1_000_000, 10.0) * 1e12, 0.0);
        // With tau_d 0 it is the Gaussian without sampling, step for step.
        let mut sum = Rdp::new();
        sum.compose_discrete_gaussian_sum(1.3, 0.0, 7).unwrap();
        let mut gauss = Rdp::new();
        gauss.compose_sampled_gaussian(1.0, 1.3, 7).unwrap();
        assert_eq!(sum, gauss);
        // A positive tau_d costs epsilon, at least tau_d per step at every order.
        let mut far = Rdp::new();
        far.compose_discrete_gaussian_sum(1.3, 0.01, 7).unwrap();
        let (e0, e1) = (gauss.epsilon(1e-5).unwrap().0, far.epsilon(1e-5).unwrap().0);
        assert!(e1 >= e0 + 0.07 - 1e-12, "{e0} {e1}");
        assert!(far.compose_discrete_gaussian_sum(f64::NAN, 0.0, 1).is_err());
    }

    #[test]
    fn the_integer_and_fractional_series_meet() {
        // The fractional series at orders just off an integer lands next to the exact sum.
        for (q, sigma) in [(0.01, 1.0), (0.1, 2.0), (0.001, 0.8)] {
            for a in [2.0, 3.0, 8.0] {
                let exact = sampled_gaussian_rdp(q, sigma, a);
                let near = log_a_frac(q, sigma, a + 1e-9) / (a + 1e-9 - 1.0);
                assert!(
                    ((exact - near) / exact).abs() < 1e-6,
                    "q {q} sigma {sigma} order {a}: {exact} vs {near}"
                );
            }
        }
    }

    #[test]
    fn log_erfc_is_continuous_where_erfc_underflows() {
        for x in [10.0, 20.0, 26.0] {
            let (direct, series) = (libm::erfc(x).ln(), log_erfc_tail(x));
            assert!(
                ((direct - series) / direct).abs() < 1e-10,
                "{x}: {direct} vs {series}"
            );
        }
        assert_eq!(libm::erfc(30.0), 0.0, "the tail is needed past here");
        assert!(log_erfc(40.0).is_finite() && log_erfc(40.0) < log_erfc(30.0));
    }

    #[test]
    fn bad_parameters_are_refused() {
        let mut r = Rdp::new();
        assert_eq!(
            r.compose_sampled_gaussian(1.5, 1.0, 1),
            Err(AccountantError::SamplingRate(1.5))
        );
        assert!(matches!(
            r.compose_sampled_gaussian(0.1, -1.0, 1),
            Err(AccountantError::NoiseMultiplier(_))
        ));
        assert!(matches!(
            r.compose_sampled_gaussian(0.1, f64::NAN, 1),
            Err(AccountantError::NoiseMultiplier(_))
        ));
        for d in [0.0, 1.0, -1.0, f64::NAN] {
            assert!(
                matches!(r.epsilon(d), Err(AccountantError::Delta(_))),
                "{d}"
            );
        }
        // Nothing spent: epsilon 0.
        assert_eq!(r.epsilon(1e-5).unwrap().0, 0.0);
    }
}
