//! The property the whole design rests on: for random updates from n parties, including negative
//! values and the +-B extremes, combining any t partial decryptions of the product of their
//! ciphertexts decodes exactly to the sum of their quantized vectors.
//!
//! A 512-bit key is dealt once for all cases (dealing dominates the cost; the property does not
//! depend on the key size). Packing is still exercised at its real slot width for that key.

use fedchain_crypto::aggregate::aggregate;
use fedchain_crypto::djn::EncryptionTable;
use fedchain_crypto::keys::{deal, KeyShare, PublicKey};
use fedchain_crypto::pack::Packer;
use fedchain_crypto::quantize::{Quantizer, Rounding};
use fedchain_crypto::threshold::{combine, combine_pieces, partial_decrypt, verify_share, Piece};
use fedchain_crypto::update::UpdateCodec;
use fedchain_crypto::CryptoError;
use proptest::prelude::*;
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use std::sync::OnceLock;

const PARTIES: usize = 4;
const THRESHOLD: usize = 3;

fn key() -> &'static (PublicKey, Vec<KeyShare>, EncryptionTable) {
    static KEY: OnceLock<(PublicKey, Vec<KeyShare>, EncryptionTable)> = OnceLock::new();
    KEY.get_or_init(|| {
        let (pk, shares) =
            deal(512, PARTIES, THRESHOLD, &mut ChaCha20Rng::seed_from_u64(5)).unwrap();
        let table = EncryptionTable::new(&pk);
        (pk, shares, table)
    })
}

/// A value in [-bound, bound], with the extremes and zero drawn often.
fn value(bound: i64) -> impl Strategy<Value = i64> {
    prop_oneof![
        1 => Just(bound),
        1 => Just(-bound),
        1 => Just(0i64),
        4 => -bound..=bound,
    ]
}

