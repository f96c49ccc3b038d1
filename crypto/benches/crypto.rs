//! Criterion benchmarks of the operations `fedchain bench crypto` reports once, with statistics.
//! 2048-bit keys (dealt once, ~2 s). Run: `cargo bench -p fedchain-crypto`.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use fedchain_crypto::aggregate::add_into;
use fedchain_crypto::djn::EncryptionTable;
use fedchain_crypto::keys::deal;
use fedchain_crypto::pack::Packer;
use fedchain_crypto::quantize::{Quantizer, Rounding};
use fedchain_crypto::threshold::{partial_decrypt, verify_share};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use std::time::Duration;

fn benches(c: &mut Criterion) {
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let (pk, shares) = deal(2048, 3, 2, &mut rng).expect("deal");
    let table = EncryptionTable::new(&pk);
    let quantizer = Quantizer::new(12, 4.0).expect("quantizer");
    let packer = Packer::new(pk.n(), quantizer.bound(), 64).expect("packer");
    let update: Vec<f32> = (0..10_000)
        .map(|i| (i as f32 * 0.618).sin() * 3.0)
        .collect();
    let q = quantizer
        .quantize_weighted(&update, 64, Rounding::Nearest)
        .expect("quantize");
    let plaintexts = packer.pack(&q.values).expect("pack");

    let mut g = c.benchmark_group("crypto-2048");
    g.sample_size(10).measurement_time(Duration::from_secs(3));

    g.throughput(Throughput::Elements(update.len() as u64));
    g.bench_function("quantize+pack 10k values", |b| {
        b.iter(|| {
            let q = quantizer
                .quantize_weighted(&update, 64, Rounding::Nearest)
                .unwrap();
            packer.pack(&q.values).unwrap()
        })
    });
    g.throughput(Throughput::Elements(1));
    g.bench_function("DJN encrypt one ciphertext", |b| {
        b.iter(|| table.encrypt(&plaintexts[0], &mut rng).unwrap())
    });
    let cts = table.encrypt_all(&plaintexts, &mut rng).expect("encrypt");
    g.throughput(Throughput::Elements(cts.len() as u64));
    g.bench_function("homomorphic add (per vector)", |b| {
        b.iter_batched(
            || cts.clone(),
            |mut sum| add_into(&pk, &mut sum, &cts).unwrap(),
            BatchSize::LargeInput,
        )
    });
    let few = &cts[..8];
    g.throughput(Throughput::Elements(few.len() as u64));
    g.bench_function("partial decrypt + batched proof (8 ciphertexts)", |b| {
        b.iter(|| partial_decrypt(&pk, &shares[0], few, b"bench", &mut rng).unwrap())
    });
    let share = partial_decrypt(&pk, &shares[0], few, b"bench", &mut rng).expect("share");
    g.bench_function("verify batched proof (8 ciphertexts)", |b| {
        b.iter(|| verify_share(&pk, few, &share, b"bench").unwrap())
    });
    g.finish();
}

criterion_group!(crypto, benches);
criterion_main!(crypto);
