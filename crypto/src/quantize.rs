//! Fixed-point quantization of model updates.
//!
//! Paillier encrypts integers, so a hospital's f32 update must become a vector of integers before
//! it is packed ([`crate::pack`]) and encrypted. A [`Quantizer`] does this with a fixed-point
//! scale of `2^frac_bits`: each value is clipped to `[-clip, clip]`, multiplied by
//! `2^frac_bits`, rounded to an integer, and clamped to `[-B, B]` with
//! `B = floor(clip * 2^frac_bits)` ([`Quantizer::bound`]).
//!
//! Why this shape:
//! - **Clipping gives a hard bound.** The packing must know, before anything is encrypted, the
//!   largest magnitude a slot of the *sum* can reach, or a carry could spill into the neighbouring
//!   slot (silently corrupting another parameter) or the packed value could wrap modulo N. Every
//!   quantized value satisfies `|q| <= B`, whatever the input, so the bound is a promise the
//!   packer can build on. Clipping is also standard practice in federated learning (it limits the
//!   influence of any single update); the number of clipped values is reported so a caller can
//!   notice a badly chosen `clip`.
//! - **Power-of-two scale, computed in f64.** Multiplying an f32 by `2^frac_bits` in f64 is exact
//!   (f64 has 29 more mantissa bits than f32 and the exponent range is ample), so the only error
//!   is the rounding itself: at most `2^-frac_bits / 2` with [`Rounding::Nearest`] for
//!   `|x| <= B / 2^frac_bits`. Values between `B / 2^frac_bits` and `clip` (only when
//!   `clip * 2^frac_bits` is not an integer) may round to `B + 1` and are clamped to `B`, an error
//!   below `2^-frac_bits`. `B < 2^52` keeps every quantity exact in f64.
//! - **Stochastic rounding** ([`Rounding::Stochastic`]) rounds up with probability equal to the
//!   fractional part, so the quantized value is unbiased in expectation: when many small updates
//!   are summed, nearest rounding can systematically lose values below half a unit, stochastic
//!   rounding does not. It draws from a ChaCha8 stream seeded by the caller, so a run is
//!   reproducible. (The clamp at `B` can bias the rare values within one unit of `clip`.)
//! - **Weighting after rounding** ([`Quantizer::quantize_weighted`]). For FedAvg a hospital
//!   multiplies its update by its sample count `w` and the aggregate is divided by the total
//!   weight `W`. Multiplying the *integers* keeps the bound exact and simple, `|q| <= w * B`, so a
//!   sum over all hospitals lies in `[-W * B, W * B]`, which is exactly what the packer is
//!   configured with.
//!
//! [`Quantizer::dequantize`] maps (summed) integers back to f32 values, dividing by the scale and
//! by the total weight.

use crate::{CryptoError, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Largest supported number of fractional bits.
const MAX_FRAC_BITS: u32 = 40;

/// `B` must stay below this so that it, and every intermediate, is exact in an f64.
const MAX_BOUND: i64 = 1 << 52;

/// Fixed-point quantizer: `q = clamp(round(clip(x) * 2^frac_bits), -B, B)`.
///
/// Construct it with [`Quantizer::new`], which validates the parameters; deserialization runs the
/// same validation.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "QuantizerParams")]
pub struct Quantizer {
    frac_bits: u32,
    clip: f32,
}

/// Unvalidated form of [`Quantizer`], so that deserialized values go through [`Quantizer::new`].
#[derive(serde::Deserialize)]
struct QuantizerParams {
    frac_bits: u32,
    clip: f32,
}

impl TryFrom<QuantizerParams> for Quantizer {
    type Error = CryptoError;

    fn try_from(p: QuantizerParams) -> Result<Quantizer> {
        Quantizer::new(p.frac_bits, p.clip)
    }
}

/// How a scaled value is rounded to an integer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Rounding {
    /// Round to the nearest integer, halves away from zero. Error at most half a unit.
    Nearest,
    /// Round up with probability equal to the fractional part, down otherwise, so that the
    /// expected quantized value equals the scaled input. Draws one number per value from
    /// `ChaCha8Rng::seed_from_u64(seed)`: the same seed and input give the same output.
    Stochastic {
        /// Seed of the random stream.
        seed: u64,
    },
}

