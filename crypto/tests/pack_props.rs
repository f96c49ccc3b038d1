//! Property tests of the signed-digit packing: sums of many parties' packed vectors unpack to the
//! exact elementwise sums, extremes and carries included, and bad inputs are rejected without
//! panicking.

use curv::arithmetic::traits::{BitManipulation, Converter};
use fedchain_crypto::pack::Packer;
use fedchain_crypto::quantize::{Quantizer, Rounding};
use fedchain_crypto::{BigInt, CryptoError};
use proptest::prelude::*;
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use std::sync::OnceLock;

/// A random odd integer of exactly `bits` bits (top and bottom bits set). Packing needs no RSA
/// modulus, only an odd one.
fn random_odd(bits: usize, seed: u64) -> BigInt {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let mut bytes = vec![0u8; bits.div_ceil(8)];
    rng.fill_bytes(&mut bytes);
    let extra = bytes.len() * 8 - bits;
    bytes[0] &= 0xff >> extra;
    let mut n = BigInt::from_bytes(&bytes);
    n.set_bit(bits - 1, true);
    n.set_bit(0, true);
    n
}

/// Moduli under test: a 2048-bit one (the real size), and small ones for edge cases (few slots
/// per plaintext, slots straddling limb boundaries).
fn moduli() -> &'static [BigInt] {
    static MODULI: OnceLock<Vec<BigInt>> = OnceLock::new();
    MODULI.get_or_init(|| {
        vec![
            random_odd(2048, 1),
            random_odd(128, 2),
            random_odd(521, 3),
            random_odd(67, 4),
        ]
    })
}

fn n2048() -> &'static BigInt {
    &moduli()[0]
}

/// Values in `[-m, m]`, with the extremes and zero drawn often.
fn value(m: i64) -> impl Strategy<Value = i64> {
    prop_oneof![1 => Just(m), 1 => Just(-m), 1 => Just(0), 4 => -m..=m]
}

/// A value bound B: small, typical (2^15 for 16-bit values) and large.
fn bound() -> impl Strategy<Value = i64> {
    prop_oneof![
        Just(1i64),
        Just(7),
        Just(1 << 15),
        Just((1 << 20) - 1),
        1i64..(1 << 50)
    ]
}

/// A length relative to k: 0, 1, k - 1, k, k + 1, 2k + 1, or anything up to 3k + 2.
fn length(k: usize) -> impl Strategy<Value = usize> {
    prop_oneof![
        Just(0usize),
        Just(1),
        Just(k - 1),
        Just(k),
        Just(k + 1),
        Just(2 * k + 1),
        0..=3 * k + 2
    ]
}

#[derive(Debug, Clone)]
struct Case {
    modulus: usize,
    bound: i64,
    weights: Vec<u64>,
    /// One vector per party; party i's values lie in [-w_i B, w_i B].
    parties: Vec<Vec<i64>>,
    len: usize,
}

fn case() -> impl Strategy<Value = Case> {
    (
        0..moduli().len(),
        bound(),
        prop::collection::vec(1u64..=16, 1..8),
    )
        .prop_flat_map(|(modulus, bound, weights)| {
            let total: u64 = weights.iter().sum();
            let k = Packer::new(&moduli()[modulus], bound, total)
                .expect("these configurations fit")
                .slots_per_plaintext();
            (Just(modulus), Just(bound), Just(weights), length(k))
        })
        .prop_flat_map(|(modulus, bound, weights, len)| {
            let parties: Vec<_> = weights
                .iter()
                .map(|&w| prop::collection::vec(value(w as i64 * bound), len))
                .collect();
            (
                Just(modulus),
                Just(bound),
                Just(weights),
                Just(len),
                parties,
            )
        })
        .prop_map(|(modulus, bound, weights, len, parties)| Case {
            modulus,
            bound,
            weights,
            parties,
            len,
        })
}

/// Packs every party's vector, adds the plaintexts modulo n and unpacks.
fn packed_sum(packer: &Packer, parties: &[Vec<i64>], len: usize) -> Vec<i64> {
    let mut acc: Option<Vec<BigInt>> = None;
    for v in parties {
        let packed = packer.pack(v).expect("values within bounds");
        assert_eq!(packed.len(), packer.plaintexts_for(len));
        for m in &packed {
            assert!(m >= &BigInt::from(0) && m < packer.modulus());
        }
        acc = Some(match acc {
            None => packed,
            Some(a) => packer.add_plaintexts(&a, &packed),
        });
    }
    packer
        .unpack(&acc.unwrap_or_default(), len)
        .expect("sum unpacks")
}

