//! What hospitals report about a model, and the consortium's figures made of it: the checks a
//! report passes before it is recorded, and the pooling that gives the figures a researcher sees
//! and a finished job's summary. The coordinator, the auditor's replay and the demo call these.

use crate::job::MAX_DECLARED_SAMPLES;

/// The metrics a hospital may report on a model, and the range each must lie in.
pub const METRICS: [(&str, f64, f64); 3] = [
    ("accuracy", 0.0, 1.0),
    ("loss", 0.0, f64::INFINITY),
    ("rmse", 0.0, f64::INFINITY),
];

/// A hospital's report on one model, as its `ModelEvaluated` record holds it: held-out rows and
/// mean metrics by name.
pub type Evaluation = (u64, Vec<(String, f64)>);

/// Why a hospital's report cannot be recorded.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EvaluationError {
    /// Held-out rows out of range.
    #[error("rows must be between 1 and {MAX_DECLARED_SAMPLES}, got {0}")]
    Rows(u64),
    /// No metric at all.
    #[error("an evaluation reports at least one metric")]
    NoMetrics,
    /// A metric not in [`METRICS`].
    #[error("metric {name:?} is not one of {known}")]
    UnknownMetric {
        /// Its name.
        name: String,
        /// The names allowed.
        known: String,
    },
    /// A value that is not finite or out of its metric's range.
    #[error("metric {name} = {value} is outside {range}")]
    OutOfRange {
        /// The metric.
        name: String,
        /// The value.
        value: f64,
        /// Its allowed range.
        range: String,
    },
    /// Names not sorted, or one twice.
    #[error("metrics must be sorted by name, each name once")]
    NotSorted,
}

/// Checks a hospital's report before it is recorded: between 1 and [`MAX_DECLARED_SAMPLES`]
/// rows, and metrics from [`METRICS`], each once, sorted by name, finite and in range.
pub fn validate_evaluation(rows: u64, metrics: &[(String, f64)]) -> Result<(), EvaluationError> {
    if rows == 0 || rows > MAX_DECLARED_SAMPLES {
        return Err(EvaluationError::Rows(rows));
    }
    if metrics.is_empty() {
        return Err(EvaluationError::NoMetrics);
    }
    for (i, (name, value)) in metrics.iter().enumerate() {
        let Some(&(_, low, high)) = METRICS.iter().find(|(n, _, _)| n == name) else {
            let known: Vec<&str> = METRICS.iter().map(|(n, _, _)| *n).collect();
            return Err(EvaluationError::UnknownMetric {
                name: name.clone(),
                known: known.join(", "),
            });
        };
        if !value.is_finite() || *value < low || *value > high {
            let range = if high.is_infinite() {
                format!("[{low}, ∞)")
            } else {
                format!("[{low}, {high}]")
            };
            return Err(EvaluationError::OutOfRange {
                name: name.clone(),
                value: *value,
                range,
            });
        }
        if i > 0 && metrics[i - 1].0.as_str() >= name.as_str() {
            return Err(EvaluationError::NotSorted);
        }
    }
    Ok(())
}

/// The consortium's figures for one model: each metric's mean over the hospitals' reports,
/// weighted by their held-out rows (rmse pooled as the root of the weighted mean square).
/// Reports are summed in the order given, so every party that orders them the same (by
/// hospital name) gets the same bits.
pub fn pooled_metrics<'a>(reports: impl IntoIterator<Item = &'a Evaluation>) -> Vec<(String, f64)> {
    let mut sums: std::collections::BTreeMap<&str, (f64, f64)> = Default::default();
    for (rows, metrics) in reports {
        for (name, value) in metrics {
            let v = if name == "rmse" {
                value * value
            } else {
                *value
            };
            let e = sums.entry(name.as_str()).or_default();
            e.0 += v * *rows as f64;
            e.1 += *rows as f64;
        }
    }
    sums.into_iter()
        .map(|(name, (s, w))| {
            let mean = s / w;
            let value = if name == "rmse" { mean.sqrt() } else { mean };
            (name.to_owned(), value)
        })
        .collect()
}

/// The reason a finished job's `JobFinished` record gives: the pooled figures of the final
/// model and the rows behind them. Auditors recompute it from the `ModelEvaluated` records.
pub fn final_summary<'a>(reports: impl IntoIterator<Item = &'a Evaluation> + Clone) -> String {
    let rows: u64 = reports.clone().into_iter().map(|(rows, _)| rows).sum();
    let metrics = pooled_metrics(reports);
    if metrics.is_empty() {
        return "no hospital evaluated the final model".to_string();
    }
    let parts: Vec<String> = metrics
        .iter()
        .map(|(name, value)| format!("{name}={value:.6}"))
        .collect();
    format!("final model on {rows} held-out rows: {}", parts.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pairs: &[(&str, f64)]) -> Vec<(String, f64)> {
        pairs.iter().map(|(n, v)| (n.to_string(), *v)).collect()
    }

    #[test]
    fn evaluations_are_checked_before_they_are_recorded() {
        assert!(validate_evaluation(10, &m(&[("accuracy", 0.9), ("loss", 0.2)])).is_ok());
        assert!(validate_evaluation(10, &m(&[("loss", 3.5), ("rmse", 1.2)])).is_ok());
        for (rows, metrics, why) in [
            (0, m(&[("loss", 0.2)]), "rows"),
            (MAX_DECLARED_SAMPLES + 1, m(&[("loss", 0.2)]), "rows"),
            (10, m(&[]), "at least one"),
            (10, m(&[("auc", 0.9)]), "not one of"),
            (10, m(&[("accuracy", 1.5)]), "outside"),
            (10, m(&[("loss", -0.1)]), "outside"),
            (10, m(&[("loss", f64::NAN)]), "outside"),
            (10, m(&[("loss", 0.2), ("accuracy", 0.9)]), "sorted"),
            (10, m(&[("loss", 0.2), ("loss", 0.3)]), "sorted"),
        ] {
            let err = validate_evaluation(rows, &metrics).unwrap_err().to_string();
            assert!(err.contains(why), "{metrics:?}: {err}");
        }
    }

    #[test]
    fn pooled_figures_weigh_each_report_by_its_rows() {
        let reports: Vec<Evaluation> = vec![
            (30, m(&[("accuracy", 1.0), ("rmse", 2.0)])),
            (10, m(&[("accuracy", 0.6), ("rmse", 4.0)])),
        ];
        let pooled = pooled_metrics(&reports);
        assert_eq!(pooled[0], ("accuracy".to_string(), 0.9));
        // sqrt((30 * 4 + 10 * 16) / 40) = sqrt(7)
        assert!((pooled[1].1 - 7f64.sqrt()).abs() < 1e-12);
        assert_eq!(
            final_summary(&reports),
            format!(
                "final model on 40 held-out rows: accuracy=0.900000 rmse={:.6}",
                7f64.sqrt()
            )
        );
        assert_eq!(
            final_summary(&Vec::<Evaluation>::new()),
            "no hospital evaluated the final model"
        );
    }
}