/// A quantized vector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quantized {
    /// The fixed-point integers, one per input value.
    pub values: Vec<i64>,
    /// How many inputs had `|x| > clip` and were clipped.
    pub clipped: usize,
}

impl Quantizer {
    /// A quantizer with `frac_bits` fractional bits that clips values to `[-clip, clip]`.
    ///
    /// Errors ([`CryptoError::InvalidParameter`]) unless `clip` is finite and positive,
    /// `frac_bits <= 40`, and the bound `B = floor(clip * 2^frac_bits)` satisfies
    /// `1 <= B < 2^52`.
    pub fn new(frac_bits: u32, clip: f32) -> Result<Quantizer> {
        if !clip.is_finite() || clip <= 0.0 {
            return Err(CryptoError::InvalidParameter(format!(
                "quantizer clip must be a finite positive number, got {clip}"
            )));
        }
        if frac_bits > MAX_FRAC_BITS {
            return Err(CryptoError::InvalidParameter(format!(
                "quantizer frac_bits must be at most {MAX_FRAC_BITS}, got {frac_bits}"
            )));
        }
        // Exact: an f32 times a power of two within f64's range.
        let bound = (f64::from(clip) * scale(frac_bits)).floor();
        if bound < 1.0 {
            return Err(CryptoError::InvalidParameter(format!(
                "quantizer clip {clip} with {frac_bits} fractional bits leaves no non-zero value \
                 (clip * 2^frac_bits < 1): raise clip or frac_bits"
            )));
        }
        if bound >= MAX_BOUND as f64 {
            return Err(CryptoError::InvalidParameter(format!(
                "quantizer bound clip * 2^frac_bits = {bound} must be below 2^52: \
                 lower clip or frac_bits"
            )));
        }
        Ok(Quantizer { frac_bits, clip })
    }

    /// Number of fractional bits: the scale is `2^frac_bits`.
    pub fn frac_bits(&self) -> u32 {
        self.frac_bits
    }

    /// Clipping threshold: inputs are clipped to `[-clip, clip]`.
    pub fn clip(&self) -> f32 {
        self.clip
    }

    /// `B = floor(clip * 2^frac_bits)`, the largest magnitude of a quantized value.
    pub fn bound(&self) -> i64 {
        // Validated by `new` to lie in [1, 2^52), so the conversion is exact.
        (f64::from(self.clip) * scale(self.frac_bits)).floor() as i64
    }

    /// Bits of a signed quantized value: the smallest `b` with `B < 2^(b-1)`.
    pub fn value_bits(&self) -> u32 {
        let b = self.bound().max(0) as u64;
        (u64::BITS - b.leading_zeros()) + 1
    }

    /// Quantizes `values`: clip to `[-clip, clip]`, scale by `2^frac_bits`, round, clamp to
    /// `[-B, B]`.
    ///
    /// Errors with [`CryptoError::NotFinite`] naming the first NaN or infinite value.
    pub fn quantize(&self, values: &[f32], rounding: Rounding) -> Result<Quantized> {
        // Exact (power-of-two scale); |scaled| <= clip * 2^frac_bits < 2^52 + 1.
        round_clipped(
            values,
            f64::from(self.clip),
            scale(self.frac_bits),
            self.bound(),
            rounding,
        )
    }

    /// Quantizes `values` as [`Quantizer::quantize`] does, then multiplies each integer by
    /// `weight` (a hospital's sample count, for FedAvg), so every output satisfies
    /// `|q| <= weight * B`.
    ///
    /// Errors with [`CryptoError::InvalidParameter`] if `weight` is 0 or `weight * B` does not fit
    /// in an i64, and with [`CryptoError::NotFinite`] as `quantize` does.
    pub fn quantize_weighted(
        &self,
        values: &[f32],
        weight: u64,
        rounding: Rounding,
    ) -> Result<Quantized> {
        if weight == 0 {
            return Err(CryptoError::InvalidParameter(
                "quantization weight must be at least 1".into(),
            ));
        }
        let bound = self.bound();
        let w = i64::try_from(weight)
            .ok()
            .filter(|w| w.checked_mul(bound).is_some())
            .ok_or_else(|| {
                CryptoError::InvalidParameter(format!(
                    "weight {weight} times the quantizer bound {bound} does not fit in a 64-bit \
                     integer: use a smaller weight or fewer quantization bits"
                ))
            })?;
        let mut q = self.quantize(values, rounding)?;
        // Cannot overflow: |v| <= B and w * B fits.
        for v in &mut q.values {
            *v *= w;
        }
        Ok(q)
    }

