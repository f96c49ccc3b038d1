//! Federated training in process, plaintext and encrypted, on the bundled breast-cancer data split
//! across three hospitals with Dirichlet label skew: the maths of a fedchain job without the
//! network. Each round, the decrypted aggregate must equal plaintext FedAvg of the same updates
//! within quantization error, and the encrypted job must reach the plaintext job's accuracy.
//!
//! Features are standardized with consortium-wide statistics built from each hospital's sums (as a
//! job does, there under encryption): with per-hospital statistics, label skew gives every
//! hospital differently scaled inputs and FedAvg plateaus around 90 %.
//!
//! A 512-bit Paillier key keeps this fast on 2 cores; key size does not change the arithmetic.

use fedchain_crypto::aggregate::aggregate;
use fedchain_crypto::djn::EncryptionTable;
use fedchain_crypto::keys::deal;
use fedchain_crypto::quantize::{Quantizer, Rounding};
use fedchain_crypto::threshold::{combine, partial_decrypt};
use fedchain_crypto::update::UpdateCodec;
use fedchain_datasets::{partition, train_test_split, Builtin, FeatureSums, Scheme, Standardizer};
use fedchain_models::{fedavg, init_params, ModelKind, ModelSpec, TrainConfig};
use fedchain_worker::{evaluate_global, local_round, LocalData, LocalUpdate};
use rand::SeedableRng;
use tch::Device;

const ROUNDS: u64 = 8;

struct Setup {
    spec: ModelSpec,
    hospitals: Vec<LocalData>,
    config: TrainConfig,
}

fn setup() -> Setup {
    let data = Builtin::BreastCancer.load().unwrap();
    let part = partition(&data, 3, Scheme::Dirichlet { alpha: 0.5 }, 3).unwrap();
    let rows = part.datasets(&data);
    // Each hospital's sums over its own training rows; only their total is used.
    let sums: Vec<FeatureSums> = rows
        .iter()
        .map(|r| FeatureSums::of(&train_test_split(r, 0.2, 1).unwrap().0))
        .collect();
    let scaler = Standardizer::from_sums(&FeatureSums::merge(&sums).unwrap()).unwrap();
    let hospitals: Vec<LocalData> = rows
        .iter()
        .map(|r| LocalData::prepare_with(r, 0.2, 1, scaler.clone()).unwrap())
        .collect();
    Setup {
        spec: ModelSpec::preset(ModelKind::Mlp, data.n_features(), data.task()).unwrap(),
        hospitals,
        config: TrainConfig {
            epochs: 2,
            learning_rate: 2e-3,
            ..TrainConfig::default()
        },
    }
}

/// Accuracy over all hospitals' test rows: what the hospitals report as aggregate metrics.
fn accuracy(s: &Setup, params: &[f32]) -> f64 {
    let (mut correct, mut rows) = (0.0, 0usize);
    for h in &s.hospitals {
        let m = evaluate_global(&s.spec, &[], params, h, Device::Cpu).unwrap();
        correct += m.accuracy.unwrap() * m.rows as f64;
        rows += m.rows;
    }
    correct / rows as f64
}

fn updates(s: &Setup, global: &[f32], round: u64) -> Vec<LocalUpdate> {
    s.hospitals
        .iter()
        .map(|h| {
            let config = TrainConfig {
                seed: round,
                ..s.config.clone()
            };
            local_round(&s.spec, &[], global, h, &config, Device::Cpu).unwrap()
        })
        .collect()
}

#[test]
fn encrypted_fedavg_matches_plaintext_fedavg_and_learns() {
    let s = setup();
    let start = init_params(&s.spec, 1);

    // Plaintext reference job.
    let mut plain = start.clone();
    for round in 1..=ROUNDS {
        let ups = updates(&s, &plain, round);
        let weighted: Vec<(u64, &[f32])> = ups.iter().map(|u| (u.samples, &u.delta[..])).collect();
        plain = fedavg::apply(&plain, fedavg::weighted_average(&weighted).unwrap()).unwrap();
    }
    let plain_acc = accuracy(&s, &plain);

    // The same job, encrypted: 2-of-3 threshold key, weighted quantized updates.
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(9);
    let (pk, shares) = deal(512, 3, 2, &mut rng).unwrap();
    let table = EncryptionTable::new(&pk);
    let quantizer = Quantizer::new(16, 1.0).unwrap();
    let total_weight: u64 = s.hospitals.iter().map(|h| h.samples()).sum();
    let codec = UpdateCodec::new(&pk, quantizer, total_weight).unwrap();
    let mut enc = start.clone();
    let unit = 2f32.powi(-16);
    for round in 1..=ROUNDS {
        let ups = updates(&s, &enc, round);
        let cts: Vec<_> = ups
            .iter()
            .map(|u| {
                let e = codec
                    .encrypt(&table, &u.delta, u.samples, Rounding::Nearest, &mut rng)
                    .unwrap();
                assert_eq!(e.clipped, 0, "round {round}: updates exceed the clip bound");
                e.ciphertexts
            })
            .collect();
        let agg = aggregate(&pk, &cts).unwrap();
        let ctx = round.to_be_bytes();
        let dec: Vec<_> = [&shares[0], &shares[2]]
            .iter()
            .map(|sh| partial_decrypt(&pk, sh, &agg, &ctx, &mut rng).unwrap())
            .collect();
        let plaintexts = combine(&pk, &agg, &dec, &ctx).unwrap();
        let avg = codec
            .decode_average(&plaintexts, enc.len(), total_weight)
            .unwrap();

        // The decrypted average is FedAvg of exactly these updates, up to rounding.
        let weighted: Vec<(u64, &[f32])> = ups.iter().map(|u| (u.samples, &u.delta[..])).collect();
        let reference = fedavg::weighted_average(&weighted).unwrap();
        let worst = avg
            .iter()
            .zip(&reference)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(
            worst <= unit,
            "round {round}: decrypted average off by {worst}"
        );
        enc = fedavg::apply(&enc, avg).unwrap();
    }
    let enc_acc = accuracy(&s, &enc);
    eprintln!("after {ROUNDS} rounds: plaintext FedAvg {plain_acc:.4}, encrypted {enc_acc:.4}");

    assert!(plain_acc >= 0.95, "plaintext FedAvg accuracy {plain_acc}");
    assert!(
        (enc_acc - plain_acc).abs() <= 0.01,
        "encrypted {enc_acc} vs plaintext {plain_acc}"
    );
    let start_acc = accuracy(&s, &start);
    assert!(
        enc_acc > start_acc + 0.2,
        "learned nothing: {start_acc} -> {enc_acc}"
    );
}