fn elementwise_sum(parties: &[Vec<i64>], len: usize) -> Vec<i64> {
    (0..len)
        .map(|i| parties.iter().map(|v| v[i]).sum())
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    /// The central property: the unpacked sum of packed vectors is the exact elementwise sum.
    #[test]
    fn sum_of_packed_vectors_is_exact(c in case()) {
        let total: u64 = c.weights.iter().sum();
        let packer = Packer::new(&moduli()[c.modulus], c.bound, total).unwrap();
        let got = packed_sum(&packer, &c.parties, c.len);
        prop_assert_eq!(got, elementwise_sum(&c.parties, c.len));
    }

    /// Pack then unpack of one vector is the identity, at full range W B.
    #[test]
    fn pack_unpack_is_identity(
        modulus in 0..4usize,
        b in bound(),
        w in 1u64..1000,
        seed in any::<u64>(),
        len in 0usize..700,
    ) {
        let packer = Packer::new(&moduli()[modulus], b, w).unwrap();
        let m = packer.sum_bound();
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let vals: Vec<i64> = (0..len)
            .map(|_| match rng.next_u32() % 4 {
                0 => m,
                1 => -m,
                _ => (rng.next_u64() % (2 * m as u64 + 1)) as i64 - m,
            })
            .collect();
        let packed = packer.pack(&vals).unwrap();
        prop_assert_eq!(packer.unpack(&packed, len).unwrap(), vals);
    }

    /// Every accepted configuration keeps the worst case below N/2 (a full plaintext of +W B is
    /// below (N-1)/2, of -W B above it), and every rejected one fails with Overflow.
    #[test]
    fn accepted_configurations_cannot_wrap(
        modulus in 0..4usize,
        b in prop_oneof![1i64..(1 << 20), 1i64..=i64::MAX],
        w in prop_oneof![1u64..100, 1u64..=u64::MAX],
    ) {
        let n = &moduli()[modulus];
        match Packer::new(n, b, w) {
            Ok(p) => {
                let k = p.slots_per_plaintext();
                prop_assert!(k >= 1);
                prop_assert!(p.slot_bits() <= 62);
                prop_assert_eq!(p.sum_bound() as i128, w as i128 * b as i128);
                prop_assert!(k * p.slot_bits() as usize <= n.bit_length() - 2);
                let half = n >> 1usize;
                let top = p.pack(&vec![p.sum_bound(); k]).unwrap();
                prop_assert!(top[0] <= half);
                let bottom = p.pack(&vec![-p.sum_bound(); k]).unwrap();
                prop_assert!(bottom[0] > half);
                prop_assert_eq!(p.unpack(&top, k).unwrap(), vec![p.sum_bound(); k]);
                prop_assert_eq!(p.unpack(&bottom, k).unwrap(), vec![-p.sum_bound(); k]);
            }
            Err(CryptoError::Overflow(msg)) => prop_assert!(!msg.is_empty()),
            Err(e) => prop_assert!(false, "unexpected error {e:?}"),
        }
    }

    /// pack refuses the first value beyond W B, naming it.
    #[test]
    fn pack_rejects_out_of_range(
        len in 1usize..500,
        at in any::<prop::sample::Index>(),
        excess in prop_oneof![Just(1i64), 1i64..1000, Just(i64::MAX - 3000)],
        negative in any::<bool>(),
    ) {
        let packer = Packer::new(n2048(), 1000, 3).unwrap();
        let mut vals: Vec<i64> = (0..len as i64).map(|i| i % 6001 - 3000).collect();
        let i = at.index(len);
        let bad = if negative { -3000 - excess } else { 3000 + excess };
        vals[i] = bad;
        match packer.pack(&vals) {
            Err(CryptoError::OutOfRange { index, value, bound }) => {
                prop_assert_eq!(index, i);
                prop_assert_eq!(value, bad as i128);
                prop_assert_eq!(bound, 3000);
            }
            other => prop_assert!(false, "expected OutOfRange, got {other:?}"),
        }
    }

    /// A sum whose slot exceeds the bound (a contributor broke its promise) is rejected at the
    /// right index: packed with a looser packer (bigger W, same slot width), unpacked with the
    /// strict one.
    #[test]
    fn unpack_rejects_slots_beyond_the_bound(
        modulus in 0..4usize,
        len in 1usize..1200,
        bad in prop::collection::vec((any::<prop::sample::Index>(), 1101i64..=2000, any::<bool>()), 1..4),
        seed in any::<u64>(),
    ) {
        // Strict: W B = 11 * 100 = 1100; loose: 20 * 100 = 2000; both 11 bits, w = 12.
        let n = &moduli()[modulus];
        let strict = Packer::new(n, 100, 11).unwrap();
        let loose = Packer::new(n, 100, 20).unwrap();
        prop_assert_eq!(strict.slot_bits(), loose.slot_bits());
        prop_assert_eq!(strict.slots_per_plaintext(), loose.slots_per_plaintext());
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let mut vals: Vec<i64> = (0..len).map(|_| (rng.next_u32() % 2201) as i64 - 1100).collect();
        let mut first = usize::MAX;
        let mut first_value = 0;
        for (at, v, neg) in &bad {
            let i = at.index(len);
            vals[i] = if *neg { -v } else { *v };
            if i <= first {
                first = i;
                first_value = vals[i];
            }
        }
        let packed = loose.pack(&vals).unwrap();
        prop_assert_eq!(loose.unpack(&packed, len).unwrap(), vals);
        match strict.unpack(&packed, len) {
            Err(CryptoError::OutOfRange { index, value, bound }) => {
                prop_assert_eq!(index, first);
                prop_assert_eq!(value, first_value as i128);
                prop_assert_eq!(bound, 1100);
            }
            other => prop_assert!(false, "expected OutOfRange, got {other:?}"),
        }
    }

    /// Garbage below N never panics: unpack either fails or returns values within the bound.
    #[test]
    fn garbage_plaintexts_never_panic(
        modulus in 0..4usize,
        b in bound(),
        w in 1u64..100,
        seed in any::<u64>(),
        count in 1usize..12,
        len_sel in any::<prop::sample::Index>(),
    ) {
        let n = &moduli()[modulus];
        let packer = Packer::new(n, b, w).unwrap();
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let mut bytes = vec![0u8; n.to_bytes().len()];
        let plaintexts: Vec<BigInt> = (0..count)
            .map(|_| {
                rng.fill_bytes(&mut bytes);
                BigInt::from_bytes(&bytes) % n
            })
            .collect();
        let k = packer.slots_per_plaintext();
        // A length that needs exactly `count` plaintexts.
        let len = (count - 1) * k + 1 + len_sel.index(k);
        match packer.unpack(&plaintexts, len) {
            Ok(vals) => {
                prop_assert_eq!(vals.len(), len);
                prop_assert!(vals.iter().all(|v| v.abs() <= packer.sum_bound()));
            }
            Err(CryptoError::OutOfRange { .. } | CryptoError::InvalidParameter(_)) => {}
            Err(e) => prop_assert!(false, "unexpected error {e:?}"),
        }
    }
}

