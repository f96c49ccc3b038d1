//! The libtorch half of fedchain-models against the pure half: the network libtorch builds must
//! hold exactly the flat vector the layout defines, and training must learn.

use fedchain_datasets::{train_test_split, Builtin, Standardizer, TaskKind};
use fedchain_models::{
    evaluate, init_params, metrics, num_parameters, train, Model, ModelDigest, ModelError,
    ModelKind, ModelSpec, TrainConfig,
};
use tch::Device;

fn specs() -> Vec<ModelSpec> {
    vec![
        ModelSpec::preset(ModelKind::Logreg, 30, TaskKind::Binary).unwrap(),
        ModelSpec::preset(ModelKind::Mlp, 10, TaskKind::Regression).unwrap(),
        ModelSpec::preset(ModelKind::Cnn, 64, TaskKind::Multiclass { classes: 10 }).unwrap(),
    ]
}

#[test]
fn flat_parameters_roundtrip_through_libtorch_exactly() {
    for spec in specs() {
        let model = Model::new(&spec, Device::Cpu, 11).unwrap();
        assert_eq!(model.params().unwrap(), init_params(&spec, 11), "{spec}");

        // Arbitrary values that differ at every position.
        let flat: Vec<f32> = (0..num_parameters(&spec))
            .map(|i| (i as f32 * 0.37).sin() * 1e-2 + i as f32 * 1e-6)
            .collect();
        let mut model = Model::new(&spec, Device::Cpu, 0).unwrap();
        model.set_params(&flat).unwrap();
        assert_eq!(model.params().unwrap(), flat, "{spec}");
        assert_eq!(model.digest().unwrap(), ModelDigest::of(&flat));
    }
}

#[test]
fn the_layout_is_what_the_network_computes_with() {
    // Logistic regression on 3 inputs: output = w . x + b. Put w = (1, 2, 3), b = 0.5 through the
    // flat vector (sorted order: linear.bias, then linear.weight) and check libtorch uses them so.
    let spec = ModelSpec::LogisticRegression {
        inputs: 3,
        outputs: 1,
    };
    let model = Model::from_params(&spec, &[0.5, 1.0, 2.0, 3.0], Device::Cpu).unwrap();
    let x = tch::Tensor::from_slice(&[1.0f32, 1.0, 1.0, 0.0, 0.0, 2.0]).view([2, 3]);
    let y = Vec::<f32>::try_from(&model.forward_t(&x, false).unwrap().view(-1)).unwrap();
    assert_eq!(y, [6.5, 6.5]);
}

#[test]
fn digests_are_stable_across_runs() {
    let spec = ModelSpec::preset(ModelKind::Mlp, 30, TaskKind::Binary).unwrap();
    let a = Model::new(&spec, Device::Cpu, 1).unwrap().digest().unwrap();
    let b = Model::new(&spec, Device::Cpu, 1).unwrap().digest().unwrap();
    assert_eq!(a, b);
    // Pinned: the initial breast-cancer MLP for seed 1. A change here means every party of a
    // consortium running mixed versions would start from different models.
    assert_eq!(
        a.to_hex(),
        "2c757fbe27fa80da37c418438eef69bbf5db5b5710a8973f0324e818ec083d55",
        "initial parameters changed (rand/ChaCha8 sampling or layout)"
    );
}

#[test]
fn bad_parameter_vectors_leave_the_model_unchanged() {
    let spec = ModelSpec::preset(ModelKind::Mlp, 30, TaskKind::Binary).unwrap();
    let mut model = Model::new(&spec, Device::Cpu, 3).unwrap();
    let before = model.digest().unwrap();
    let n = num_parameters(&spec);
    assert!(matches!(
        model.set_params(&vec![0.0; n - 1]),
        Err(ModelError::WrongLength { .. })
    ));
    let mut nan = vec![0.0; n];
    nan[n / 2] = f32::NAN;
    assert!(matches!(
        model.set_params(&nan),
        Err(ModelError::NotFinite { .. })
    ));
    assert_eq!(model.digest().unwrap(), before);
}

#[test]
fn saved_models_load_back_identical_and_predict_the_same() {
    let data = Builtin::Digits.load().unwrap();
    let spec = ModelSpec::preset(ModelKind::Cnn, 64, data.task()).unwrap();
    let model = Model::new(&spec, Device::Cpu, 5).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cnn.safetensors");
    model.save(&path).unwrap();
    let back = Model::load(&path, Device::Cpu).unwrap();
    assert_eq!(back.spec(), &spec);
    assert_eq!(back.digest().unwrap(), model.digest().unwrap());
    let some = data.subset(&(0..50).collect::<Vec<_>>());
    assert_eq!(back.predict(&some).unwrap(), model.predict(&some).unwrap());
}

#[test]
fn a_short_run_beats_the_trivial_baseline_and_repeats_exactly() {
    let data = Builtin::BreastCancer.load().unwrap();
    let (train_raw, test_raw) = train_test_split(&data, 0.25, 2).unwrap();
    let scaler = Standardizer::fit(&train_raw);
    let (train_set, test_set) = (
        scaler.apply(&train_raw).unwrap(),
        scaler.apply(&test_raw).unwrap(),
    );
    let spec = ModelSpec::preset(ModelKind::Logreg, data.n_features(), data.task()).unwrap();
    let config = TrainConfig {
        epochs: 3,
        learning_rate: 1e-2,
        seed: 2,
        ..TrainConfig::default()
    };
    let run = || {
        let mut model = Model::new(&spec, Device::Cpu, 2).unwrap();
        let mut epochs = 0;
        let reports = train(&mut model, &train_set, &config, |_| epochs += 1).unwrap();
        assert_eq!(epochs, 3);
        assert!(reports[2].loss < reports[0].loss, "{reports:?}");
        model
    };
    let model = run();
    let m = evaluate(&model, &test_set, Some(&scaler)).unwrap();
    let base = metrics::baseline(data.task(), train_raw.targets(), test_raw.targets());
    assert!(
        m.accuracy.unwrap() > base.accuracy.unwrap() + 0.2,
        "{m} vs baseline {base}"
    );
    assert_eq!(run().digest().unwrap(), model.digest().unwrap());
}

#[test]
fn models_refuse_data_of_another_shape() {
    let data = Builtin::Diabetes.load().unwrap();
    let spec = ModelSpec::preset(ModelKind::Mlp, 30, TaskKind::Binary).unwrap();
    let mut model = Model::new(&spec, Device::Cpu, 1).unwrap();
    let err = train(&mut model, &data, &TrainConfig::default(), |_| {}).unwrap_err();
    assert!(err.to_string().contains("10 features"), "{err}");
    let err = TrainConfig {
        learning_rate: f64::NAN,
        ..TrainConfig::default()
    }
    .validate()
    .unwrap_err();
    assert!(err.to_string().contains("learning rate"), "{err}");
}
