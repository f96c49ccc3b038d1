//! Per-feature standardization with statistics fitted on training rows only.

use crate::dataset::{Dataset, ImageShape, TaskKind};
use crate::error::{DataError, Result};
use serde::{Deserialize, Serialize};

/// Columns whose spread is below this are treated as constant: they map to 0 instead of being
/// divided by (nearly) zero.
const MIN_STD: f64 = 1e-12;

/// Mean and standard deviation of a regression target, used to train on a unit-scale target and
/// report predictions in the original units.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TargetScale {
    /// Mean of the training targets.
    pub mean: f32,
    /// Population standard deviation of the training targets (1.0 if they are constant).
    pub std: f32,
}

/// A fitted `(x - mean) / std` transform per feature (and for a regression target).
///
/// Fit it on the training rows only, then apply the same value to test rows or send it (as JSON)
/// to another party, so that no statistics leak from evaluation data into training.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Standardizer {
    /// The features the statistics belong to, in order; [`Standardizer::apply`] checks them.
    pub feature_names: Vec<String>,
    /// Per-feature means.
    pub means: Vec<f32>,
    /// Per-feature population standard deviations (1.0 for constant columns).
    pub stds: Vec<f32>,
    /// Target scaling, present only for regression tasks.
    pub target: Option<TargetScale>,
    /// For images: the shape of each row. `feature_names` are then the channels, and each mean
    /// and std applies to every pixel of its channel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<ImageShape>,
}

impl Standardizer {
    /// The same scaling for rows that are images of `shape` (per channel), or for table rows
    /// (`None`).
    pub fn with_image(mut self, shape: Option<ImageShape>) -> Standardizer {
        self.image = shape;
        self
    }

    /// The mean and std index of value `k` of a row.
    fn stat_index(&self, k: usize) -> usize {
        match self.image {
            Some(shape) => (k % shape.len()) / shape.pixels(),
            None => k % self.means.len(),
        }
    }

    /// Fits means and population standard deviations on `train` (accumulated in `f64`).
    ///
    /// An empty dataset gives means 0 and stds 1, i.e. the identity.
    pub fn fit(train: &Dataset) -> Standardizer {
        if let Some(shape) = train.image() {
            if train.is_empty() {
                let d = shape.channels;
                return Standardizer {
                    feature_names: train.feature_names().to_vec(),
                    means: vec![0.0; d],
                    stds: vec![1.0; d],
                    target: None,
                    image: Some(shape),
                }
                .with_target_of(train);
            }
            // Per channel, from the same sums that a job pools under encryption.
            return Standardizer::from_sums(&FeatureSums::of(train))
                .expect("a non-empty dataset has sums")
                .with_image(Some(shape));
        }
        let d = train.n_features();
        let mut means = Vec::with_capacity(d);
        let mut stds = Vec::with_capacity(d);
        for j in 0..d {
            let (mean, std) = mean_std((0..train.len()).map(|i| train.row(i)[j]));
            means.push(mean);
            stds.push(std);
        }
        let target = (train.task() == TaskKind::Regression).then(|| {
            let (mean, std) = mean_std(train.targets().iter().copied());
            TargetScale { mean, std }
        });
        Standardizer {
            feature_names: train.feature_names().to_vec(),
            means,
            stds,
            target,
            image: None,
        }
    }

    fn with_target_of(mut self, train: &Dataset) -> Standardizer {
        self.target = (train.task() == TaskKind::Regression).then(|| {
            let (mean, std) = mean_std(train.targets().iter().copied());
            TargetScale { mean, std }
        });
        self
    }

