//! The whole path of a model update: f32 vector -> quantized -> packed -> encrypted, and back from
//! the decrypted aggregate to the averaged f32 vector.
//!
//! An [`UpdateCodec`] fixes everything the parties of a job must agree on: the quantizer (scale
//! and clipping bound), the total contributor weight, and hence the packing. It is derived from
//! the job's parameters, so every hospital and the decoder build the same one.
//!
//! Two slot layouts ([`Layout`]):
//! - **Weight in the slot** ([`UpdateCodec::new`]): `frac_bits` fixed point, each integer
//!   multiplied by the hospital's sample count `w`, so a slot of the sum holds up to `W B` and
//!   grows with `log2(W)`: about 9 of the digits CNN's 26 bits were sample weight.
//! - **Scaled** ([`UpdateCodec::scaled`]): the sum gets `S = P (2^(quant_bits - 1) - 1)` levels
//!   over `[-clip, clip]`, for at most `P` contributors. Each scales its clipped update by
//!   `w / W` (its share of the public total `W`, fixed before the round), so its values span
//!   `S w / W` levels, and rounds them stochastically (unbiased), capped at
//!   `max(1, floor(S w / W))` in magnitude. Each cap is below `S w / W + 1` (weights are at
//!   least 1) and the shares sum to at most 1, so the caps sum to less than `S + P`: every slot of
//!   the sum lies in `[-(S + P - 1), S + P - 1]` whoever takes part, and a slot needs
//!   `bits(S + P - 1) + 1` bits: it grows with `log2(P)`, not
//!   with the samples. The decoder divides by `S / clip` and corrects exactly for the
//!   participants' actual weight `W_used`: average `= sum * clip * W / (S * W_used)`.
//!   A hospital's resolution is proportional to its rows: one with the average share `W / P`
//!   gets `quant_bits`, one with a tenth of that about 3.3 bits fewer, and one below a single
//!   level still contributes unbiased values of -1, 0 or 1.

use crate::bigint::BigInt;
use crate::djn::{Ciphertext, EncryptionTable};
use crate::error::{CryptoError, Result};
use crate::keys::PublicKey;
use crate::noise::DiscreteGaussian;
use crate::pack::Packer;
use crate::quantize::{round_clipped, Quantized, Quantizer, Rounding};
use rand::{CryptoRng, RngCore};

/// Narrowest and widest `quant_bits` of the scaled layout: below 2 bits an average share has
/// no non-zero level; above 32 bits a slot stops saving anything over the fixed-point layout.
pub const QUANT_BITS: std::ops::RangeInclusive<u32> = 2..=32;

/// The sum bound `S` must stay below this so every integer is exact in an f64.
const MAX_SUM_BOUND: i64 = 1 << 52;

/// How a contributor's weight enters its slots (see the [module documentation](self)).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Layout {
    /// `frac_bits` fixed point times the sample weight: slots of `bits(W B) + 1` bits.
    WeightInSlot {
        /// The fixed-point quantizer.
        quantizer: Quantizer,
    },
    /// Scaled by `w / W` before quantizing to `quant_bits`: slots of `bits(S) + 1` bits,
    /// `S = contributors (2^(quant_bits - 1) - 1)`.
    Scaled {
        /// Bits of the value of a contributor with the average share of the weight, sign
        /// included.
        quant_bits: u32,
        /// Values are clipped to `[-clip, clip]` (finite, positive).
        clip: f32,
        /// The most contributions ever summed (the enrolled hospitals).
        contributors: u64,
        /// `S`: the sum's levels over `[-clip, clip]`.
        levels: i64,
    },
    /// Distributed noise ([`UpdateCodec::distributed`]): each value times `scale`, rounded to
    /// the nearest integer and capped at `row_bound w` for a contributor of weight `w`, plus a
    /// discrete Gaussian share of the noise; the sum is divided by `scale W_used`.
    Distributed {
        /// Integer units per unit of value.
        scale: f64,
        /// The cap per unit of weight, in integer units.
        row_bound: f64,
        /// Each contributor's noise.
        noise: DiscreteGaussian,
        /// The most contributions ever summed.
        contributors: u64,
    },
}

