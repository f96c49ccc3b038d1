use fedchain_tests::{failed_stderr, fedchain, json, ok_stdout};

fn accuracy(run: &serde_json::Value, part: &str) -> f64 {
    run[part]["accuracy"].as_f64().unwrap()
}

/// The acceptance figure of the foundation issue: the MLP on breast cancer, seed 1, >= 96 %.
#[test]
fn breast_cancer_mlp_reaches_96_percent() {
    let run = json(&fedchain(&[
        "train",
        "--dataset",
        "breast-cancer",
        "--model",
        "mlp",
        "--seed",
        "1",
        "--json",
    ]));
    assert_eq!(run["test_rows"].as_u64(), Some(113));
    let acc = accuracy(&run, "test");
    assert!(acc >= 0.96, "test accuracy {acc}");
    assert!(acc > accuracy(&run, "baseline") + 0.2);
}

/// The acceptance figure for images: the CNN on the 8x8 digits, >= 96 %.
#[test]
fn digits_cnn_reaches_96_percent() {
    let run = json(&fedchain(&[
        "train",
        "--dataset",
        "digits",
        "--model",
        "cnn",
        "--seed",
        "1",
        "--json",
    ]));
    assert_eq!(run["model"]["name"], "cnn");
    let acc = accuracy(&run, "test");
    assert!(acc >= 0.96, "test accuracy {acc}");
}

#[test]
fn regression_reports_r2_and_rmse_in_original_units() {
    let run = json(&fedchain(&[
        "train",
        "--dataset",
        "diabetes",
        "--model",
        "logreg",
        "--epochs",
        "30",
        "--json",
    ]));
    let r2 = run["test"]["r2"].as_f64().unwrap();
    let rmse = run["test"]["rmse"].as_f64().unwrap();
    let base_rmse = run["baseline"]["rmse"].as_f64().unwrap();
    // Disease progression ranges 25..346; a linear model explains a fair part of it (published
    // linear fits reach R^2 about 0.3-0.5 depending on the split; the mean predictor has R^2 <= 0).
    assert!(r2 > 0.2, "R^2 {r2}");
    assert!(
        rmse > 20.0 && rmse < base_rmse,
        "RMSE {rmse} vs baseline {base_rmse}"
    );
}

/// A short run must beat the trivial baseline, and the saved model must be the one trained: the
/// digest printed by `train` is the digest `model info` verifies from the file.
#[test]
fn short_run_beats_baseline_and_saved_model_matches_its_digest() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("m.safetensors");
    let run = json(&fedchain(&[
        "train",
        "--dataset",
        "breast-cancer",
        "--model",
        "logreg",
        "--epochs",
        "3",
        "--seed",
        "7",
        "--out",
        model.to_str().unwrap(),
        "--json",
    ]));
    assert!(
        accuracy(&run, "test") > accuracy(&run, "baseline") + 0.1,
        "{run}"
    );
    assert!(dir.path().join("m.standardizer.json").exists());

    let info = json(&fedchain(&[
        "model",
        "info",
        model.to_str().unwrap(),
        "--json",
    ]));
    assert_eq!(info["digest"], run["model_digest"]);
    assert_eq!(info["parameters"].as_u64(), Some(31));

    // Same seed, same everything: the run reproduces bit for bit (on the CPU).
    let again = json(&fedchain(&[
        "train",
        "--dataset",
        "breast-cancer",
        "--model",
        "logreg",
        "--epochs",
        "3",
        "--seed",
        "7",
        "--device",
        "cpu",
        "--json",
    ]));
    if run["device"].as_str().unwrap().starts_with("cpu") {
        assert_eq!(again["model_digest"], run["model_digest"]);
    }

    // The file says how to prepare rows, so it applies to the raw CSV; bad rows are clear errors.
    assert_eq!(
        info["preprocessing"]["target"], "diagnosis_benign",
        "{info}"
    );
    let csv = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../datasets/data/breast_cancer.csv"
    );
    let m = model.to_str().unwrap();
    let scored = json(&fedchain(&[
        "predict", "--model", m, "--csv", csv, "--json",
    ]));
    assert_eq!(scored["rows"], 569);
    assert!(
        scored["metrics"]["accuracy"].as_f64().unwrap() > accuracy(&run, "baseline") + 0.1,
        "{scored}"
    );
    let rows = dir.path().join("rows.csv");
    std::fs::write(&rows, "mean_radius,mean_texture\n14.1,19.3\n").unwrap();
    let err = failed_stderr(
        &fedchain(&["predict", "--model", m, "--csv", rows.to_str().unwrap()]),
        1,
    );
    assert!(
        err.contains("mean_perimeter") && err.contains("rows.csv"),
        "{err}"
    );
    let header = std::fs::read_to_string(csv).unwrap();
    let (header, first) = {
        let mut lines = header.lines();
        (
            lines.next().unwrap().to_string(),
            lines.next().unwrap().to_string(),
        )
    };
    let broken = first.replacen(|c: char| c.is_ascii_digit(), "x", 1);
    std::fs::write(&rows, format!("{header}\n{first}\n{broken}\n")).unwrap();
    let err = failed_stderr(
        &fedchain(&["predict", "--model", m, "--csv", rows.to_str().unwrap()]),
        1,
    );
    assert!(err.contains("line 3"), "{err}");

    // A corrupted file is refused, naming the problem.
    let mut bytes = std::fs::read(&model).unwrap();
    let n = bytes.len();
    bytes[n - 3] ^= 0x10;
    std::fs::write(&model, bytes).unwrap();
    let err = failed_stderr(&fedchain(&["model", "info", model.to_str().unwrap()]), 1);
    assert!(err.contains("corrupted or was altered"), "{err}");
}

