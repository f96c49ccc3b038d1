//! End-to-end use of the public API, as the CLI and workers use it.

use fedchain_datasets::{
    load_csv, parse_csv, partition, train_test_split, write_split, Builtin, DataError, Dataset,
    Schema, Scheme, Standardizer, TaskKind,
};
use proptest::prelude::*;

fn bits(values: &[f32]) -> Vec<u32> {
    values.iter().map(|v| v.to_bits()).collect()
}

#[test]
fn every_builtin_round_trips_through_csv_bit_for_bit() {
    let dir = tempfile::tempdir().unwrap();
    for builtin in Builtin::ALL {
        let ds = builtin.load().unwrap();
        let path = dir.path().join(format!("{}.csv", builtin.name()));
        ds.write_csv(&path).unwrap();
        let back = load_csv(&path, &ds.schema()).unwrap();
        assert_eq!(back.name(), builtin.name());
        assert_eq!(back.feature_names(), ds.feature_names());
        assert_eq!(back.task(), ds.task());
        assert_eq!(bits(back.features()), bits(ds.features()), "{builtin}");
        assert_eq!(bits(back.targets()), bits(ds.targets()), "{builtin}");
        assert_eq!(back, ds);
    }
}

#[test]
fn split_scale_partition_and_reload_a_hospital() {
    let ds = Builtin::BreastCancer.load().unwrap();
    let (train, test) = train_test_split(&ds, 0.2, 1).unwrap();

    // Statistics travel as JSON to the party that scales the test rows.
    let json = Standardizer::fit(&train).to_json();
    let scaler = Standardizer::from_json(&json).unwrap();
    let test_scaled = scaler.apply(&test).unwrap();
    assert_eq!(test_scaled.len(), test.len());
    assert!(test_scaled.features().iter().all(|v| v.is_finite()));

    let p = partition(&train, 4, Scheme::Dirichlet { alpha: 0.5 }, 7).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let summary = write_split(&train, &p, dir.path()).unwrap();
    assert_eq!(summary.hospitals.len(), 4);
    let mut rows = 0;
    for h in &summary.hospitals {
        let path = dir.path().join(format!("hospital-{}.csv", h.hospital));
        let part = load_csv(&path, &train.schema()).unwrap();
        assert_eq!(part.len(), h.rows);
        let mut histogram = vec![0; 2];
        for i in 0..part.len() {
            histogram[part.label(i).unwrap()] += 1;
        }
        assert_eq!(histogram, h.label_histogram);
        // A hospital scales its own rows with the shared statistics.
        scaler.apply(&part).unwrap();
        rows += part.len();
    }
    assert_eq!(rows, train.len());
    assert!(summary.to_table().contains("total"));
}

#[test]
fn a_hospital_export_with_an_id_column_and_explicit_features() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("st-mary.csv");
    std::fs::write(
        &path,
        "patient_id,age,systolic_bp,readmitted\r\nA17,63,141,1\r\nB02,48,122,0\r\n",
    )
    .unwrap();
    let schema: Schema = serde_json::from_str(
        r#"{"features":["systolic_bp","age"],"target":"readmitted","task":{"kind":"binary"}}"#,
    )
    .unwrap();
    let ds: Dataset = load_csv(&path, &schema).unwrap();
    assert_eq!(ds.name(), "st-mary");
    assert_eq!(ds.feature_names(), ["systolic_bp", "age"]);
    assert_eq!(ds.row(0), [141.0, 63.0]);
    assert_eq!(ds.targets(), [1.0, 0.0]);
    assert_eq!(ds.task(), TaskKind::Binary);
}

#[test]
fn errors_from_a_real_file_name_the_path_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("export.csv");
    std::fs::write(&path, "age,sick\n40,0\n41,1\nn/a,0\n").unwrap();
    let schema = Schema {
        features: None,
        target: "sick".into(),
        task: TaskKind::Binary,
        image: None,
    };
    let err = load_csv(&path, &schema).unwrap_err();
    assert!(matches!(err, DataError::NotNumeric { line: 4, .. }));
    let msg = err.to_string();
    assert!(msg.starts_with(&path.display().to_string()), "{msg}");
    assert!(msg.contains("line 4, column 'age': 'n/a'"), "{msg}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Whatever the bytes, parsing returns a value or an error; it never panics.
    #[test]
    fn parse_never_panics_on_arbitrary_bytes(
        bytes in proptest::collection::vec(
            prop_oneof![
                Just(b','), Just(b'\n'), Just(b'\r'), Just(b'"'), Just(b' '),
                Just(b'1'), Just(b'0'), Just(b'.'), Just(b'e'), Just(b'y'), Just(b'x'),
                any::<u8>(),
            ],
            0..200,
        ),
        task in prop_oneof![
            Just(TaskKind::Binary),
            Just(TaskKind::Regression),
            Just(TaskKind::Multiclass { classes: 3 }),
        ],
    ) {
        let schema = Schema { features: None, target: "y".into(), task, image: None };
        let mut with_header = b"x,y\n".to_vec();
        with_header.extend_from_slice(&bytes);
        for input in [&bytes[..], &with_header[..]] {
            if let Ok(ds) = parse_csv(input, "fuzz", &schema) {
                prop_assert!(!ds.is_empty());
                prop_assert_eq!(ds.features().len(), ds.len() * ds.n_features());
                prop_assert!(ds.features().iter().chain(ds.targets()).all(|v| v.is_finite()));
            }
        }
    }
}
