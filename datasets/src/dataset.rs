use serde::{Deserialize, Serialize};
use std::fmt;

/// What the target column means, and so how a model is trained and scored on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TaskKind {
    /// Two classes; the target is 0 or 1.
    Binary,
    /// `classes` classes; the target is an integer in `0..classes`.
    Multiclass {
        /// Number of classes (at least 2).
        classes: usize,
    },
    /// A real-valued target.
    Regression,
}

impl TaskKind {
    /// Number of model outputs this task needs: 1 for binary (a logit) and regression, `classes`
    /// for multiclass.
    pub fn outputs(&self) -> usize {
        match self {
            TaskKind::Binary | TaskKind::Regression => 1,
            TaskKind::Multiclass { classes } => *classes,
        }
    }

    /// Number of distinct labels, or `None` for regression.
    pub fn classes(&self) -> Option<usize> {
        match self {
            TaskKind::Binary => Some(2),
            TaskKind::Multiclass { classes } => Some(*classes),
            TaskKind::Regression => None,
        }
    }
}

impl fmt::Display for TaskKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TaskKind::Binary => write!(f, "binary classification"),
            TaskKind::Multiclass { classes } => write!(f, "{classes}-class classification"),
            TaskKind::Regression => write!(f, "regression"),
        }
    }
}

/// How to read a dataset: which columns are features, which is the target, and the task.
///
/// For an image dataset ([`Schema::image`] set), the data is a folder of image files with a labels
/// CSV (`file,<target>`); the features are the channels ([`ImageShape::channel_names`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Schema {
    /// Feature columns, in the order the model sees them. `None` means every column except the
    /// target, in file order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub features: Option<Vec<String>>,
    /// The target column.
    pub target: String,
    /// The task the target defines.
    pub task: TaskKind,
    /// The declared shape of every image, for an image dataset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<ImageShape>,
}

/// The shape every image of an image dataset has: channels (1 grayscale, 3 RGB), height and width
/// in pixels. A row of the dataset is one image, channel by channel, each channel row by row (CHW).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageShape {
    /// 1 (grayscale) or 3 (RGB).
    pub channels: usize,
    /// Rows of pixels.
    pub height: usize,
    /// Columns of pixels.
    pub width: usize,
}

/// The longest side an image may declare.
pub const MAX_IMAGE_SIDE: usize = 8192;

impl ImageShape {
    /// A checked shape: 1 or 3 channels, sides from 1 to [`MAX_IMAGE_SIDE`].
    pub fn new(channels: usize, height: usize, width: usize) -> crate::Result<ImageShape> {
        let shape = ImageShape {
            channels,
            height,
            width,
        };
        shape.check()?;
        Ok(shape)
    }

    /// Checks a shape built field by field (as deserialized).
    pub fn check(&self) -> crate::Result<()> {
        if self.channels != 1 && self.channels != 3 {
            return Err(crate::DataError::InvalidArgument(format!(
                "images have 1 channel (grayscale) or 3 (RGB), not {}",
                self.channels
            )));
        }
        for (what, side) in [("height", self.height), ("width", self.width)] {
            if !(1..=MAX_IMAGE_SIDE).contains(&side) {
                return Err(crate::DataError::InvalidArgument(format!(
                    "image {what} must be between 1 and {MAX_IMAGE_SIDE} pixels, got {side}"
                )));
            }
        }
        Ok(())
    }

    /// Pixels per channel.
    pub fn pixels(&self) -> usize {
        self.height * self.width
    }

    /// Values per image (`channels * height * width`).
    pub fn len(&self) -> usize {
        self.channels * self.pixels()
    }

    /// Never true for a checked shape.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The channels' names, which are an image dataset's features: `gray`, or `red`, `green`,
    /// `blue`.
    pub fn channel_names(&self) -> Vec<String> {
        let names: &[&str] = if self.channels == 3 {
            &["red", "green", "blue"]
        } else {
            &["gray"]
        };
        names.iter().map(|n| n.to_string()).collect()
    }
}

impl fmt::Display for ImageShape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = if self.channels == 3 {
            "RGB"
        } else {
            "grayscale"
        };
        write!(f, "{}x{} {kind}", self.height, self.width)
    }
}