#[test]
fn human_output_names_device_and_metrics() {
    let text = ok_stdout(&fedchain(&[
        "train",
        "--dataset",
        "breast-cancer",
        "--model",
        "logreg",
        "--epochs",
        "2",
    ]));
    assert!(text.contains("device:"), "{text}");
    assert!(text.contains("accuracy"), "{text}");
    assert!(text.contains("digest:  sha256:"), "{text}");
}

#[test]
fn impossible_model_and_hyperparameters_are_clear_errors() {
    let err = failed_stderr(
        &fedchain(&["train", "--dataset", "breast-cancer", "--model", "cnn"]),
        1,
    );
    assert!(
        err.contains("square") && err.contains("--model mlp"),
        "{err}"
    );
    let err = failed_stderr(
        &fedchain(&["train", "--dataset", "digits", "--epochs", "0"]),
        1,
    );
    assert!(err.contains("epochs"), "{err}");
    let err = failed_stderr(
        &fedchain(&["train", "--dataset", "digits", "--test-fraction", "1.5"]),
        1,
    );
    assert!(err.contains("fraction"), "{err}");
}

/// `--device cuda` uses the GPU where libtorch sees one, and is a clear error (not a silent CPU
/// run) where it does not.
#[test]
fn cuda_request_is_honoured_or_refused() {
    let out = fedchain(&[
        "train",
        "--dataset",
        "breast-cancer",
        "--model",
        "logreg",
        "--epochs",
        "1",
        "--device",
        "cuda",
        "--json",
    ]);
    if out.status.success() {
        let run: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert!(
            run["device"].as_str().unwrap().starts_with("cuda:0"),
            "{run}"
        );
    } else {
        let err = failed_stderr(&out, 1);
        assert!(err.contains("no CUDA device"), "{err}");
    }
}