/// Quantizer plus packing for one job.
#[derive(Debug, Clone)]
pub struct UpdateCodec {
    packer: Packer,
    layout: Layout,
    /// `W`: the public total weight the round is built for.
    total_weight: u64,
}

/// One contributor's encrypted update.
#[derive(Debug, Clone)]
pub struct EncryptedUpdate {
    /// The ciphertexts, `codec.ciphertexts_for(len)` of them.
    pub ciphertexts: Vec<Ciphertext>,
    /// Values that exceeded the clipping bound and were clipped.
    pub clipped: usize,
}

impl UpdateCodec {
    /// A codec for key `pk`, quantizer `quantizer`, and contributors whose weights sum to at most
    /// `total_weight`. Fails when the packing could overflow (see [`Packer::new`]).
    pub fn new(pk: &PublicKey, quantizer: Quantizer, total_weight: u64) -> Result<UpdateCodec> {
        let packer = Packer::new(pk.n(), quantizer.bound(), total_weight)?;
        Ok(UpdateCodec {
            packer,
            layout: Layout::WeightInSlot { quantizer },
            total_weight,
        })
    }

    /// A codec with the scaled layout: at most `contributors` updates, each clipped to
    /// `[-clip, clip]`, scaled by its weight's share of `total_weight` and quantized to
    /// `quant_bits` bits ([`QUANT_BITS`]).
    ///
    /// Errors: [`CryptoError::InvalidParameter`] for `quant_bits` outside [`QUANT_BITS`], a clip
    /// that is not finite and positive, or no contributors or weight; [`CryptoError::Overflow`]
    /// when the sum bound `S` reaches 2^52 or the packing cannot hold it (see [`Packer::new`]).
    pub fn scaled(
        pk: &PublicKey,
        quant_bits: u32,
        clip: f32,
        total_weight: u64,
        contributors: u64,
    ) -> Result<UpdateCodec> {
        if !QUANT_BITS.contains(&quant_bits) {
            return Err(CryptoError::InvalidParameter(format!(
                "quant_bits must be between {} and {}, got {quant_bits}",
                QUANT_BITS.start(),
                QUANT_BITS.end()
            )));
        }
        if total_weight == 0 || contributors == 0 {
            return Err(CryptoError::InvalidParameter(
                "a scaled codec needs at least one contributor and a positive total weight".into(),
            ));
        }
        if !clip.is_finite() || clip <= 0.0 {
            return Err(CryptoError::InvalidParameter(format!(
                "quantization clip must be a finite positive number, got {clip}"
            )));
        }
        let full = (1i64 << (quant_bits - 1)) - 1;
        // S, and the slot bound S + P - 1: each cap is below S w / W + 1, so the P caps sum to
        // less than S + P.
        let (levels, sum_bound) = i64::try_from(contributors)
            .ok()
            .and_then(|p| Some((p.checked_mul(full)?, p)))
            .and_then(|(s, p)| Some((s, s.checked_add(p - 1)?)))
            .filter(|(_, bound)| *bound < MAX_SUM_BOUND)
            .ok_or_else(|| {
                CryptoError::Overflow(format!(
                    "{contributors} contributors of {quant_bits}-bit values can sum to 2^52 or \
                     more: use fewer quantization bits"
                ))
            })?;
        let packer = Packer::new(pk.n(), sum_bound, 1)?;
        Ok(UpdateCodec {
            packer,
            layout: Layout::Scaled {
                quant_bits,
                clip,
                contributors,
                levels,
            },
            total_weight,
        })
    }