    /// Returns a standardized copy of `ds`: every feature becomes `(x - mean) / std`, and for a
    /// regression task the target too.
    ///
    /// Errors with [`DataError::InvalidArgument`] if `ds` has different feature names (or order)
    /// than the training data, or a task that does not match (target scaling present but the task
    /// is not regression, or the reverse).
    pub fn apply(&self, ds: &Dataset) -> Result<Dataset> {
        self.check_shape()?;
        if ds.feature_names() != self.feature_names.as_slice() {
            return Err(DataError::InvalidArgument(format!(
                "{}: features [{}] do not match the standardizer's [{}]",
                ds.name(),
                ds.feature_names().join(", "),
                self.feature_names.join(", ")
            )));
        }
        if ds.image() != self.image {
            return Err(DataError::InvalidArgument(format!(
                "{}: the standardizer was fitted on {}, but the dataset holds {}",
                ds.name(),
                describe_rows(self.image),
                describe_rows(ds.image())
            )));
        }
        if self.target.is_some() != (ds.task() == TaskKind::Regression) {
            return Err(DataError::InvalidArgument(format!(
                "{}: the standardizer was fitted on a {} task, but the dataset is {}",
                ds.name(),
                if self.target.is_some() {
                    "regression"
                } else {
                    "classification"
                },
                ds.task()
            )));
        }
        let mut out = ds.clone();
        for (k, x) in out.features.iter_mut().enumerate() {
            let j = self.stat_index(k);
            *x = scale(*x, self.means[j], self.stds[j]);
        }
        if let Some(t) = self.target {
            for y in &mut out.targets {
                *y = scale(*y, t.mean, t.std);
            }
        }
        Ok(out)
    }

    /// Scales rows without a target (what a released model is applied to), as [`Standardizer::apply`]
    /// scales a dataset's features: same features, in the same order.
    pub fn apply_rows(&self, rows: &crate::Rows) -> Result<Vec<f32>> {
        self.check_shape()?;
        if rows.feature_names() != self.feature_names.as_slice() {
            return Err(DataError::InvalidArgument(format!(
                "{}: features [{}] do not match the standardizer's [{}]",
                rows.name(),
                rows.feature_names().join(", "),
                self.feature_names.join(", ")
            )));
        }
        if rows.image() != self.image {
            return Err(DataError::InvalidArgument(format!(
                "{}: the standardizer was fitted on {}, but these rows are {}",
                rows.name(),
                describe_rows(self.image),
                describe_rows(rows.image())
            )));
        }
        Ok(rows
            .features()
            .iter()
            .enumerate()
            .map(|(k, x)| {
                let j = self.stat_index(k);
                scale(*x, self.means[j], self.stds[j])
            })
            .collect())
    }

    /// Maps a standardized regression target (e.g. a model prediction) back to original units.
    /// The identity when there is no target scaling.
    pub fn unscale_target(&self, y: f32) -> f32 {
        match self.target {
            Some(t) => (y as f64 * t.std as f64 + t.mean as f64) as f32,
            None => y,
        }
    }

    /// Pretty JSON of the statistics.
    pub fn to_json(&self) -> String {
        // Only strings, finite floats and options: serialization cannot fail.
        serde_json::to_string_pretty(self).expect("a Standardizer always serializes to JSON")
    }

    /// Reads statistics written by [`Standardizer::to_json`], checking that they are usable
    /// (matching lengths, finite means, positive finite stds).
    pub fn from_json(json: &str) -> Result<Self> {
        let s: Standardizer = serde_json::from_str(json)
            .map_err(|e| DataError::InvalidArgument(format!("invalid standardizer JSON: {e}")))?;
        s.check_shape()?;
        Ok(s)
    }