/// A dense, validated table: `len()` rows of `n_features()` finite `f32` features and one finite
/// target each, valid for `task` (0/1 for binary, an integer in range for multiclass).
///
/// Built only by the loader (or by [`Dataset::subset`] of a valid dataset), so these invariants hold
/// for every value of this type.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    pub(crate) name: String,
    pub(crate) feature_names: Vec<String>,
    pub(crate) target_name: String,
    pub(crate) task: TaskKind,
    /// For an image dataset, the shape of every row; `feature_names` are then its channels.
    pub(crate) image: Option<ImageShape>,
    /// Row-major, `len * n_features` values.
    pub(crate) features: Vec<f32>,
    pub(crate) targets: Vec<f32>,
}

impl Dataset {
    /// A short name for messages: the built-in name or the file it came from.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Feature column names, in model input order; for an image dataset, its channels.
    pub fn feature_names(&self) -> &[String] {
        &self.feature_names
    }

    /// The target column name.
    pub fn target_name(&self) -> &str {
        &self.target_name
    }

    /// The task.
    pub fn task(&self) -> TaskKind {
        self.task
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.targets.len()
    }

    /// True when there are no rows (never for a loaded dataset; possible for a subset).
    pub fn is_empty(&self) -> bool {
        self.targets.is_empty()
    }

    /// Number of features per row (for an image dataset, values per image).
    pub fn n_features(&self) -> usize {
        match self.image {
            Some(shape) => shape.len(),
            None => self.feature_names.len(),
        }
    }

    /// The shape of every image, for an image dataset.
    pub fn image(&self) -> Option<ImageShape> {
        self.image
    }

    /// All features, row-major (`len() * n_features()` values).
    pub fn features(&self) -> &[f32] {
        &self.features
    }

    /// All targets, one per row.
    pub fn targets(&self) -> &[f32] {
        &self.targets
    }

    /// The features of row `i`.
    ///
    /// # Panics
    /// If `i >= len()`.
    pub fn row(&self, i: usize) -> &[f32] {
        let d = self.n_features();
        &self.features[i * d..(i + 1) * d]
    }

    /// A new dataset holding the given rows, in the given order.
    ///
    /// # Panics
    /// If an index is out of range (indices come from this crate's own split and partition
    /// functions, so that would be a bug, not bad input).
    pub fn subset(&self, rows: &[usize]) -> Dataset {
        let d = self.n_features();
        let mut features = Vec::with_capacity(rows.len() * d);
        let mut targets = Vec::with_capacity(rows.len());
        for &i in rows {
            features.extend_from_slice(self.row(i));
            targets.push(self.targets[i]);
        }
        Dataset {
            name: self.name.clone(),
            feature_names: self.feature_names.clone(),
            target_name: self.target_name.clone(),
            task: self.task,
            image: self.image,
            features,
            targets,
        }
    }

    /// The same rows read as images of `shape` (a table of `shape.len()` columns whose values are
    /// pixels, channel by channel: the bundled digits are 1x8x8). Its features become the
    /// channels, so scaling is per channel, as for images loaded from files.
    pub fn as_images(&self, shape: ImageShape) -> crate::Result<Dataset> {
        shape.check()?;
        if self.image.is_some() || self.n_features() != shape.len() {
            return Err(crate::DataError::InvalidArgument(format!(
                "{}: rows of {} values cannot be read as {shape} images ({} values each)",
                self.name,
                self.n_features(),
                shape.len()
            )));
        }
        Ok(Dataset {
            feature_names: shape.channel_names(),
            image: Some(shape),
            ..self.clone()
        })
    }

    /// The schema that reads back a CSV written by [`Dataset::write_csv`].
    pub fn schema(&self) -> Schema {
        Schema {
            features: Some(self.feature_names.clone()),
            target: self.target_name.clone(),
            task: self.task,
            image: self.image,
        }
    }

    /// Class label of row `i` (`None` for regression).
    pub fn label(&self, i: usize) -> Option<usize> {
        self.task.classes().map(|_| self.targets[i] as usize)
    }
}