    /// A codec for distributed noise: at most `contributors` updates of weights summing to at
    /// most `total_weight`. A contributor of weight `w` multiplies its values by `scale`, rounds
    /// them to the nearest integer (deterministically: the caller's sensitivity bound counts
    /// the rounding), caps them at `row_bound w` in magnitude and adds discrete Gaussian noise
    /// of standard deviation `noise_sd`, truncated at 12 of them. The decoder divides the sum
    /// by `scale` and by the weight of those actually summed: a weighted update of `w` rows
    /// whose values are the sum over its rows comes back as the mean over all rows summed.
    ///
    /// Errors: [`CryptoError::InvalidParameter`] for a scale or row bound that is not finite
    /// and positive, a noise deviation the sampler refuses, or no contributors or weight;
    /// [`CryptoError::Overflow`] when a slot of the sum could reach 2^52 or the packing cannot
    /// hold it.
    pub fn distributed(
        pk: &PublicKey,
        scale: f64,
        row_bound: f64,
        noise_sd: f64,
        total_weight: u64,
        contributors: u64,
    ) -> Result<UpdateCodec> {
        if !(scale.is_finite() && scale > 0.0 && row_bound.is_finite() && row_bound > 0.0) {
            return Err(CryptoError::InvalidParameter(format!(
                "a distributed codec needs a finite positive scale and row bound, got {scale} \
                 and {row_bound}"
            )));
        }
        if total_weight == 0 || contributors == 0 {
            return Err(CryptoError::InvalidParameter(
                "a distributed codec needs at least one contributor and a positive total weight"
                    .into(),
            ));
        }
        let noise_bound = (12.0 * noise_sd).ceil();
        let noise = DiscreteGaussian::new(noise_sd, noise_bound.min(1e18) as i64)?;
        // Each contributor's values are at most floor(row_bound w) + noise bound, and the
        // weights sum to at most W.
        let sum_bound =
            (row_bound * total_weight as f64).floor() + contributors as f64 * noise.bound() as f64;
        if sum_bound.is_nan() || sum_bound >= MAX_SUM_BOUND as f64 {
            return Err(CryptoError::Overflow(format!(
                "{contributors} contributions of {total_weight} rows with noise of standard \
                 deviation {noise_sd} can sum to 2^52 or more"
            )));
        }
        let packer = Packer::new(pk.n(), sum_bound as i64, 1)?;
        Ok(UpdateCodec {
            packer,
            layout: Layout::Distributed {
                scale,
                row_bound,
                noise,
                contributors,
            },
            total_weight,
        })
    }

    /// The slot layout.
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// `W`: the total weight the codec is built for; contributions may weigh at most this much
    /// together.
    pub fn total_weight(&self) -> u64 {
        self.total_weight
    }

    /// The most contributions the scaled layout can sum; `None` for weight in the slot, which
    /// bounds the weight, not the count.
    pub fn contributors(&self) -> Option<u64> {
        match self.layout {
            Layout::WeightInSlot { .. } => None,
            Layout::Scaled { contributors, .. } | Layout::Distributed { contributors, .. } => {
                Some(contributors)
            }
        }
    }

    /// The packer.
    pub fn packer(&self) -> &Packer {
        &self.packer
    }

    /// Ciphertexts needed for a vector of `len` values.
    pub fn ciphertexts_for(&self, len: usize) -> usize {
        self.packer.plaintexts_for(len)
    }

    /// Quantizes `update` weighted by `weight`, packs and encrypts it.
    pub fn encrypt<R: RngCore + CryptoRng>(
        &self,
        table: &EncryptionTable,
        update: &[f32],
        weight: u64,
        rounding: Rounding,
        rng: &mut R,
    ) -> Result<EncryptedUpdate> {
        if weight > self.total_weight {
            return Err(CryptoError::InvalidParameter(format!(
                "weight {weight} exceeds the job's total weight {}",
                self.total_weight
            )));
        }
        let q = match self.layout {
            Layout::Distributed {
                scale,
                row_bound,
                noise,
                ..
            } => self.noised(update, weight, scale, row_bound, &noise, rng)?,
            _ => self.quantize(update, weight, rounding)?,
        };
        let plaintexts = self.packer.pack(&q.values)?;
        Ok(EncryptedUpdate {
            ciphertexts: table.encrypt_all(&plaintexts, rng)?,
            clipped: q.clipped,
        })
    }