    fn check_shape(&self) -> Result<()> {
        let d = self.feature_names.len();
        if let Some(shape) = self.image {
            shape.check()?;
            if shape.channels != d {
                return Err(DataError::InvalidArgument(format!(
                    "standardizer for {shape} images has {d} channel names"
                )));
            }
        }
        if self.means.len() != d || self.stds.len() != d {
            return Err(DataError::InvalidArgument(format!(
                "standardizer has {d} feature names but {} means and {} stds",
                self.means.len(),
                self.stds.len()
            )));
        }
        let target = self.target.map(|t| (t.mean, t.std));
        let features = self.means.iter().copied().zip(self.stds.iter().copied());
        if !features
            .chain(target)
            .all(|(m, s)| m.is_finite() && s.is_finite() && s > 0.0)
        {
            return Err(DataError::InvalidArgument(
                "standardizer has a non-finite mean or a std that is not positive and finite"
                    .to_string(),
            ));
        }
        Ok(())
    }
}

/// Population mean and std of the values, in `f64`; a (near-)constant column gets std 1.
/// Per-feature sums from which consortium-wide statistics are computed without pooling rows.
///
/// Each hospital computes `FeatureSums::of` its training rows; the sums add up across hospitals
/// ([`FeatureSums::merge`]; in a job, under encryption, so only the totals are revealed), and
/// [`Standardizer::from_sums`] turns the totals into the scaling every hospital then applies. The
/// result equals fitting on the union of all training rows (up to rounding: one-pass sums lose
/// some precision when |mean| is far larger than the spread, which clinical features are not).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureSums {
    /// Feature names, in order.
    pub feature_names: Vec<String>,
    /// Rows summed.
    pub n: u64,
    /// Sum of each feature.
    pub sum: Vec<f64>,
    /// Sum of each feature's square.
    pub sum_sq: Vec<f64>,
    /// Sum and sum of squares of the target, for regression tasks.
    pub target: Option<(f64, f64)>,
}

/// "table rows" or "8x8 grayscale images", for messages.
fn describe_rows(image: Option<ImageShape>) -> String {
    match image {
        Some(shape) => format!("{shape} images"),
        None => "table rows".into(),
    }
}

impl FeatureSums {
    /// The sums of a dataset's rows. For images, the features are the channels and each row adds
    /// the mean (and mean square) of its channel's pixels: every image has the same pixel count,
    /// so these sums give the pooled per-channel moments exactly as per-pixel sums would.
    pub fn of(ds: &Dataset) -> FeatureSums {
        if let Some(shape) = ds.image() {
            let (c, n) = (shape.channels, shape.pixels());
            let mut sum = vec![0f64; c];
            let mut sum_sq = vec![0f64; c];
            for i in 0..ds.len() {
                for (k, plane) in ds.row(i).chunks_exact(n).enumerate() {
                    let (s, q) = plane.iter().fold((0f64, 0f64), |(s, q), &x| {
                        (s + x as f64, q + (x as f64) * (x as f64))
                    });
                    sum[k] += s / n as f64;
                    sum_sq[k] += q / n as f64;
                }
            }
            let target = (ds.task() == TaskKind::Regression).then(|| {
                ds.targets().iter().fold((0.0, 0.0), |(s, q), &y| {
                    (s + y as f64, q + (y as f64) * (y as f64))
                })
            });
            return FeatureSums {
                feature_names: ds.feature_names().to_vec(),
                n: ds.len() as u64,
                sum,
                sum_sq,
                target,
            };
        }
        let d = ds.n_features();
        let mut sum = vec![0f64; d];
        let mut sum_sq = vec![0f64; d];
        for i in 0..ds.len() {
            for (j, &x) in ds.row(i).iter().enumerate() {
                sum[j] += x as f64;
                sum_sq[j] += (x as f64) * (x as f64);
            }
        }
        let target = (ds.task() == TaskKind::Regression).then(|| {
            ds.targets().iter().fold((0.0, 0.0), |(s, q), &y| {
                (s + y as f64, q + (y as f64) * (y as f64))
            })
        });
        FeatureSums {
            feature_names: ds.feature_names().to_vec(),
            n: ds.len() as u64,
            sum,
            sum_sq,
            target,
        }
    }

