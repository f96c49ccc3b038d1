//! Scores of predictions against targets, and the trivial baselines a model must beat.
//!
//! Pure functions over plain vectors, so the coordinator (which never links libtorch) and the
//! workers compute metrics the same way.

use fedchain_datasets::TaskKind;
use serde::{Deserialize, Serialize};
use std::fmt;

/// How well a model does on a set of rows.
///
/// Classification fills `accuracy`; regression fills `r2` and `rmse` (in the target's original
/// units when the caller unscaled the predictions). `loss` is the training objective on these rows
/// when known.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
pub struct Metrics {
    /// Rows scored.
    pub rows: usize,
    /// Mean loss (binary cross-entropy, cross-entropy or MSE on the scaled target).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub loss: Option<f64>,
    /// Fraction of rows classified correctly.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accuracy: Option<f64>,
    /// Coefficient of determination.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub r2: Option<f64>,
    /// Root mean squared error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rmse: Option<f64>,
}

impl Metrics {
    /// The headline number: accuracy for classification, R^2 for regression.
    pub fn headline(&self) -> Option<f64> {
        self.accuracy.or(self.r2)
    }
}

impl fmt::Display for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if let Some(a) = self.accuracy {
            parts.push(format!("accuracy {:.2} %", 100.0 * a));
        }
        if let Some(r2) = self.r2 {
            parts.push(format!("R^2 {r2:.3}"));
        }
        if let Some(rmse) = self.rmse {
            parts.push(format!("RMSE {rmse:.2}"));
        }
        if let Some(loss) = self.loss {
            parts.push(format!("loss {loss:.4}"));
        }
        write!(f, "{} (n = {})", parts.join(", "), self.rows)
    }
}

/// Scores predictions: class indices (as f32) for classification, values for regression.
///
/// # Panics
/// If the slices differ in length (callers produce one prediction per target).
pub fn score(task: TaskKind, predictions: &[f32], targets: &[f32]) -> Metrics {
    assert_eq!(
        predictions.len(),
        targets.len(),
        "one prediction per target"
    );
    let n = targets.len();
    let mut m = Metrics {
        rows: n,
        ..Metrics::default()
    };
    if n == 0 {
        return m;
    }
    match task {
        TaskKind::Binary | TaskKind::Multiclass { .. } => {
            let correct = predictions
                .iter()
                .zip(targets)
                .filter(|(p, t)| p.round() == t.round())
                .count();
            m.accuracy = Some(correct as f64 / n as f64);
        }
        TaskKind::Regression => {
            let mean = targets.iter().map(|&t| t as f64).sum::<f64>() / n as f64;
            let ss_res: f64 = predictions
                .iter()
                .zip(targets)
                .map(|(&p, &t)| (p as f64 - t as f64).powi(2))
                .sum();
            let ss_tot: f64 = targets.iter().map(|&t| (t as f64 - mean).powi(2)).sum();
            m.rmse = Some((ss_res / n as f64).sqrt());
            m.r2 = Some(if ss_tot > 0.0 {
                1.0 - ss_res / ss_tot
            } else {
                0.0
            });
        }
    }
    m
}

/// The trivial baseline: predict the training set's majority class (classification) or its mean
/// (regression) for every test row. A trained model that does not beat this has learned nothing.
pub fn baseline(task: TaskKind, train_targets: &[f32], test_targets: &[f32]) -> Metrics {
    let constant = match task.classes() {
        Some(classes) => {
            let mut counts = vec![0usize; classes];
            for &t in train_targets {
                if let Some(c) = counts.get_mut(t as usize) {
                    *c += 1;
                }
            }
            // Ties go to the lowest class index, deterministically.
            let best = (0..classes).max_by_key(|&c| (counts[c], std::cmp::Reverse(c)));
            best.unwrap_or(0) as f32
        }
        None => {
            let n = train_targets.len().max(1) as f64;
            (train_targets.iter().map(|&t| t as f64).sum::<f64>() / n) as f32
        }
    };
    score(task, &vec![constant; test_targets.len()], test_targets)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accuracy_counts_matches() {
        let m = score(
            TaskKind::Binary,
            &[1.0, 0.0, 1.0, 1.0],
            &[1.0, 0.0, 0.0, 1.0],
        );
        assert_eq!(m.accuracy, Some(0.75));
        assert_eq!(m.r2, None);
    }

    #[test]
    fn regression_scores() {
        let t = [1.0, 2.0, 3.0, 4.0];
        let perfect = score(TaskKind::Regression, &t, &t);
        assert_eq!(perfect.r2, Some(1.0));
        assert_eq!(perfect.rmse, Some(0.0));
        let off = score(TaskKind::Regression, &[2.0, 3.0, 4.0, 5.0], &t);
        assert!((off.rmse.unwrap() - 1.0).abs() < 1e-12);
        assert!((off.r2.unwrap() - (1.0 - 4.0 / 5.0)).abs() < 1e-12);
    }

    #[test]
    fn baseline_predicts_majority_and_mean() {
        let task = TaskKind::Multiclass { classes: 3 };
        let m = baseline(task, &[2.0, 2.0, 1.0], &[2.0, 0.0, 2.0, 2.0]);
        assert_eq!(m.accuracy, Some(0.75));
        let r = baseline(TaskKind::Regression, &[1.0, 3.0], &[2.0, 2.0]);
        assert_eq!(r.rmse, Some(0.0));
    }
}
