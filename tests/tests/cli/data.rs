use fedchain_datasets::{load_csv, Builtin};
use fedchain_tests::{failed_stderr, fedchain, json, ok_stdout};

#[test]
fn split_writes_one_csv_per_hospital_and_a_summary() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("split");
    let summary = json(&fedchain(&[
        "data",
        "split",
        "--dataset",
        "breast-cancer",
        "--hospitals",
        "3",
        "--scheme",
        "dirichlet",
        "--alpha",
        "0.5",
        "--seed",
        "4",
        "--out",
        out.to_str().unwrap(),
        "--json",
    ]));
    let hospitals = summary["hospitals"].as_array().unwrap();
    assert_eq!(hospitals.len(), 3);

    // Every row lands at exactly one hospital: reload each file and recount.
    let full = Builtin::BreastCancer.load().unwrap();
    let mut rows = 0;
    let mut benign = 0;
    for (i, h) in hospitals.iter().enumerate() {
        let part = load_csv(&out.join(format!("hospital-{}.csv", i + 1)), &full.schema()).unwrap();
        assert_eq!(h["rows"].as_u64().unwrap() as usize, part.len());
        rows += part.len();
        benign += part.targets().iter().filter(|&&t| t == 1.0).count();
    }
    assert_eq!(rows, 569);
    assert_eq!(benign, 357);
    let on_disk: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(on_disk, summary);
}

#[test]
fn split_prints_a_table_and_refuses_to_overwrite_without_force() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().to_str().unwrap();
    let args = [
        "data",
        "split",
        "--dataset",
        "digits",
        "--hospitals",
        "4",
        "--scheme",
        "iid",
        "--out",
        out,
    ];
    let text = ok_stdout(&fedchain(&args));
    assert!(text.contains("hospital-4.csv"), "{text}");
    let err = failed_stderr(&fedchain(&args), 1);
    assert!(
        err.contains("not empty") && err.contains("--force"),
        "{err}"
    );
    let mut forced = args.to_vec();
    forced.push("--force");
    ok_stdout(&fedchain(&forced));
}

#[test]
fn bad_split_requests_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("o");
    let out = out.to_str().unwrap();
    let err = failed_stderr(
        &fedchain(&[
            "data",
            "split",
            "--dataset",
            "diabetes",
            "--hospitals",
            "0",
            "--out",
            out,
        ]),
        1,
    );
    assert!(err.contains("hospital"), "{err}");
    let err = failed_stderr(
        &fedchain(&[
            "data",
            "split",
            "--dataset",
            "diabetes",
            "--hospitals",
            "2",
            "--scheme",
            "zipf",
            "--out",
            out,
        ]),
        1,
    );
    assert!(err.contains("zipf"), "{err}");
    // Unknown dataset names are usage errors that list the valid ones.
    let err = failed_stderr(
        &fedchain(&[
            "data",
            "split",
            "--dataset",
            "mnist",
            "--hospitals",
            "2",
            "--out",
            out,
        ]),
        2,
    );
    assert!(err.contains("breast-cancer"), "{err}");
}

#[test]
fn a_hospitals_own_bad_csv_gets_file_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("export.csv");
    std::fs::write(&path, "age,bmi,outcome\n61,24.1,0\n58,n/a,1\n").unwrap();
    let err = failed_stderr(
        &fedchain(&[
            "train",
            "--csv",
            path.to_str().unwrap(),
            "--target",
            "outcome",
            "--task",
            "binary",
        ]),
        1,
    );
    assert!(err.contains("export.csv"), "{err}");
    assert!(err.contains("line 3"), "{err}");
    assert!(err.contains("bmi"), "{err}");
    assert!(err.contains("n/a"), "{err}");

    // --csv without a schema says what is missing.
    let err = failed_stderr(&fedchain(&["train", "--csv", path.to_str().unwrap()]), 1);
    assert!(err.contains("--target") && err.contains("--task"), "{err}");
}

#[test]
fn data_list_names_the_bundled_datasets() {
    let list = json(&fedchain(&["data", "list", "--json"]));
    let names: Vec<_> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["breast-cancer", "diabetes", "digits"]);
}

/// `--names` writes each hospital's rows to its own name, says which file is whose, and refuses
/// names that disagree with `--hospitals` or that no party could have.
#[test]
fn split_names_the_files_after_the_hospitals() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("exports");
    let text = ok_stdout(&fedchain(&[
        "data",
        "split",
        "--dataset",
        "diabetes",
        "--names",
        "oslo,bergen,tromso",
        "--out",
        out.to_str().unwrap(),
    ]));
    for name in ["oslo", "bergen", "tromso"] {
        assert!(out.join(format!("{name}.csv")).exists(), "{text}");
        assert!(text.contains(&format!("for hospital {name}")), "{text}");
    }
    assert!(!out.join("hospital-1.csv").exists());
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["hospitals"][1]["file"], "bergen.csv");

    let other = dir.path().join("other");
    let err = failed_stderr(
        &fedchain(&[
            "data",
            "split",
            "--dataset",
            "diabetes",
            "--hospitals",
            "2",
            "--names",
            "a,b,c",
            "--out",
            other.to_str().unwrap(),
        ]),
        1,
    );
    assert!(err.contains("--names lists 3 names"), "{err}");
    let err = failed_stderr(
        &fedchain(&[
            "data",
            "split",
            "--dataset",
            "diabetes",
            "--names",
            "Oslo,../x",
            "--out",
            other.to_str().unwrap(),
        ]),
        1,
    );
    assert!(err.contains("invalid party name"), "{err}");
}