    /// Adds up several hospitals' sums (same features, same task).
    pub fn merge(parts: &[FeatureSums]) -> Result<FeatureSums> {
        let Some(first) = parts.first() else {
            return Err(DataError::InvalidArgument("no sums to merge".into()));
        };
        let mut total = first.clone();
        for p in &parts[1..] {
            if p.feature_names != total.feature_names
                || p.target.is_some() != total.target.is_some()
            {
                return Err(DataError::InvalidArgument(
                    "sums of different features or tasks cannot be merged".into(),
                ));
            }
            total.n += p.n;
            for (a, b) in total.sum.iter_mut().zip(&p.sum) {
                *a += b;
            }
            for (a, b) in total.sum_sq.iter_mut().zip(&p.sum_sq) {
                *a += b;
            }
            if let (Some((s, q)), Some((ps, pq))) = (total.target.as_mut(), p.target) {
                *s += ps;
                *q += pq;
            }
        }
        Ok(total)
    }
}

impl FeatureSums {
    /// The per-row moments a hospital contributes to a job's statistics round: each feature's
    /// mean, then each feature's mean square, then (regression) the target's mean and mean
    /// square, all over this hospital's rows. Averaged across hospitals with their row counts as
    /// weights (which is what the encrypted FedAvg computes), they give the pooled moments that
    /// [`Standardizer::from_moments`] turns into the consortium's scaling. `None` for zero rows.
    pub fn moments(&self) -> Option<Vec<f32>> {
        if self.n == 0 {
            return None;
        }
        let n = self.n as f64;
        let mut out: Vec<f32> = self.sum.iter().map(|s| (s / n) as f32).collect();
        out.extend(self.sum_sq.iter().map(|q| (q / n) as f32));
        if let Some((s, q)) = self.target {
            out.push((s / n) as f32);
            out.push((q / n) as f32);
        }
        Some(out)
    }
}

impl Standardizer {
    /// The scaling defined by pooled moments in the layout of [`FeatureSums::moments`]: mean `m`,
    /// population std `sqrt(m2 - m^2)` (1.0 for a (near-)constant column). `regression` says
    /// whether the two target moments follow the features'.
    pub fn from_moments(
        feature_names: &[String],
        regression: bool,
        moments: &[f32],
    ) -> Result<Standardizer> {
        let d = feature_names.len();
        let expected = 2 * d + if regression { 2 } else { 0 };
        if moments.len() != expected {
            return Err(DataError::InvalidArgument(format!(
                "expected {expected} moments for {d} features{}, got {}",
                if regression { " and a target" } else { "" },
                moments.len()
            )));
        }
        if let Some(i) = moments.iter().position(|m| !m.is_finite()) {
            return Err(DataError::InvalidArgument(format!(
                "moment {i} is not finite"
            )));
        }
        let stat = |m: f32, m2: f32| {
            let (m, m2) = (m as f64, m2 as f64);
            let std = (m2 - m * m).max(0.0).sqrt();
            (m as f32, if std < MIN_STD { 1.0 } else { std as f32 })
        };
        let (means, stds) = (0..d).map(|j| stat(moments[j], moments[d + j])).unzip();
        Ok(Standardizer {
            feature_names: feature_names.to_vec(),
            means,
            stds,
            target: regression.then(|| {
                let (mean, std) = stat(moments[2 * d], moments[2 * d + 1]);
                TargetScale { mean, std }
            }),
            image: None,
        })
    }
}

impl Standardizer {
    /// The scaling defined by (merged) sums: mean `sum / n`, population std
    /// `sqrt(sum_sq / n - mean^2)` (1.0 for a constant column).
    pub fn from_sums(sums: &FeatureSums) -> Result<Standardizer> {
        if sums.n == 0 {
            return Err(DataError::InvalidArgument(
                "cannot standardize from zero rows".into(),
            ));
        }
        let n = sums.n as f64;
        let stat = |s: f64, q: f64| {
            let mean = s / n;
            let std = (q / n - mean * mean).max(0.0).sqrt();
            (mean as f32, if std < MIN_STD { 1.0 } else { std as f32 })
        };
        let (means, stds) = sums
            .sum
            .iter()
            .zip(&sums.sum_sq)
            .map(|(&s, &q)| stat(s, q))
            .unzip();
        Ok(Standardizer {
            feature_names: sums.feature_names.clone(),
            means,
            stds,
            target: sums.target.map(|(s, q)| {
                let (mean, std) = stat(s, q);
                TargetScale { mean, std }
            }),
            image: None,
        })
    }
}