fn case() -> impl Strategy<Value = (u32, Vec<u64>, Vec<Vec<i64>>, u64)> {
    (1u32..=16, 1usize..=PARTIES, 1usize..=40, any::<u64>()).prop_flat_map(
        |(bits, n, len, seed)| {
            let bound = (1i64 << (bits - 1)) - 1 + (bits == 1) as i64; // B >= 1
            (
                Just(bits),
                proptest::collection::vec(1u64..=20, n),
                proptest::collection::vec(proptest::collection::vec(value(bound), len), n),
                Just(seed),
            )
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn any_t_shares_decode_the_exact_sum((bits, weights, raw, seed) in case()) {
        let (pk, shares, table) = key();
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let bound = (1i64 << (bits - 1)) - 1 + (bits == 1) as i64;
        let total: u64 = weights.iter().sum();
        let packer = Packer::new(pk.n(), bound, total).unwrap();
        let len = raw[0].len();
        // Each party's contribution is its raw vector times its weight: |v| <= w_i * B.
        let contributions: Vec<Vec<i64>> = raw
            .iter()
            .zip(&weights)
            .map(|(v, &w)| v.iter().map(|x| x * w as i64).collect())
            .collect();
        let cts: Vec<_> = contributions
            .iter()
            .map(|v| table.encrypt_all(&packer.pack(v).unwrap(), &mut rng).unwrap())
            .collect();
        let agg = aggregate(pk, &cts).unwrap();
        let expected: Vec<i64> = (0..len)
            .map(|j| contributions.iter().map(|v| v[j]).sum())
            .collect();

        let ctx = seed.to_be_bytes();
        let dec: Vec<_> = shares
            .iter()
            .map(|s| partial_decrypt(pk, s, &agg, &ctx, &mut rng).unwrap())
            .collect();
        // Every t-subset of the n parties.
        for mask in 0u32..(1 << PARTIES) {
            let chosen: Vec<_> = (0..PARTIES)
                .filter(|i| mask & (1 << i) != 0)
                .map(|i| dec[i].clone())
                .collect();
            let result = combine(pk, &agg, &chosen, &ctx);
            if chosen.len() >= THRESHOLD {
                let sums = packer.unpack(&result.unwrap(), len).unwrap();
                prop_assert_eq!(&sums, &expected);
            } else {
                let is_not_enough = matches!(result, Err(CryptoError::NotEnoughShares { .. }));
                prop_assert!(is_not_enough);
            }
        }
    }
}

/// The codec's whole path: f32 updates in, weighted average out, within quantization error.
#[test]
fn codec_recovers_the_weighted_average() {
    let (pk, shares, table) = key();
    let mut rng = ChaCha20Rng::seed_from_u64(17);
    let quantizer = Quantizer::new(16, 4.0).unwrap();
    let weights = [30u64, 10, 60];
    let codec = UpdateCodec::new(pk, quantizer, weights.iter().sum()).unwrap();
    let updates: Vec<Vec<f32>> = (0..3)
        .map(|i| {
            (0..300)
                .map(|j| ((i * 300 + j) as f32 * 0.013).sin() * 3.0)
                .collect()
        })
        .collect();
    let mut encrypted = Vec::new();
    for (u, &w) in updates.iter().zip(&weights) {
        let e = codec
            .encrypt(table, u, w, Rounding::Nearest, &mut rng)
            .unwrap();
        assert_eq!(e.clipped, 0);
        assert_eq!(e.ciphertexts.len(), codec.ciphertexts_for(300));
        encrypted.push(e.ciphertexts);
    }
    let agg = aggregate(pk, &encrypted).unwrap();
    let dec: Vec<_> = shares[1..]
        .iter()
        .map(|s| partial_decrypt(pk, s, &agg, b"avg", &mut rng).unwrap())
        .collect();
    let plain = combine(pk, &agg, &dec, b"avg").unwrap();
    let avg = codec.decode_average(&plain, 300, 100).unwrap();
    for j in 0..300 {
        let want: f32 = updates
            .iter()
            .zip(&weights)
            .map(|(u, &w)| u[j] * w as f32)
            .sum::<f32>()
            / 100.0;
        assert!((avg[j] - want).abs() < 1e-4, "{j}: {} vs {want}", avg[j]);
    }
    // A contributor claiming more weight than the job allows is refused.
    assert!(codec
        .encrypt(table, &updates[0], 101, Rounding::Nearest, &mut rng)
        .is_err());
}

/// A scaled-layout case: quantization bits, the enrolled hospitals' weights, which of them take
/// part (a bit mask, at least one), their f32 updates (extremes, zeros and clipped values drawn
/// often) and a seed.
fn scaled_case() -> impl Strategy<Value = (u32, Vec<u64>, u32, Vec<Vec<f32>>, u64)> {
    let x = prop_oneof![
        1 => Just(2.0f32),
        1 => Just(-2.0f32),
        1 => Just(9.0f32),
        1 => Just(-9.0f32),
        1 => Just(0.0f32),
        4 => -2.0f32..=2.0,
    ];
    (2u32..=20, 1usize..=PARTIES, 1usize..=40, any::<u64>()).prop_flat_map(
        move |(bits, n, len, seed)| {
            (
                Just(bits),
                proptest::collection::vec(1u64..=5000, n),
                1u32..(1 << n),
                proptest::collection::vec(proptest::collection::vec(x.clone(), len), n),
                Just(seed),
            )
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// The scaled layout through real encryption, aggregation and every t-subset of shares:
    /// whichever hospitals take part, the decrypted slots are exactly the sum of what each
    /// packed, every slot stays within the sum bound S, and the decoded average is the
    /// participants' weighted average within one quantization unit per participant.
    #[test]
    fn scaled_layout_decodes_every_subset_of_participants(
        (bits, weights, mask, updates, seed) in scaled_case()
    ) {
        let (pk, shares, table) = key();
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let clip = 2.0f32;
        let total: u64 = weights.iter().sum();
        let codec = match UpdateCodec::scaled(pk, bits, clip, total, weights.len() as u64) {
            Ok(c) => c,
            // Only a key too small for one slot may refuse (20 bits x 4 parties fits 512 bits).
            Err(e) => return Err(TestCaseError::fail(format!("{e}"))),
        };
        // S levels; slots hold S + P - 1 (each cap is below S w / W + 1).
        let p = weights.len() as i64;
        let levels = p * ((1i64 << (bits - 1)) - 1);
        let sum_bound = codec.packer().value_bound();
        prop_assert_eq!(sum_bound, levels + p - 1);
        let len = updates[0].len();
        let chosen: Vec<usize> = (0..weights.len()).filter(|i| mask & (1 << i) != 0).collect();
        let mut expected = vec![0i64; len];
        let mut cts = Vec::new();
        for &i in &chosen {
            let rounding = Rounding::Stochastic { seed: seed ^ i as u64 };
            // Every hospital takes part, however small its share: below one level its values
            // round to -1, 0 or 1.
            let q = codec.quantize(&updates[i], weights[i], rounding).unwrap();
            let cap = ((levels as u128 * weights[i] as u128 / total as u128) as i64).max(1);
            prop_assert!(q.values.iter().all(|v| v.abs() <= cap));
            for (e, v) in expected.iter_mut().zip(&q.values) {
                *e += v;
            }
            cts.push(table.encrypt_all(&codec.packer().pack(&q.values).unwrap(), &mut rng).unwrap());
        }
        prop_assert!(expected.iter().all(|v| v.abs() <= sum_bound));
        let agg = aggregate(pk, &cts).unwrap();
        let ctx = seed.to_le_bytes();
        let dec: Vec<_> = shares
            .iter()
            .map(|s| partial_decrypt(pk, s, &agg, &ctx, &mut rng).unwrap())
            .collect();
        let used: u64 = chosen.iter().map(|&i| weights[i]).sum();
        for subset in 0u32..(1 << PARTIES) {
            let picked: Vec<_> = (0..PARTIES)
                .filter(|i| subset & (1 << i) != 0)
                .map(|i| dec[i].clone())
                .collect();
            if picked.len() < THRESHOLD {
                continue;
            }
            let plain = combine(pk, &agg, &picked, &ctx).unwrap();
            prop_assert_eq!(&codec.decode_sums(&plain, len).unwrap(), &expected);
            let avg = codec.decode_average(&plain, len, used).unwrap();
            // One level of the sum is clip W / (S W_used) in the average.
            let unit = f64::from(clip) * total as f64 / (levels as f64 * used as f64);
            for j in 0..len {
                let want: f64 = chosen
                    .iter()
                    .map(|&i| f64::from(updates[i][j].clamp(-clip, clip)) * weights[i] as f64)
                    .sum::<f64>()
                    / used as f64;
                let err = (f64::from(avg[j]) - want).abs();
                prop_assert!(
                    err <= unit * chosen.len() as f64 * (1.0 + 1e-9) + 1e-6,
                    "{}: {} vs {} (unit {})", j, avg[j], want, unit
                );
            }
        }
    }
}

/// The point of the scaled layout: slots grow with the number of hospitals, not their rows.
#[test]
fn scaled_slots_grow_with_hospitals_not_rows() {
    let (pk, _, _) = key();
    let fixed = UpdateCodec::new(pk, Quantizer::new(16, 1.0).unwrap(), 1437).unwrap();
    // 17 bits of value, 11 of weight: 1437 rows is 2^10.5.
    assert_eq!(fixed.packer().slot_bits(), 28);
    for (bits, hospitals, slot) in [(8, 3, 10), (8, 10, 12), (12, 3, 14), (16, 3, 18)] {
        for rows in [3u64, 1437, 10_000_000] {
            let codec = UpdateCodec::scaled(pk, bits, 1.0, rows.max(hospitals), hospitals).unwrap();
            assert_eq!(
                codec.packer().slot_bits(),
                slot,
                "{bits} bits, {hospitals} hospitals"
            );
            assert_eq!(codec.total_weight(), rows.max(hospitals));
            assert_eq!(codec.contributors(), Some(hospitals));
        }
    }
}

/// Stochastic rounding keeps the scaled layout unbiased: at 4 bits, a value between levels
/// averages back to itself over many seeds, where nearest rounding would always lose it.
#[test]
fn scaled_stochastic_rounding_is_unbiased() {
    let (pk, _, _) = key();
    // S = 2 x 7 = 14 levels; one hospital of weight 1 of 2 has a cap of 7 over clip 1.
    let codec = UpdateCodec::scaled(pk, 4, 1.0, 2, 2).unwrap();
    let x = [0.03f32; 1];
    let nearest = codec.quantize(&x, 1, Rounding::Nearest).unwrap();
    assert_eq!(nearest.values, vec![0]);
    let n = 20_000;
    let mean: f64 = (0..n)
        .map(|seed| {
            let q = codec
                .quantize(&x, 1, Rounding::Stochastic { seed })
                .unwrap();
            codec.dequantize(&q.values, 1)[0] as f64
        })
        .sum::<f64>()
        / n as f64;
    assert!((mean - 0.03).abs() < 0.004, "mean {mean}");
}

#[test]
fn scaled_codec_refuses_what_it_cannot_carry() {
    let (pk, _, table) = key();
    let mut rng = ChaCha20Rng::seed_from_u64(3);
    for bits in [0, 1, 33] {
        let e = UpdateCodec::scaled(pk, bits, 1.0, 10, 2).unwrap_err();
        assert!(e.to_string().contains("quant_bits"), "{e}");
    }
    for clip in [0.0, -1.0, f32::NAN, f32::INFINITY] {
        let e = UpdateCodec::scaled(pk, 8, clip, 10, 2).unwrap_err();
        assert!(e.to_string().contains("clip"), "{e}");
    }
    // Any finite positive clip will do: the levels are spread over it.
    assert!(UpdateCodec::scaled(pk, 2, 1e-9, 10, 2).is_ok());
    assert!(UpdateCodec::scaled(pk, 8, 1.0, 0, 2).is_err());
    assert!(UpdateCodec::scaled(pk, 8, 1.0, 10, 0).is_err());
    // 2^31 hospitals of 32-bit values: the sum bound would pass 2^52.
    let e = UpdateCodec::scaled(pk, 32, 1.0, 1 << 40, 1 << 31).unwrap_err();
    assert!(matches!(e, CryptoError::Overflow(_)), "{e}");
    let codec = UpdateCodec::scaled(pk, 8, 1.0, 1000, 3).unwrap();
    let u = [0.5f32; 4];
    // Weight 0 or above the total.
    for w in [0, 1001] {
        assert!(codec
            .encrypt(table, &u, w, Rounding::Nearest, &mut rng)
            .is_err());
    }
    let e = codec
        .quantize(&[f32::NAN], 500, Rounding::Nearest)
        .unwrap_err();
    assert!(matches!(e, CryptoError::NotFinite { index: 0, .. }), "{e}");
}

/// A hospital with less than one level's share (2 rows of 1,000 at 8 bits: 381 levels, so 0.76 of
/// one) still contributes: its values round to -1, 0 or 1, unbiased, negative ones and values at
/// the clip included.
#[test]
fn a_share_below_one_level_still_counts_unbiased() {
    let (pk, _, _) = key();
    let codec = UpdateCodec::scaled(pk, 8, 1.0, 1000, 3).unwrap();
    let n = 20_000u64;
    for x in [0.5f32, -0.5, 1.0, -1.0, 3.0] {
        let mut total = 0i64;
        for seed in 0..n {
            let q = codec
                .quantize(&[x], 2, Rounding::Stochastic { seed })
                .unwrap();
            assert!(q.values[0].abs() <= 1, "{x}: {:?}", q.values);
            assert!(
                q.values[0] * i64::from(x.signum() as i8) >= 0,
                "{x}: wrong sign"
            );
            assert_eq!(q.clipped, usize::from(x.abs() > 1.0));
            total += q.values[0];
        }
        // Expected level: clamp(x, -1, 1) x 381 x 2 / 1000.
        let expected = f64::from(x.clamp(-1.0, 1.0)) * 0.762;
        let mean = total as f64 / n as f64;
        assert!(
            (mean - expected).abs() < 0.015,
            "{x}: mean {mean}, expected {expected}"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    /// Spread decryption: each party decrypts only some ciphertexts (verified on exactly those),
    /// each ciphertext is combined from whichever t or more parties covered it, and the sums are
    /// the same as from whole shares. A ciphertext covered fewer than t times is named.
    #[test]
    fn pieces_of_shares_decode_the_same_sums(
        len in 1usize..=300,
        cover in proptest::collection::vec(0u32..(1 << PARTIES), 1..=8),
        short in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let (pk, shares, table) = key();
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let bound = 1000;
        let packer = Packer::new(pk.n(), bound, 3).unwrap();
        let vs: Vec<Vec<i64>> = (0..3)
            .map(|i| (0..len).map(|j| ((j as i64 * 37 + i * 11) % (2 * bound + 1)) - bound).collect())
            .collect();
        let cts: Vec<_> = vs
            .iter()
            .map(|v| table.encrypt_all(&packer.pack(v).unwrap(), &mut rng).unwrap())
            .collect();
        let agg = aggregate(pk, &cts).unwrap();
        let count = agg.len();
        // Ciphertext j is covered by the parties in a mask with at least t bits (or, when `short`,
        // ciphertext 0 by exactly t - 1).
        let masks: Vec<u32> = (0..count)
            .map(|j| {
                let mut m = cover[j % cover.len()];
                let mut i = 0;
                while m.count_ones() < THRESHOLD as u32 {
                    m |= 1 << (i % PARTIES);
                    i += 1;
                }
                if short && j == 0 {
                    while m.count_ones() >= THRESHOLD as u32 {
                        m &= m - 1;
                    }
                }
                m
            })
            .collect();
        let ctx = seed.to_be_bytes();
        let mut held = Vec::new();
        for (i, s) in shares.iter().enumerate() {
            let at: Vec<usize> = (0..count).filter(|&j| masks[j] & (1 << i) != 0).collect();
            if at.is_empty() {
                continue;
            }
            let sub: Vec<_> = at.iter().map(|&j| agg[j].clone()).collect();
            let share = partial_decrypt(pk, s, &sub, &ctx, &mut rng).unwrap();
            prop_assert!(verify_share(pk, &sub, &share, &ctx).is_ok());
            // Verified against the whole aggregate it does not hold.
            if at.len() < count {
                prop_assert!(verify_share(pk, &agg, &share, &ctx).is_err());
            }
            held.push((share, at));
        }
        let pieces: Vec<Piece<'_>> = held.iter().map(|(share, at)| Piece { share, at }).collect();
        let result = combine_pieces(pk, count, &pieces);
        if short {
            let named = matches!(result, Err(CryptoError::NotCovered { ciphertext: 0, .. }));
            prop_assert!(named);
        } else {
            let whole: Vec<_> = shares
                .iter()
                .take(THRESHOLD)
                .map(|s| partial_decrypt(pk, s, &agg, &ctx, &mut rng).unwrap())
                .collect();
            let expected = combine(pk, &agg, &whole, &ctx).unwrap();
            let got = result.unwrap();
            prop_assert_eq!(&got, &expected);
            let sums: Vec<i64> = (0..len).map(|j| vs.iter().map(|v| v[j]).sum()).collect();
            prop_assert_eq!(packer.unpack(&got, len).unwrap(), sums);
        }
    }
}

/// Distributed noise through encryption: the decrypted sum is the contributions' sum plus
/// noise whose variance is the contributors' shares added up, and nothing else.
#[test]
fn distributed_noise_sums_to_the_whole_variance() {
    let (pk, shares, table) = key();
    let mut rng = ChaCha20Rng::seed_from_u64(23);
    let (scale, sd, len) = (1000.0, 40.0, 1500);
    let weights = [30u64, 10, 60];
    let total: u64 = weights.iter().sum();
    let codec = UpdateCodec::distributed(pk, scale, 4000.0, sd, total, 3).unwrap();
    // Each contribution is a sum over its rows, at most 3 a row.
    let updates: Vec<Vec<f32>> = weights
        .iter()
        .enumerate()
        .map(|(i, &w)| {
            (0..len)
                .map(|j| ((i * len + j) as f32 * 0.013).sin() * 3.0 * w as f32)
                .collect()
        })
        .collect();
    let mut encrypted = Vec::new();
    for (u, &w) in updates.iter().zip(&weights) {
        let e = codec
            .encrypt(table, u, w, Rounding::Nearest, &mut rng)
            .unwrap();
        assert_eq!(e.clipped, 0);
        encrypted.push(e.ciphertexts);
    }
    let agg = aggregate(pk, &encrypted).unwrap();
    let dec: Vec<_> = shares[..THRESHOLD]
        .iter()
        .map(|s| partial_decrypt(pk, s, &agg, b"dp", &mut rng).unwrap())
        .collect();
    let plain = combine(pk, &agg, &dec, b"dp").unwrap();
    let sums = codec.decode_sums(&plain, len).unwrap();
    // What the sum is without noise: each contribution rounded on its own.
    let noise: Vec<f64> = (0..len)
        .map(|j| {
            let exact: i64 = updates
                .iter()
                .map(|u| (f64::from(u[j]) * scale).round() as i64)
                .sum();
            (sums[j] - exact) as f64
        })
        .collect();
    let mean = noise.iter().sum::<f64>() / len as f64;
    let var = noise.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (len - 1) as f64;
    let want = 3.0 * sd * sd;
    // The sample variance's relative standard error is sqrt(2 / 1500), 3.7 %.
    assert!(
        (var / want - 1.0).abs() < 0.15,
        "variance {var}, expected {want}"
    );
    assert!(
        mean.abs() < 5.0 * want.sqrt() / (len as f64).sqrt(),
        "mean {mean}"
    );
    // Decoded, it is the mean over all rows summed, within the noise.
    let avg = codec.decode_average(&plain, len, total).unwrap();
    let per_value = 6.0 * want.sqrt() / (scale * total as f64);
    for j in 0..len {
        let want: f64 = updates.iter().map(|u| f64::from(u[j])).sum::<f64>() / total as f64;
        assert!((f64::from(avg[j]) - want).abs() < per_value + 1e-4, "{j}");
    }
    // The integers never come without their noise, and a value past the cap is counted.
    assert!(codec.quantize(&updates[0], 30, Rounding::Nearest).is_err());
    let big = codec
        .encrypt(table, &[1e9, -1e9, 0.0], 10, Rounding::Nearest, &mut rng)
        .unwrap();
    assert_eq!(big.clipped, 2);
    assert!(UpdateCodec::distributed(pk, 1e30, 1e30, sd, total, 3).is_err());
}
