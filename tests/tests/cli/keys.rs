//! The threshold key ceremony and share checks through the binary, and the crypto and round
//! benchmark commands. 512-bit keys keep these fast; the maths does not depend on the size.

use fedchain_tests::{failed_stderr, fedchain, json, ok_stdout};

#[test]
fn ceremony_writes_public_key_and_owner_only_shares_that_check() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("keys");
    let o = out.to_str().unwrap();
    let report = json(&fedchain(&[
        "keys",
        "deal",
        "--parties",
        "3",
        "--threshold",
        "2",
        "--bits",
        "512",
        "--out",
        o,
        "--json",
    ]));
    assert_eq!(report["modulus_bits"], 512);
    assert_eq!(report["files"].as_array().unwrap().len(), 4);
    for i in 1..=3 {
        let share = out.join(format!("share-{i}.key"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&share).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "share {i}");
        }
        let text = ok_stdout(&fedchain(&[
            "keys",
            "check",
            "--public",
            &format!("{o}/public.key"),
            "--share",
            share.to_str().unwrap(),
        ]));
        assert!(text.contains(&format!("party {i}'s share")), "{text}");
    }
    // Never overwrite a ceremony.
    let err = failed_stderr(
        &fedchain(&[
            "keys",
            "deal",
            "--parties",
            "3",
            "--threshold",
            "2",
            "--bits",
            "512",
            "--out",
            o,
        ]),
        1,
    );
    assert!(err.contains("already there"), "{err}");

    // A share of another key, and a corrupted share, fail the check with exit 1.
    let other = dir.path().join("other");
    ok_stdout(&fedchain(&[
        "keys",
        "deal",
        "--parties",
        "2",
        "--threshold",
        "1",
        "--bits",
        "512",
        "--out",
        other.to_str().unwrap(),
    ]));
    let err = failed_stderr(
        &fedchain(&[
            "keys",
            "check",
            "--public",
            &format!("{o}/public.key"),
            "--share",
            other.join("share-1.key").to_str().unwrap(),
        ]),
        1,
    );
    assert!(err.contains("another public key"), "{err}");
    let share = out.join("share-2.key");
    let mut bytes = std::fs::read(&share).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    let bad = dir.path().join("bad.key");
    std::fs::write(&bad, bytes).unwrap();
    let err = failed_stderr(
        &fedchain(&[
            "keys",
            "check",
            "--public",
            &format!("{o}/public.key"),
            "--share",
            bad.to_str().unwrap(),
        ]),
        1,
    );
    assert!(
        err.contains("does not match its public verification key"),
        "{err}"
    );
}

#[test]
fn bad_ceremony_parameters_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let o = dir.path().to_str().unwrap();
    let err = failed_stderr(
        &fedchain(&[
            "keys",
            "deal",
            "--parties",
            "3",
            "--threshold",
            "4",
            "--out",
            o,
        ]),
        1,
    );
    assert!(err.contains("threshold"), "{err}");
    let err = failed_stderr(
        &fedchain(&[
            "keys",
            "deal",
            "--parties",
            "3",
            "--threshold",
            "2",
            "--bits",
            "1001",
            "--out",
            o,
        ]),
        1,
    );
    assert!(err.contains("2048"), "{err}");
}

#[test]
fn crypto_benchmark_reports_every_figure() {
    let r = json(&fedchain(&[
        "bench",
        "crypto",
        "--bits",
        "512",
        "--values",
        "2000",
        "--decrypt",
        "4",
        "--json",
    ]));
    for key in [
        "key_ceremony_ms_wall",
        "naive_encrypt_us_per_value",
        "packed_encrypt_us_per_value",
        "add_us_per_ciphertext",
        "partial_decrypt_us_per_ciphertext",
        "bare_powm_us_per_ciphertext",
        "verify_us_per_ciphertext",
        "combine_us_per_ciphertext",
        "packed_bytes_per_value",
        "encrypt_threads_speedup",
        "partial_decrypt_threads_speedup",
        "verify_threads_speedup",
    ] {
        assert!(r[key].as_f64().unwrap() > 0.0, "{key}: {r}");
    }
    // A share costs at least the exponentiations it is made of (timing noise aside, well above
    // half of them), and the report's ratio is its own two figures.
    let ratio = r["floor_ratio"].as_f64().unwrap();
    let measured = r["partial_decrypt_us_per_ciphertext"].as_f64().unwrap()
        / r["bare_powm_us_per_ciphertext"].as_f64().unwrap();
    assert!((ratio - measured).abs() < 1e-9 * measured, "{r}");
    assert!(ratio > 0.5, "{r}");
    // Packing puts many values in each ciphertext: far fewer bytes per value than one each.
    assert!(
        r["packed_bytes_per_value"].as_f64().unwrap() * 10.0
            < r["naive_bytes_per_value"].as_f64().unwrap()
    );
}

