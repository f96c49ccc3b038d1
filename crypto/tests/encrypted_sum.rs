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
use fedchain_crypto::threshold::{combine, partial_decrypt};
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