    /// The integers one contributor of weight `weight` packs: the layout's quantization. The
    /// distributed layout adds noise, so its integers come only from [`UpdateCodec::encrypt`].
    pub fn quantize(&self, update: &[f32], weight: u64, rounding: Rounding) -> Result<Quantized> {
        match self.layout {
            Layout::Distributed { .. } => Err(CryptoError::InvalidParameter(
                "the distributed layout's integers carry noise: they come only from encrypt".into(),
            )),
            Layout::WeightInSlot { quantizer } => {
                quantizer.quantize_weighted(update, weight, rounding)
            }
            Layout::Scaled { clip, levels, .. } => {
                if weight == 0 || weight > self.total_weight {
                    return Err(CryptoError::InvalidParameter(format!(
                        "weight {weight} must be between 1 and the job's total weight {}",
                        self.total_weight
                    )));
                }
                // floor(S w / W) <= S < 2^52, exact in u128. At least 1: a share below one
                // level still rounds stochastically to -1, 0 or 1, unbiased, rather than to 0.
                let cap = (u128::from(levels as u64) * u128::from(weight)
                    / u128::from(self.total_weight))
                .max(1) as i64;
                let clip = f64::from(clip);
                // clip * factor = S w / W (up to f64 rounding, a few levels' worth near 2^52)
                // < cap + 1, so the clamp takes away at most about one level.
                let factor = levels as f64 * weight as f64 / self.total_weight as f64 / clip;
                round_clipped(update, clip, factor, cap, rounding)
            }
        }
    }

    /// The distributed layout's integers: `min(round(x scale), cap)` plus a noise draw per
    /// value, `cap = floor(row_bound w)`; `clipped` counts the values the cap changed.
    fn noised<R: RngCore + CryptoRng>(
        &self,
        update: &[f32],
        weight: u64,
        scale: f64,
        row_bound: f64,
        noise: &DiscreteGaussian,
        rng: &mut R,
    ) -> Result<Quantized> {
        if weight == 0 || weight > self.total_weight {
            return Err(CryptoError::InvalidParameter(format!(
                "weight {weight} must be between 1 and the job's total weight {}",
                self.total_weight
            )));
        }
        let cap = (row_bound * weight as f64).floor();
        let mut values = Vec::with_capacity(update.len());
        let mut clipped = 0;
        for (index, &value) in update.iter().enumerate() {
            if !value.is_finite() {
                return Err(CryptoError::NotFinite { index, value });
            }
            let x = (f64::from(value) * scale).round();
            if x.abs() > cap {
                clipped += 1;
            }
            // |x| <= cap < 2^52 after the clamp: exact in an i64.
            values.push(x.max(-cap).min(cap) as i64 + noise.sample(rng));
        }
        Ok(Quantized { values, clipped })
    }

    /// Maps summed integers back to the weighted average of the contributions, whose weights
    /// add up to `total_weight_used` (positive; 0 gives infinities, as a division by zero).
    pub fn dequantize(&self, sums: &[i64], total_weight_used: u64) -> Vec<f32> {
        match self.layout {
            Layout::WeightInSlot { quantizer } => {
                quantizer.dequantize(sums, total_weight_used as f64)
            }
            Layout::Scaled { clip, levels, .. } => {
                let s = levels as f64;
                let clip = f64::from(clip);
                let unit = clip * self.total_weight as f64 / (s * total_weight_used as f64);
                sums.iter().map(|&v| (v as f64 * unit) as f32).collect()
            }
            Layout::Distributed { scale, .. } => {
                let unit = 1.0 / (scale * total_weight_used as f64);
                sums.iter().map(|&v| (v as f64 * unit) as f32).collect()
            }
        }
    }

    /// Decodes decrypted aggregate plaintexts into the integer sums of all contributions, checking
    /// every slot against the allowed range.
    pub fn decode_sums(&self, plaintexts: &[BigInt], len: usize) -> Result<Vec<i64>> {
        self.packer.unpack(plaintexts, len)
    }

    /// Decodes into the weighted average of the contributors actually aggregated, whose weights
    /// add up to `total_weight_used` (see [`UpdateCodec::dequantize`]).
    pub fn decode_average(
        &self,
        plaintexts: &[BigInt],
        len: usize,
        total_weight_used: u64,
    ) -> Result<Vec<f32>> {
        if total_weight_used == 0 {
            return Err(CryptoError::InvalidParameter(
                "cannot average over a total weight of 0".into(),
            ));
        }
        let sums = self.decode_sums(plaintexts, len)?;
        Ok(self.dequantize(&sums, total_weight_used))
    }
}
