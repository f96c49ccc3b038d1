//! The real clinical datasets bundled inside the crate (see `datasets/data/PROVENANCE.md`).

use crate::dataset::{Dataset, Schema, TaskKind};
use crate::error::{DataError, Result};
use crate::loader::parse_csv;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A dataset compiled into the binary, so demos and tests need no data files on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Builtin {
    /// Breast Cancer Wisconsin (Diagnostic): 569 x 30, binary (1 = benign, 0 = malignant).
    BreastCancer,
    /// Diabetes progression (Efron et al. 2004): 442 x 10, regression.
    Diabetes,
    /// Handwritten digits (UCI): 1797 x 64 pixels (0-16), 10 classes.
    Digits,
}

impl Builtin {
    /// Every built-in dataset.
    pub const ALL: [Builtin; 3] = [Builtin::BreastCancer, Builtin::Diabetes, Builtin::Digits];

    /// The name used on the command line and in messages, e.g. `breast-cancer`.
    pub fn name(&self) -> &'static str {
        match self {
            Builtin::BreastCancer => "breast-cancer",
            Builtin::Diabetes => "diabetes",
            Builtin::Digits => "digits",
        }
    }

    /// The schema of the bundled CSV: every column but the target is a feature.
    pub fn schema(&self) -> Schema {
        let (target, task) = match self {
            Builtin::BreastCancer => ("diagnosis_benign", TaskKind::Binary),
            Builtin::Diabetes => ("progression", TaskKind::Regression),
            Builtin::Digits => ("label", TaskKind::Multiclass { classes: 10 }),
        };
        Schema {
            features: None,
            target: target.to_string(),
            task,
            image: None,
        }
    }

    /// Parses the embedded CSV. Goes through the same loader as user files, so the bundled data is
    /// held to the same checks.
    pub fn load(&self) -> Result<Dataset> {
        let text = match self {
            Builtin::BreastCancer => include_str!("../data/breast_cancer.csv"),
            Builtin::Diabetes => include_str!("../data/diabetes.csv"),
            Builtin::Digits => include_str!("../data/digits.csv"),
        };
        let source = format!("builtin:{}", self.name());
        let mut ds = parse_csv(text.as_bytes(), &source, &self.schema())?;
        ds.name = self.name().to_string();
        Ok(ds)
    }

    /// The shape of the images its rows are, for a dataset of images (the digits: 1x8x8).
    pub fn image_shape(&self) -> Option<crate::ImageShape> {
        match self {
            Builtin::Digits => Some(crate::ImageShape {
                channels: 1,
                height: 8,
                width: 8,
            }),
            _ => None,
        }
    }

    /// One line: shape, task and origin.
    pub fn describe(&self) -> &'static str {
        match self {
            Builtin::BreastCancer => {
                "569 rows x 30 features, binary classification (1 = benign, 0 = malignant); \
                 Breast Cancer Wisconsin (Diagnostic), UCI"
            }
            Builtin::Diabetes => {
                "442 rows x 10 features, regression (disease progression after one year); \
                 Efron et al. 2004, Least Angle Regression"
            }
            Builtin::Digits => {
                "1797 rows x 64 features (8x8 pixels, 0-16), 10-class classification; \
                 Optical Recognition of Handwritten Digits, UCI"
            }
        }
    }
}

impl FromStr for Builtin {
    type Err = DataError;

    /// Accepts the names from [`Builtin::name`], case-insensitively and with `_` for `-`.
    fn from_str(s: &str) -> Result<Self> {
        let wanted = s.trim().to_ascii_lowercase().replace('_', "-");
        Builtin::ALL
            .into_iter()
            .find(|b| b.name() == wanted)
            .ok_or_else(|| DataError::UnknownBuiltin(s.to_string()))
    }
}

impl fmt::Display for Builtin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn label_counts(ds: &Dataset) -> Vec<usize> {
        let mut counts = vec![0; ds.task().classes().unwrap()];
        for i in 0..ds.len() {
            counts[ds.label(i).unwrap()] += 1;
        }
        counts
    }

    #[test]
    fn breast_cancer_has_documented_shape_and_labels() {
        let ds = Builtin::BreastCancer.load().unwrap();
        assert_eq!((ds.len(), ds.n_features()), (569, 30));
        assert_eq!(ds.name(), "breast-cancer");
        assert_eq!(ds.task(), TaskKind::Binary);
        assert_eq!(ds.feature_names()[0], "mean_radius");
        // 212 malignant (0), 357 benign (1).
        assert_eq!(label_counts(&ds), [212, 357]);
    }

    #[test]
    fn diabetes_has_documented_shape() {
        let ds = Builtin::Diabetes.load().unwrap();
        assert_eq!((ds.len(), ds.n_features()), (442, 10));
        assert_eq!(ds.task(), TaskKind::Regression);
        assert_eq!(ds.target_name(), "progression");
        assert_eq!(ds.row(0)[0], 59.0);
        assert_eq!(ds.targets()[0], 151.0);
    }

    #[test]
    fn digits_has_documented_shape_and_all_classes() {
        let ds = Builtin::Digits.load().unwrap();
        assert_eq!((ds.len(), ds.n_features()), (1797, 64));
        assert_eq!(ds.feature_names()[63], "px63");
        assert!(ds.features().iter().all(|&v| (0.0..=16.0).contains(&v)));
        let counts = label_counts(&ds);
        assert_eq!(counts.iter().sum::<usize>(), 1797);
        // Each digit has roughly 180 samples.
        assert!(
            counts.iter().all(|&c| (170..=190).contains(&c)),
            "{counts:?}"
        );
    }

    #[test]
    fn names_parse_and_display() {
        for b in Builtin::ALL {
            assert_eq!(b.name().parse::<Builtin>().unwrap(), b);
            assert_eq!(b.to_string(), b.name());
            let json = serde_json::to_string(&b).unwrap();
            assert_eq!(json, format!("\"{}\"", b.name()));
            assert!(!b.describe().is_empty());
        }
        assert_eq!(
            "breast_cancer".parse::<Builtin>().unwrap(),
            Builtin::BreastCancer
        );
        let err = "mnist".parse::<Builtin>().unwrap_err();
        assert!(matches!(&err, DataError::UnknownBuiltin(n) if n == "mnist"));
        assert!(err.to_string().contains("breast-cancer"));
    }

    #[test]
    fn errors_in_builtin_data_would_name_the_builtin() {
        // The source name passed to the loader is what users see for a builtin.
        let err = parse_csv(&b""[..], "builtin:digits", &Builtin::Digits.schema()).unwrap_err();
        assert!(err.to_string().starts_with("builtin:digits"));
    }
}