    /// Maps (summed) fixed-point integers back to reals: `sum / 2^frac_bits / divisor`.
    ///
    /// `divisor` is the total weight of the contributors, to turn a weighted sum into an average;
    /// use 1.0 for a plain dequantization. It should be finite and positive: otherwise the outputs
    /// are infinite or NaN.
    pub fn dequantize(&self, sums: &[i64], divisor: f64) -> Vec<f32> {
        let denom = scale(self.frac_bits) * divisor;
        sums.iter().map(|&s| (s as f64 / denom) as f32).collect()
    }
}

/// Clips each value to `[-clip, clip]`, multiplies it by `factor`, rounds it and clamps it to
/// `[-cap, cap]`: the one rounding loop of both quantizations ([`Quantizer::quantize`] and the
/// scaled layout of [`crate::update::UpdateCodec`]). Callers keep `clip * factor <= cap + 1` and
/// `cap < 2^52`, so every integer is exact in an f64.
pub(crate) fn round_clipped(
    values: &[f32],
    clip: f64,
    factor: f64,
    cap: i64,
    rounding: Rounding,
) -> Result<Quantized> {
    let mut rng = match rounding {
        Rounding::Nearest => None,
        Rounding::Stochastic { seed } => Some(ChaCha8Rng::seed_from_u64(seed)),
    };
    let mut out = Vec::with_capacity(values.len());
    let mut clipped = 0usize;
    for (index, &value) in values.iter().enumerate() {
        if !value.is_finite() {
            return Err(CryptoError::NotFinite { index, value });
        }
        let mut x = f64::from(value);
        if x.abs() > clip {
            clipped += 1;
            x = clip.copysign(x);
        }
        let scaled = x * factor;
        let rounded = match rng.as_mut() {
            None => scaled.round(),
            Some(rng) => {
                let floor = scaled.floor();
                // `frac` is exact and lies in [0, 1); `u` is uniform in [0, 1), so
                // P(u < frac) = frac and E[result] = floor + frac = scaled.
                let frac = scaled - floor;
                let u: f64 = rng.random();
                if u < frac {
                    floor + 1.0
                } else {
                    floor
                }
            }
        };
        // |rounded| <= cap + 1 (a few levels more near 2^52, from f64 rounding), far inside an
        // i64, so the conversion is exact; the clamp brings it back to the cap.
        // (`max`/`min` rather than `clamp`, which would panic on a malformed bound.)
        out.push((rounded as i64).max(-cap).min(cap));
    }
    Ok(Quantized {
        values: out,
        clipped,
    })
}