fn mean_std(values: impl Iterator<Item = f32> + Clone) -> (f32, f32) {
    let (n, sum) = values
        .clone()
        .fold((0usize, 0.0f64), |(n, s), v| (n + 1, s + v as f64));
    if n == 0 {
        return (0.0, 1.0);
    }
    let mean = sum / n as f64;
    // Two passes rather than sum-of-squares, which loses precision when |mean| >> std.
    let var = values.map(|v| (v as f64 - mean).powi(2)).sum::<f64>() / n as f64;
    let std = var.sqrt();
    (mean as f32, if std < MIN_STD { 1.0 } else { std as f32 })
}

fn scale(x: f32, mean: f32, std: f32) -> f32 {
    ((x as f64 - mean as f64) / std as f64) as f32
}

#[cfg(test)]
mod sums_tests {
    use super::*;
    use crate::{partition, Builtin, Scheme};

    /// Merged per-hospital sums give the same scaling as fitting on all rows at once.
    #[test]
    fn merged_sums_equal_fitting_on_the_union() {
        for b in Builtin::ALL {
            let ds = b.load().unwrap();
            let part = partition(&ds, 3, Scheme::Dirichlet { alpha: 0.5 }, 2).unwrap();
            let sums: Vec<_> = part.datasets(&ds).iter().map(FeatureSums::of).collect();
            let merged = FeatureSums::merge(&sums).unwrap();
            assert_eq!(merged.n, ds.len() as u64);
            let a = Standardizer::from_sums(&merged).unwrap();
            let b2 = Standardizer::fit(&ds);
            for (x, y) in a
                .means
                .iter()
                .zip(&b2.means)
                .chain(a.stds.iter().zip(&b2.stds))
            {
                assert!((x - y).abs() <= 1e-4 * y.abs().max(1.0), "{b}: {x} vs {y}");
            }
            assert_eq!(a.target.is_some(), b2.target.is_some());
        }
    }