/// `--epsilon`: DP-SGD with the smallest noise that keeps the run within the target, and a report
/// of what it spent; bad targets and a module (not supported yet) are clear errors.
#[test]
fn dp_sgd_training_spends_at_most_its_epsilon_and_says_what_it_did() {
    let run = json(&fedchain(&[
        "train",
        "--dataset",
        "breast-cancer",
        "--model",
        "logreg",
        "--epochs",
        "5",
        "--epsilon",
        "3",
        "--json",
    ]));
    let p = &run["privacy"];
    let spent = p["epsilon"].as_f64().unwrap();
    // At most the target, and close to it: the noise is the smallest that stays within it.
    assert!(spent <= 3.0 && spent > 2.9, "{p}");
    assert_eq!(p["delta"].as_f64(), Some(1e-5));
    assert_eq!(p["max_grad_norm"].as_f64(), Some(1.0));
    // 456 training rows in expected samples of 32: 15 steps an epoch.
    assert_eq!(p["steps"].as_u64(), Some(75), "{p}");
    assert!((p["sampling_rate"].as_f64().unwrap() - 32.0 / 456.0).abs() < 1e-12);
    assert!(p["noise_multiplier"].as_f64().unwrap() > 0.5, "{p}");
    let clipped = p["clipped_fraction"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&clipped), "{p}");
    // Noisy, but a linear model on breast cancer still beats the majority class.
    assert!(accuracy(&run, "test") > accuracy(&run, "baseline"), "{run}");
    // Without --epsilon, no privacy report.
    let plain = json(&fedchain(&[
        "train",
        "--dataset",
        "breast-cancer",
        "--model",
        "logreg",
        "--epochs",
        "1",
        "--json",
    ]));
    assert!(plain.get("privacy").is_none(), "{plain}");

    for (args, says) in [
        (vec!["--epsilon", "0"], "epsilon must be a positive number"),
        (
            vec!["--epsilon", "3", "--delta", "1"],
            "delta must be strictly between 0 and 1",
        ),
        (
            vec!["--epsilon", "3", "--max-grad-norm", "0"],
            "max_grad_norm must be a positive",
        ),
        (vec!["--delta", "1e-6"], "--epsilon"),
    ] {
        let mut all = vec!["train", "--dataset", "breast-cancer", "--model", "logreg"];
        all.extend(args);
        let err = failed_stderr(&fedchain(&all), if says == "--epsilon" { 2 } else { 1 });
        assert!(err.contains(says), "{says}: {err}");
    }
}

/// `privacy epsilon` and `privacy noise` are the accountant `train --epsilon` used: they give back
/// its figures, and refuse what is not a DP-SGD run.
#[test]
fn the_privacy_commands_recompute_what_training_spent() {
    let run = json(&fedchain(&[
        "train",
        "--dataset",
        "breast-cancer",
        "--model",
        "logreg",
        "--epochs",
        "2",
        "--epsilon",
        "2",
        "--json",
    ]));
    let p = &run["privacy"];
    let (q, steps, sigma) = (
        p["sampling_rate"].as_f64().unwrap().to_string(),
        p["steps"].as_u64().unwrap().to_string(),
        p["noise_multiplier"].as_f64().unwrap().to_string(),
    );
    let spent = json(&fedchain(&[
        "privacy",
        "epsilon",
        "--sampling-rate",
        &q,
        "--steps",
        &steps,
        "--noise-multiplier",
        &sigma,
        "--json",
    ]));
    assert_eq!(spent["epsilon"], p["epsilon"], "{spent} vs {p}");
    let noise = json(&fedchain(&[
        "privacy",
        "noise",
        "--sampling-rate",
        &q,
        "--steps",
        &steps,
        "--epsilon",
        "2",
        "--json",
    ]));
    assert_eq!(
        noise["noise_multiplier"], p["noise_multiplier"],
        "{noise} vs {p}"
    );
    let text = ok_stdout(&fedchain(&[
        "privacy",
        "epsilon",
        "--sampling-rate",
        "0.01",
        "--steps",
        "100",
        "--noise-multiplier",
        "1",
    ]));
    assert!(text.contains("epsilon 1.21"), "{text}");
    for (args, says) in [
        (
            vec![
                "epsilon",
                "--sampling-rate",
                "2",
                "--steps",
                "1",
                "--noise-multiplier",
                "1",
            ],
            "sampling rate must be between 0 and 1",
        ),
        (
            vec![
                "epsilon",
                "--sampling-rate",
                "0.1",
                "--steps",
                "1",
                "--noise-multiplier=-1",
            ],
            "--noise-multiplier must be zero or a positive number",
        ),
        (
            vec![
                "noise",
                "--sampling-rate",
                "1",
                "--steps",
                "1000000",
                "--epsilon",
                "0.000001",
            ],
            "needs a noise multiplier above 10,000",
        ),
    ] {
        let mut all = vec!["privacy"];
        all.extend(args);
        let err = failed_stderr(&fedchain(&all), 1);
        assert!(err.contains(says), "{says}: {err}");
    }
}