/// All parties at their maximum (or minimum): every slot of the sum is +W B (or -W B), the worst
/// case for carries, at lengths around multiples of k and past the parallel threshold.
#[test]
fn extreme_sums_at_every_length() {
    for n in moduli() {
        for (b, weights) in [
            (1i64 << 15, vec![64u64]),
            (1 << 15, vec![1; 64]),
            (1 << 15, vec![10, 20, 30, 4]),
            (1, vec![1]),
            ((1 << 40) - 1, vec![3, 5, 7]),
        ] {
            let total: u64 = weights.iter().sum();
            let packer = Packer::new(n, b, total).unwrap();
            let k = packer.slots_per_plaintext();
            for len in [1, k - 1, k, k + 1, 3 * k, 9 * k + 1] {
                for sign in [1i64, -1] {
                    let parties: Vec<Vec<i64>> = weights
                        .iter()
                        .map(|&w| vec![sign * w as i64 * b; len])
                        .collect();
                    let got = packed_sum(&packer, &parties, len);
                    assert_eq!(got, vec![sign * packer.sum_bound(); len], "len {len}");
                }
                // Alternating extremes: carries and borrows in every slot.
                let alt: Vec<i64> = (0..len)
                    .map(|i| if i.is_multiple_of(2) { 1 } else { -1 } * packer.sum_bound())
                    .collect();
                let packed = packer.pack(&alt).unwrap();
                assert_eq!(packer.unpack(&packed, len).unwrap(), alt);
            }
        }
    }
}