/// `2^frac_bits` as an f64 (exact for any `frac_bits` validated by [`Quantizer::new`]).
fn scale(frac_bits: u32) -> f64 {
    // `min` keeps the exponent argument in range for a malformed value; 2^1100 is +inf.
    2f64.powi(frac_bits.min(1100) as i32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_are_validated() {
        assert!(Quantizer::new(16, 1.0).is_ok());
        for (f, c) in [
            (16, 0.0),
            (16, -1.0),
            (16, f32::NAN),
            (16, f32::INFINITY),
            (41, 1.0),
            // clip * 2^f < 1.
            (0, 0.5),
            (4, 0.05),
            // B >= 2^52.
            (40, 4096.0),
        ] {
            match Quantizer::new(f, c) {
                Err(CryptoError::InvalidParameter(msg)) => assert!(!msg.is_empty()),
                other => panic!("({f}, {c}) should be invalid, got {other:?}"),
            }
        }
        // Just below 2^52 is fine.
        assert!(Quantizer::new(40, 4095.0).is_ok());
    }

    #[test]
    fn bound_and_value_bits() {
        let q = Quantizer::new(15, 1.0).unwrap();
        assert_eq!(q.bound(), 1 << 15);
        assert_eq!(q.value_bits(), 17);
        let q = Quantizer::new(15, 0.99999).unwrap();
        assert_eq!(q.bound(), (1 << 15) - 1);
        assert_eq!(q.value_bits(), 16);
        let q = Quantizer::new(0, 1.0).unwrap();
        assert_eq!(q.bound(), 1);
        assert_eq!(q.value_bits(), 2);
        let q = Quantizer::new(4, 2.5).unwrap();
        assert_eq!(q.bound(), 40);
        assert_eq!((q.frac_bits(), q.clip()), (4, 2.5));
    }

    #[test]
    fn nearest_round_trip_within_half_unit() {
        let q = Quantizer::new(12, 2.0).unwrap();
        let unit = 2f64.powi(-12);
        let xs: Vec<f32> = (0..4001).map(|i| -2.0 + i as f32 * 0.001).collect();
        let out = q.quantize(&xs, Rounding::Nearest).unwrap();
        assert_eq!(out.clipped, 0);
        assert!(out.values.iter().all(|v| v.abs() <= q.bound()));
        let back = q.dequantize(&out.values, 1.0);
        for (x, y) in xs.iter().zip(&back) {
            let err = (f64::from(*x) - f64::from(*y)).abs();
            // f32 output adds at most one f32 ulp of a value below 2.
            assert!(err <= unit / 2.0 + 2.5e-7, "{x} -> {y}, error {err}");
        }
    }

    #[test]
    fn exact_values_and_negatives() {
        let q = Quantizer::new(4, 8.0).unwrap();
        let out = q
            .quantize(
                &[0.0, 1.0, -1.0, 0.5, -0.5, 0.03125, -0.03125, -7.9375],
                Rounding::Nearest,
            )
            .unwrap();
        // 0.03125 * 16 = 0.5 rounds away from zero.
        assert_eq!(out.values, vec![0, 16, -16, 8, -8, 1, -1, -127]);
        assert_eq!(q.dequantize(&[16, -8, 127], 1.0), vec![1.0, -0.5, 7.9375]);
        assert_eq!(q.dequantize(&[32, -8], 4.0), vec![0.5, -0.125]);
    }

    #[test]
    fn clipping_is_counted_and_applied() {
        let q = Quantizer::new(8, 1.0).unwrap();
        let out = q
            .quantize(&[0.5, 1.0, -1.0, 1.5, -3.0, 1e30, -1e-3], Rounding::Nearest)
            .unwrap();
        // Exactly +-clip is not clipped.
        assert_eq!(out.clipped, 3);
        assert_eq!(out.values, vec![128, 256, -256, 256, -256, 256, 0]);
    }

    #[test]
    fn clamps_to_bound_when_clip_is_not_on_the_grid() {
        // clip * 2^f = 10.7, B = 10: clip itself would round to 11.
        let q = Quantizer::new(0, 10.7).unwrap();
        assert_eq!(q.bound(), 10);
        let out = q
            .quantize(&[10.7, -10.7, 12.0, 10.6], Rounding::Nearest)
            .unwrap();
        assert_eq!(out.values, vec![10, -10, 10, 10]);
        let out = q
            .quantize(&[10.7; 64], Rounding::Stochastic { seed: 3 })
            .unwrap();
        assert!(out.values.iter().all(|&v| v == 10));
    }

    #[test]
    fn non_finite_values_are_named() {
        let q = Quantizer::new(8, 1.0).unwrap();
        match q.quantize(&[0.0, 0.1, f32::NAN], Rounding::Nearest) {
            Err(CryptoError::NotFinite { index: 2, value }) => assert!(value.is_nan()),
            other => panic!("expected NotFinite, got {other:?}"),
        }
        match q.quantize(&[f32::NEG_INFINITY], Rounding::Stochastic { seed: 1 }) {
            Err(CryptoError::NotFinite { index: 0, value }) => {
                assert_eq!(value, f32::NEG_INFINITY)
            }
            other => panic!("expected NotFinite, got {other:?}"),
        }
        assert!(matches!(
            q.quantize_weighted(&[1.0, f32::INFINITY], 3, Rounding::Nearest),
            Err(CryptoError::NotFinite { index: 1, .. })
        ));
    }

    #[test]
    fn stochastic_rounding_is_deterministic_per_seed() {
        let q = Quantizer::new(4, 4.0).unwrap();
        let xs: Vec<f32> = (0..1000).map(|i| (i as f32 * 0.37).sin() * 3.0).collect();
        let a = q.quantize(&xs, Rounding::Stochastic { seed: 7 }).unwrap();
        let b = q.quantize(&xs, Rounding::Stochastic { seed: 7 }).unwrap();
        let c = q.quantize(&xs, Rounding::Stochastic { seed: 8 }).unwrap();
        assert_eq!(a, b);
        assert_ne!(a.values, c.values);
        // Always one of the two neighbours.
        for (x, v) in xs.iter().zip(&a.values) {
            let s = f64::from(*x) * 16.0;
            assert!(
                *v == s.floor() as i64 || *v == s.ceil() as i64,
                "{x} -> {v}"
            );
        }
    }

    #[test]
    fn stochastic_rounding_is_unbiased() {
        let q = Quantizer::new(10, 1.0).unwrap();
        let unit = 2f64.powi(-10);
        for frac in [0.3, 0.5, 0.9] {
            for base in [0.0, 0.25, -0.25] {
                let x = base + frac * unit;
                let xs = vec![x as f32; 20_000];
                let out = q.quantize(&xs, Rounding::Stochastic { seed: 42 }).unwrap();
                let mean = out.values.iter().map(|&v| v as f64).sum::<f64>() / xs.len() as f64;
                let expected = f64::from(x as f32) / unit;
                // Binomial standard deviation of the mean is at most 0.5 / sqrt(20000) = 0.0035.
                assert!(
                    (mean - expected).abs() < 0.02,
                    "x = {x}: mean {mean}, want {expected}"
                );
            }
        }
        // Nearest rounding would give 0 every time: the bias stochastic rounding removes.
        let xs = vec![(0.3 * unit) as f32; 1000];
        let near = q.quantize(&xs, Rounding::Nearest).unwrap();
        assert!(near.values.iter().all(|&v| v == 0));
    }

    #[test]
    fn weighted_values_stay_within_weight_times_bound() {
        let q = Quantizer::new(8, 1.0).unwrap();
        let out = q
            .quantize_weighted(&[1.0, -1.0, 0.5, 5.0, 0.0], 37, Rounding::Nearest)
            .unwrap();
        assert_eq!(out.values, vec![256 * 37, -256 * 37, 128 * 37, 256 * 37, 0]);
        assert_eq!(out.clipped, 1);
        assert!(out.values.iter().all(|v| v.abs() <= 37 * q.bound()));
        // The average comes back with divisor = total weight.
        assert_eq!(q.dequantize(&out.values, 37.0)[..3], [1.0, -1.0, 0.5]);
        // Weight 1 is plain quantization.
        assert_eq!(
            q.quantize_weighted(&[0.25], 1, Rounding::Nearest).unwrap(),
            q.quantize(&[0.25], Rounding::Nearest).unwrap()
        );
    }

    #[test]
    fn weighted_rejects_zero_and_overflowing_weights() {
        let q = Quantizer::new(8, 1.0).unwrap();
        assert!(matches!(
            q.quantize_weighted(&[0.5], 0, Rounding::Nearest),
            Err(CryptoError::InvalidParameter(_))
        ));
        // B = 256 = 2^8: the largest weight is floor(i64::MAX / 256) = 2^55 - 1.
        let max_w = (i64::MAX / 256) as u64;
        let out = q
            .quantize_weighted(&[-1.0, 1.0], max_w, Rounding::Nearest)
            .unwrap();
        assert_eq!(out.values, vec![-(max_w as i64) * 256, max_w as i64 * 256]);
        for w in [max_w + 1, u64::MAX, 1 << 63] {
            assert!(matches!(
                q.quantize_weighted(&[0.5], w, Rounding::Nearest),
                Err(CryptoError::InvalidParameter(_))
            ));
        }
    }

    #[test]
    fn deserialization_validates() {
        assert!(Quantizer::try_from(QuantizerParams {
            frac_bits: 8,
            clip: 1.0
        })
        .is_ok());
        assert!(Quantizer::try_from(QuantizerParams {
            frac_bits: 8,
            clip: -1.0
        })
        .is_err());
        assert!(Quantizer::try_from(QuantizerParams {
            frac_bits: 99,
            clip: 1.0
        })
        .is_err());
    }

    #[test]
    fn empty_input() {
        let q = Quantizer::new(8, 1.0).unwrap();
        let out = q.quantize(&[], Rounding::Nearest).unwrap();
        assert!(out.values.is_empty() && out.clipped == 0);
        assert!(q.dequantize(&[], 1.0).is_empty());
    }
}