/// `bench round` runs real rounds of a demo job and reports both rounds phase by phase. A 512-bit
/// key and one round of logistic regression keep it quick: this checks what the report says and
/// that its figures add up, not how fast anything is.
#[test]
fn round_benchmark_reports_both_rounds_phase_by_phase() {
    let r = json(&fedchain(&[
        "bench", "round", "--model", "logreg", "--rounds", "2", "--bits", "512", "--json",
    ]));
    assert_eq!(r["dataset"], "breast-cancer", "{r}");
    assert_eq!(r["model"], "logreg", "{r}");
    assert_eq!(r["parameters"], 31, "30 weights and a bias: {r}");
    // Each primary's share was within the budget its probed cost gives it.
    assert_eq!(r["wasted_shares"], 0, "{r}");
    assert_eq!(r["hospitals"], 3);
    let cts = r["ciphertexts_per_update"].as_u64().unwrap();
    assert!(cts >= 1, "{r}");
    // Each ciphertext is one element of Z_{N^2}: 2 * 512 bits.
    assert!(
        r["upload_bytes_per_hospital"].as_u64().unwrap() >= cts * 128,
        "{r}"
    );
    let phase = |side: &str, name: &str| r[side][name].as_f64().unwrap();
    for name in [
        "train_s",
        "encrypt_s",
        "upload_s",
        "aggregate_s",
        "decrypt_s",
        "ledger_s",
    ] {
        assert!(phase("encrypted_phases", name) > 0.0, "{name}: {r}");
    }
    for name in ["encrypt_s", "aggregate_s", "decrypt_s"] {
        assert_eq!(phase("plaintext_phases", name), 0.0, "{name}: {r}");
    }
    let sum = |side: &str| -> f64 {
        r[side]
            .as_object()
            .unwrap()
            .values()
            .map(|v| v.as_f64().unwrap())
            .sum()
    };
    let (enc, plain) = (
        r["encrypted_round_s"].as_f64().unwrap(),
        r["plaintext_round_s"].as_f64().unwrap(),
    );
    // The plaintext round is its phases; the encrypted one is the critical path, at most its
    // phases (the slowest hospital's train plus encrypt, not the slowest of each).
    assert!((plain - sum("plaintext_phases")).abs() < 1e-9, "{r}");
    assert!(enc <= sum("encrypted_phases") + 1e-9 && enc > 0.0, "{r}");
    assert!(
        (r["ratio"].as_f64().unwrap() - enc / plain).abs() < 1e-6,
        "{r}"
    );
    let accuracy = r["final_accuracy_encrypted"].as_f64().unwrap();
    assert!(accuracy > 0.5 && accuracy <= 1.0, "{r}");
}

