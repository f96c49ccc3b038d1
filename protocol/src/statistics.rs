//! Round 0, the statistics round.
//!
//! Every job runs **round 0, the statistics round**, before its model rounds. Under label skew each
//! hospital's own feature statistics differ, and a shared model that sees differently scaled
//! inputs at every hospital plateaus well below the centralized baseline. So each hospital
//! encrypts the per-row moments of its training rows (`datasets::FeatureSums::moments`: means,
//! mean squares) weighted by its row count, exactly as it encrypts a model update, and the
//! consortium decrypts only the pooled moments, from which every hospital derives the same
//! scaling (`Standardizer::from_moments`). Round 0 goes through the same submission, aggregation,
//! threshold decryption, ledger and credit path as every other round.

use fedchain_datasets::TaskKind;
use fedchain_proto::v1::Quantization;

/// Most fractional bits of the statistics round's quantizer.
pub const STATISTICS_FRAC_BITS: u32 = 24;
/// Clipping bound of the statistics round's quantizer: 2^27, so a mean square up to 1.3e8 (a
/// feature up to about 11,000 in absolute value) passes. A hospital whose moments exceed it
/// refuses to submit rather than send clipped statistics.
pub const STATISTICS_CLIP: f32 = 134_217_728.0;
/// The statistics round's quantization for hospitals declaring `total_weight` rows in all.
///
/// The packed sums must stay below 2^61 (the packer's widest slot): with a bound of
/// 2^(27 + frac_bits) per value and weights summing to `total_weight`, that leaves
/// `34 - bits(total_weight)` fractional bits, capped at 24 (a resolution of 6e-8) and never
/// below 8. Every party computes the same value from the same total.
pub fn statistics_quantization(total_weight: u64) -> Quantization {
    let weight_bits = 64 - total_weight.leading_zeros();
    Quantization {
        frac_bits: 34u32
            .saturating_sub(weight_bits)
            .clamp(8, STATISTICS_FRAC_BITS),
        clip: STATISTICS_CLIP,
        quant_bits: 0,
    }
}

/// Length of the statistics round's vector for `features` features.
pub fn statistics_len(features: usize, task: TaskKind) -> usize {
    2 * features + if task == TaskKind::Regression { 2 } else { 0 }
}