    #[test]
    fn bad_merges_are_refused() {
        let bc = FeatureSums::of(&Builtin::BreastCancer.load().unwrap());
        let db = FeatureSums::of(&Builtin::Diabetes.load().unwrap());
        assert!(FeatureSums::merge(&[]).is_err());
        assert!(FeatureSums::merge(&[bc.clone(), db]).is_err());
        let empty = FeatureSums { n: 0, ..bc };
        assert!(Standardizer::from_sums(&empty).is_err());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{parse_csv, train_test_split, Builtin, Schema};

    fn column(ds: &Dataset, j: usize) -> Vec<f64> {
        (0..ds.len()).map(|i| ds.row(i)[j] as f64).collect()
    }

    fn mean_and_std(v: &[f64]) -> (f64, f64) {
        let m = v.iter().sum::<f64>() / v.len() as f64;
        let var = v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / v.len() as f64;
        (m, var.sqrt())
    }

    #[test]
    fn train_columns_get_mean_zero_std_one() {
        let ds = Builtin::BreastCancer.load().unwrap();
        let (train, _) = train_test_split(&ds, 0.2, 5).unwrap();
        let s = Standardizer::fit(&train);
        assert!(s.target.is_none());
        let scaled = s.apply(&train).unwrap();
        for j in 0..scaled.n_features() {
            let (m, sd) = mean_and_std(&column(&scaled, j));
            assert!(m.abs() < 1e-5, "column {j} mean {m}");
            assert!((sd - 1.0).abs() < 1e-4, "column {j} std {sd}");
        }
        // Labels are left alone for classification.
        assert_eq!(scaled.targets(), train.targets());
    }

    #[test]
    fn constant_column_maps_to_zero() {
        let schema = Schema {
            features: None,
            target: "y".into(),
            task: TaskKind::Binary,
            image: None,
        };
        let ds = parse_csv(&b"a,b,y\n0.1,1,0\n0.1,2,1\n0.1,3,0\n"[..], "t", &schema).unwrap();
        let s = Standardizer::fit(&ds);
        assert_eq!(s.stds[0], 1.0);
        let scaled = s.apply(&ds).unwrap();
        assert_eq!(column(&scaled, 0), [0.0, 0.0, 0.0]);
        assert!(scaled.features().iter().all(|v| v.is_finite()));
    }

    #[test]
    fn train_statistics_are_applied_to_test_unchanged() {
        let ds = Builtin::Diabetes.load().unwrap();
        let (train, test) = train_test_split(&ds, 0.25, 9).unwrap();
        let s = Standardizer::fit(&train);
        let scaled = s.apply(&test).unwrap();
        for i in 0..test.len() {
            for j in 0..test.n_features() {
                let expected = (test.row(i)[j] - s.means[j]) / s.stds[j];
                assert!((scaled.row(i)[j] - expected).abs() < 1e-5);
            }
        }
        // Test statistics differ from train, so the test set is not exactly standardized.
        let (m, _) = mean_and_std(&column(&scaled, 0));
        assert!(m.abs() > 1e-4, "test mean {m} should not be exactly 0");
    }

    #[test]
    fn json_round_trip() {
        let ds = Builtin::Diabetes.load().unwrap();
        let s = Standardizer::fit(&ds);
        let back = Standardizer::from_json(&s.to_json()).unwrap();
        assert_eq!(back, s);
        assert!(Standardizer::from_json("{").is_err());
        let mut broken = s.clone();
        broken.stds.pop();
        assert!(Standardizer::from_json(&broken.to_json()).is_err());
        let mut zero = s;
        zero.stds[0] = 0.0;
        assert!(Standardizer::from_json(&zero.to_json()).is_err());
    }

    #[test]
    fn regression_target_is_scaled_and_unscaled() {
        let ds = Builtin::Diabetes.load().unwrap();
        let s = Standardizer::fit(&ds);
        let t = s.target.expect("regression gets target scaling");
        assert!(t.mean > 100.0 && t.std > 10.0, "{t:?}");
        let scaled = s.apply(&ds).unwrap();
        let ys: Vec<f64> = scaled.targets().iter().map(|&y| y as f64).collect();
        let (m, sd) = mean_and_std(&ys);
        assert!(m.abs() < 1e-5 && (sd - 1.0).abs() < 1e-4);
        for (&z, &y) in scaled.targets().iter().zip(ds.targets()) {
            assert!((s.unscale_target(z) - y).abs() < 1e-3, "{z} -> {y}");
        }
    }

    #[test]
    fn unscale_is_identity_without_target() {
        let s = Standardizer::fit(&Builtin::Digits.load().unwrap());
        assert_eq!(s.unscale_target(0.75), 0.75);
    }

    #[test]
    fn mismatched_features_or_task_are_rejected() {
        let cancer = Standardizer::fit(&Builtin::BreastCancer.load().unwrap());
        let err = cancer.apply(&Builtin::Digits.load().unwrap()).unwrap_err();
        assert!(matches!(err, DataError::InvalidArgument(_)));
        assert!(err.to_string().contains("do not match"), "{err}");
        let diabetes = Builtin::Diabetes.load().unwrap();
        let mut s = Standardizer::fit(&diabetes);
        s.target = None;
        assert!(s.apply(&diabetes).is_err());
    }
}