/// `bench round --params N` (model size as an axis): a synthetic model's round with both slot
/// layouts. Checks the report's packing figures and the decoded average's accuracy against the
/// layout's quantization unit, not speed.
#[test]
fn params_benchmark_reports_packing_and_an_exact_enough_average() {
    let run = |quant: Option<&str>| {
        let mut args = vec![
            "bench", "round", "--params", "3000", "--bits", "512", "--json",
        ];
        if let Some(q) = quant {
            args.extend(["--quant-bits", q]);
        }
        json(&fedchain(&args))
    };
    let fixed = run(None);
    let q8 = run(Some("8"));
    for r in [&fixed, &q8] {
        assert_eq!(r["parameters"], 3000, "{r}");
        let slots = r["slots_per_ciphertext"].as_u64().unwrap();
        let slot_bits = r["slot_bits"].as_u64().unwrap();
        // floor((512 - 2) / w) slots of w bits, and as many ciphertexts as 3000 values need.
        assert_eq!(slots, 510 / slot_bits, "{r}");
        assert_eq!(
            r["ciphertexts_per_update"].as_u64().unwrap(),
            3000u64.div_ceil(slots),
            "{r}"
        );
        assert_eq!(r["clipped_values"], 0, "{r}");
        let phases = ["encrypt_s", "aggregate_s", "share_s", "verify_combine_s"];
        let sum: f64 = phases.iter().map(|p| r[p].as_f64().unwrap()).sum();
        assert!(
            (r["crypto_round_s"].as_f64().unwrap() - sum).abs() < 1e-9,
            "{r}"
        );
        assert!(r["process_peak_rss_mib"].as_f64().unwrap() > 0.0, "{r}");
        // The coordinator's budget before a backup: its 5 s allowance and more; a 512-bit share
        // of a few ciphertexts is far inside it, so no share is computed for nothing.
        assert!(r["share_budget_s"].as_f64().unwrap() >= 5.0, "{r}");
        assert_eq!(r["wasted_shares"], 0, "{r}");
        // Spread over the 3 hospitals with t = 2: each decrypts two thirds of the ciphertexts
        // (within a block), and says what one share of all of them costs for the ratio.
        let count = r["ciphertexts_per_update"].as_u64().unwrap();
        let mine = r["ciphertexts_per_decryptor"].as_u64().unwrap();
        assert!(mine < count && mine <= (2 * count).div_ceil(3) + 1, "{r}");
        let (share, whole) = (
            r["share_s"].as_f64().unwrap(),
            r["whole_share_s"].as_f64().unwrap(),
        );
        assert!(whole > 0.0, "{r}");
        assert!(
            (r["share_work_ratio"].as_f64().unwrap() - share / whole).abs() < 1e-9,
            "{r}"
        );
    }
    // Ten hospitals and t = 3: three tenths each.
    let ten = json(&fedchain(&[
        "bench",
        "round",
        "--params",
        "3000",
        "--bits",
        "512",
        "--quant-bits",
        "8",
        "--hospitals",
        "10",
        "--threshold",
        "3",
        "--json",
    ]));
    assert_eq!(
        (ten["hospitals"].as_u64(), ten["threshold"].as_u64()),
        (Some(10), Some(3)),
        "{ten}"
    );
    let count = ten["ciphertexts_per_update"].as_u64().unwrap();
    let mine = ten["ciphertexts_per_decryptor"].as_u64().unwrap();
    assert!(mine <= (3 * count).div_ceil(10) + 3, "{ten}");
    // 16 fractional bits times 1,000 rows: sums up to 1000 x 2^16, 26 bits and a sign; 8 bits for
    // 3 hospitals: sums up to 3 x 127, 9 bits and a sign.
    assert_eq!(fixed["slot_bits"], 27, "{fixed}");
    assert_eq!(q8["quant_bits"], 8, "{q8}");
    assert_eq!(q8["slot_bits"], 10, "{q8}");
    // Half a unit for the fixed point (nearest rounding, weighted average of errors <= 2^-17),
    // and within one unit per hospital, clip / S = 0.25 / 381, for 8 bits (stochastic rounding).
    assert!(
        fixed["max_abs_error"].as_f64().unwrap() <= 2f64.powi(-17) + 1e-9,
        "{fixed}"
    );
    let e8 = q8["max_abs_error"].as_f64().unwrap();
    assert!(e8 <= 3.0 * 0.25 / 381.0 && e8 > 0.0, "{q8}");
}

#[test]
fn dp_benchmark_times_both_trainings_of_the_same_model() {
    let r = json(&fedchain(&[
        "bench", "dp", "--model", "logreg", "--epochs", "1", "--json",
    ]));
    assert_eq!(r["dataset"], "breast-cancer", "{r}");
    assert_eq!(r["rows"], 569, "{r}");
    let (plain, dp) = (
        r["plain_epoch_s"].as_f64().unwrap(),
        r["dp_epoch_s"].as_f64().unwrap(),
    );
    assert!(plain > 0.0 && dp > 0.0, "{r}");
    assert!(
        (r["ratio"].as_f64().unwrap() - dp / plain).abs() < 1e-9,
        "{r}"
    );
    // One epoch is enough for both to learn something on breast cancer.
    assert!(r["plain_accuracy"].as_f64().unwrap() > 0.8, "{r}");
    assert!(r["dp_accuracy"].as_f64().unwrap() > 0.6, "{r}");
    let e = failed_stderr(&fedchain(&["bench", "dp", "--epochs", "0"]), 1);
    assert!(e.contains("at least 1"), "{e}");
}
