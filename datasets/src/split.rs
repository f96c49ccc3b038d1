//! Seeded train/test splits.

use crate::dataset::Dataset;
use crate::error::{DataError, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// Splits `ds` into (train, test), with about `test_fraction` of the rows in test.
///
/// Classification splits are stratified: each class contributes `round(n_c * test_fraction)` of
/// its rows to test, so both parts keep the class balance (to within one row per class), which
/// matters for the skewed labels typical of clinical data. Regression splits are a plain shuffle.
/// Rows in both parts come in a shuffled order. The same seed gives the same split on every
/// platform.
///
/// Errors with [`DataError::InvalidArgument`] if `test_fraction` is not strictly between 0 and 1,
/// or if either part would be empty.
pub fn train_test_split(ds: &Dataset, test_fraction: f64, seed: u64) -> Result<(Dataset, Dataset)> {
    // Written so that NaN fails too.
    if !(test_fraction > 0.0 && test_fraction < 1.0) {
        return Err(DataError::InvalidArgument(format!(
            "test fraction must be strictly between 0 and 1, got {test_fraction}"
        )));
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let take = |n: usize| (n as f64 * test_fraction).round() as usize;

    let groups: Vec<Vec<usize>> = match ds.task().classes() {
        Some(classes) => {
            let mut groups = vec![Vec::new(); classes];
            for i in 0..ds.len() {
                if let Some(label) = ds.label(i) {
                    groups[label].push(i);
                }
            }
            groups
        }
        None => vec![(0..ds.len()).collect()],
    };
    let (mut train, mut test) = (Vec::new(), Vec::new());
    for mut rows in groups {
        rows.shuffle(&mut rng);
        let n_test = take(rows.len());
        test.extend_from_slice(&rows[..n_test]);
        train.extend_from_slice(&rows[n_test..]);
    }

    if train.is_empty() || test.is_empty() {
        let empty = if test.is_empty() { "test" } else { "train" };
        return Err(DataError::InvalidArgument(format!(
            "a test fraction of {test_fraction} leaves the {empty} set of {} empty ({} rows{}); \
             choose a fraction nearer 0.5 or use more rows",
            ds.name(),
            ds.len(),
            if ds.task().classes().is_some() {
                ", split per class"
            } else {
                ""
            },
        )));
    }
    // Interleave the classes, which the per-class loop left in blocks.
    train.shuffle(&mut rng);
    test.shuffle(&mut rng);
    Ok((ds.subset(&train), ds.subset(&test)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Builtin;
    use std::collections::HashSet;

    /// Rows as comparable keys (feature and target bits). Equal sorted key lists mean the same
    /// multiset of rows, so no row was lost or used twice.
    fn keys(ds: &Dataset) -> Vec<Vec<u32>> {
        (0..ds.len())
            .map(|i| {
                let mut k: Vec<u32> = ds.row(i).iter().map(|v| v.to_bits()).collect();
                k.push(ds.targets()[i].to_bits());
                k
            })
            .collect()
    }

    fn class_counts(ds: &Dataset) -> Vec<usize> {
        let mut counts = vec![0; ds.task().classes().unwrap()];
        for i in 0..ds.len() {
            counts[ds.label(i).unwrap()] += 1;
        }
        counts
    }

    #[test]
    fn sizes_disjoint_and_covering() {
        let ds = Builtin::Diabetes.load().unwrap();
        let (train, test) = train_test_split(&ds, 0.2, 7).unwrap();
        assert_eq!(test.len(), 88); // round(442 * 0.2)
        assert_eq!(train.len() + test.len(), ds.len());
        let mut all = keys(&train);
        all.extend(keys(&test));
        let mut original = keys(&ds);
        all.sort();
        original.sort();
        assert_eq!(
            all, original,
            "train + test must be exactly the original rows"
        );
    }

    #[test]
    fn stratified_keeps_class_ratios() {
        for builtin in [Builtin::BreastCancer, Builtin::Digits] {
            let ds = builtin.load().unwrap();
            let (train, test) = train_test_split(&ds, 0.25, 3).unwrap();
            let total = class_counts(&ds);
            let in_test = class_counts(&test);
            let in_train = class_counts(&train);
            for c in 0..total.len() {
                let expected = total[c] as f64 * 0.25;
                assert!(
                    (in_test[c] as f64 - expected).abs() <= 1.0,
                    "{builtin} class {c}: {} in test, expected ~{expected}",
                    in_test[c]
                );
                assert_eq!(in_test[c] + in_train[c], total[c]);
            }
        }
    }

    #[test]
    fn output_is_shuffled_not_class_blocked() {
        let ds = Builtin::BreastCancer.load().unwrap();
        let (train, _) = train_test_split(&ds, 0.3, 1).unwrap();
        let first_half: HashSet<usize> = (0..train.len() / 2)
            .map(|i| train.label(i).unwrap())
            .collect();
        assert_eq!(first_half.len(), 2);
    }

    #[test]
    fn same_seed_same_split_different_seed_different() {
        let ds = Builtin::BreastCancer.load().unwrap();
        let a = train_test_split(&ds, 0.2, 42).unwrap();
        let b = train_test_split(&ds, 0.2, 42).unwrap();
        let c = train_test_split(&ds, 0.2, 43).unwrap();
        assert_eq!(a, b);
        assert_ne!(a.1, c.1);
    }

    #[test]
    fn bad_fractions_and_empty_parts_are_errors() {
        let ds = Builtin::Diabetes.load().unwrap();
        for f in [0.0, 1.0, -0.5, 1.5, f64::NAN, f64::INFINITY] {
            let err = train_test_split(&ds, f, 0).unwrap_err();
            assert!(matches!(err, DataError::InvalidArgument(_)), "{f}: {err:?}");
        }
        // 442 * 0.0001 rounds to 0 test rows.
        let err = train_test_split(&ds, 0.0001, 0).unwrap_err();
        assert!(err.to_string().contains("test set"), "{err}");
        let err = train_test_split(&ds, 0.9999, 0).unwrap_err();
        assert!(err.to_string().contains("train set"), "{err}");
    }
}
