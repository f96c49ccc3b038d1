//! A hospital's private round: the DP-SGD run is the mechanism the ledger accounts for its rows
//! (`fedchain_protocol::privacy::Mechanism`), whatever the rows, batch and epochs, and its noise
//! is the one derived for those rows; `local_round_dp` refuses to return an update otherwise.

use fedchain_datasets::Builtin;
use fedchain_models::{init_params, ModelKind, ModelSpec, TrainConfig};
use fedchain_proto::v1 as pb;
use fedchain_worker::{local_round_dp, LocalData};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;

#[test]
fn a_private_round_runs_the_accounted_mechanism_for_any_rows_batch_and_epochs() {
    let data = Builtin::BreastCancer.load().unwrap();
    let model = ModelSpec::preset(ModelKind::Logreg, data.n_features(), data.task()).unwrap();
    let global = init_params(&model, 3);
    let mut rng = ChaCha20Rng::seed_from_u64(4);
    // Fewer rows than a batch; rows not a multiple of the batch; several epochs.
    for (rows, batch, epochs) in [(20usize, 32u32, 1u32), (101, 16, 3), (250, 50, 2)] {
        let picked: Vec<usize> = (0..rows * 5 / 4).collect();
        let local = LocalData::prepare(&data.subset(&picked), 0.2, 1).unwrap();
        let job = pb::JobSpec {
            rounds: 4,
            local_epochs: epochs,
            batch_size: batch,
            learning_rate: 0.01,
            privacy: Some(pb::Privacy {
                epsilon: 4.0,
                delta: 1e-5,
                max_grad_norm: 1.0,
                noise_multiplier: 0.0,
                distributed: false,
            }),
            ..Default::default()
        };
        let config = TrainConfig {
            epochs: epochs as usize,
            batch_size: batch as usize,
            learning_rate: 0.01,
            seed: 1,
            ..TrainConfig::default()
        };
        let update = local_round_dp(
            &job,
            &model,
            &global,
            &local,
            &config,
            tch::Device::Cpu,
            &mut rng,
        )
        .unwrap_or_else(|e| panic!("{rows} rows, batch {batch}, {epochs} epochs: {e}"));
        assert_eq!(update.samples, local.samples());
        assert_eq!(update.delta.len(), global.len());
        assert!(update.delta.iter().any(|d| *d != 0.0));
        // Not the job's mechanism: a config other than the spec's is refused.
        let other = TrainConfig {
            epochs: epochs as usize + 1,
            ..config.clone()
        };
        let e = local_round_dp(
            &job,
            &model,
            &global,
            &local,
            &other,
            tch::Device::Cpu,
            &mut rng,
        )
        .unwrap_err();
        assert!(e.to_string().contains("but the job accounts"), "{e}");
    }
}