/// The typical configuration: B = 2^15, W = 64, 2048-bit N gives 23-bit slots, 88 per plaintext.
#[test]
fn typical_configuration() {
    let packer = Packer::new(n2048(), 1 << 15, 64).unwrap();
    assert_eq!(packer.sum_bound(), 1 << 21);
    assert_eq!(packer.slot_bits(), 23);
    assert_eq!(packer.slots_per_plaintext(), 88);
    assert_eq!(packer.plaintexts_for(100_000), 1137);
}

/// Configurations that could overflow are rejected with Overflow.
#[test]
fn overflowing_configurations_are_rejected() {
    let n = n2048();
    // W B does not fit in 64 bits.
    assert!(matches!(
        Packer::new(n, 1 << 40, 1 << 30),
        Err(CryptoError::Overflow(_))
    ));
    // W B fits but a slot would need more than 62 bits.
    assert!(matches!(
        Packer::new(n, 1 << 52, 1 << 10),
        Err(CryptoError::Overflow(_))
    ));
    // A modulus too small for one slot.
    let small = random_odd(40, 9);
    assert!(matches!(
        Packer::new(&small, 1 << 40, 1),
        Err(CryptoError::Overflow(_))
    ));
}

/// With many plaintexts (the parallel path) the error reported is still the first one.
#[test]
fn parallel_unpack_reports_the_first_error() {
    let strict = Packer::new(n2048(), 100, 11).unwrap();
    let loose = Packer::new(n2048(), 100, 20).unwrap();
    let k = strict.slots_per_plaintext();
    let len = 20 * k + 5;
    let mut vals = vec![-1100i64; len];
    vals[9 * k + 3] = 1500;
    vals[2 * k + 7] = -2000;
    vals[15 * k] = 2000;
    let packed = loose.pack(&vals).unwrap();
    match strict.unpack(&packed, len) {
        Err(CryptoError::OutOfRange { index, value, .. }) => {
            assert_eq!((index, value), (2 * k + 7, -2000));
        }
        other => panic!("expected OutOfRange, got {other:?}"),
    }
    // And pack names the first out-of-range value too.
    match strict.pack(&vals) {
        Err(CryptoError::OutOfRange { index, .. }) => assert_eq!(index, 2 * k + 7),
        other => panic!("expected OutOfRange, got {other:?}"),
    }
}

/// End to end without encryption: hospitals quantize with their weights, pack, the plaintexts
/// are summed, and the unpacked sum dequantizes to the weighted average.
#[test]
fn quantize_pack_sum_dequantize() {
    let q = Quantizer::new(15, 1.0).unwrap();
    let weights = [120u64, 30, 850];
    let total: u64 = weights.iter().sum();
    let packer = Packer::new(n2048(), q.bound(), total).unwrap();
    let len = 1000;
    let updates: Vec<Vec<f32>> = (0..weights.len())
        .map(|h| {
            (0..len)
                .map(|i| ((i * 7 + h * 13) as f32 * 0.01).sin() * 1.2)
                .collect()
        })
        .collect();
    let mut parties = Vec::new();
    for (h, u) in updates.iter().enumerate() {
        let quant = q
            .quantize_weighted(u, weights[h], Rounding::Stochastic { seed: h as u64 })
            .unwrap();
        parties.push(quant.values);
    }
    let sums = packed_sum(&packer, &parties, len);
    let avg = q.dequantize(&sums, total as f64);
    for (i, a) in avg.iter().enumerate() {
        let expect: f64 = updates
            .iter()
            .zip(&weights)
            .map(|(u, &w)| f64::from(u[i].clamp(-1.0, 1.0)) * w as f64)
            .sum::<f64>()
            / total as f64;
        // Each value is off by less than one unit 2^-15 before weighting.
        assert!(
            (f64::from(*a) - expect).abs() < 2f64.powi(-15),
            "{i}: {a} vs {expect}"
        );
    }
}
