use crate::error::{ModelError, Result};
use fedchain_datasets::TaskKind;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fmt;
use std::str::FromStr;

/// A model's architecture: its name plus every hyperparameter that fixes its parameter layout.
///
/// A job carries one of these, so every party builds the same network. The canonical JSON form
/// ([`ModelSpec::canonical_json`]) and its digest identify the architecture on the ledger.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "snake_case", deny_unknown_fields)]
pub enum ModelSpec {
    /// A single linear layer: logistic regression for binary tasks, softmax (multinomial logistic)
    /// regression for multiclass, linear regression for regression.
    LogisticRegression {
        /// Input features.
        inputs: usize,
        /// Outputs (1 for binary and regression, the class count for multiclass).
        outputs: usize,
    },
    /// A multilayer perceptron with ReLU activations.
    Mlp {
        /// Input features.
        inputs: usize,
        /// Width of each hidden layer, input side first.
        hidden: Vec<usize>,
        /// Outputs.
        outputs: usize,
        /// Dropout probability after each hidden layer during training (0 disables it).
        #[serde(default)]
        dropout: f64,
    },
    /// A small convolutional network for images (the 8x8 digits, or a hospital's declared shape):
    /// two 3x3 convolutions with ReLU, 2x2 max pooling, optionally average pooling to a small
    /// grid (so the dense layer does not grow with the image), one hidden dense layer, then the
    /// output layer. Its input rows are images channel by channel (CHW).
    Cnn {
        /// Image height in pixels.
        height: usize,
        /// Image width in pixels.
        width: usize,
        /// Channels of the first and second convolution.
        channels: [usize; 2],
        /// Width of the dense hidden layer.
        hidden: usize,
        /// Outputs.
        outputs: usize,
        /// Dropout probability before the output layer during training (0 disables it).
        #[serde(default)]
        dropout: f64,
        /// Channels of each input image: 1 (grayscale, the default) or 3 (RGB). Left out of the
        /// canonical JSON when 1, so specs written before it existed keep their digest.
        #[serde(default = "one", skip_serializing_if = "is_one")]
        in_channels: usize,
        /// After max pooling, average-pool to this grid (height, width); `None` keeps the max
        /// pooled grid, as for the 8x8 digits.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pool: Option<[usize; 2]>,
    },
    /// A researcher's own network: a TorchScript module (`torch.jit.script(m).save(...)`, or a
    /// trace), named by the digest of its code ([`crate::TorchScriptCode::digest`]), which saving
    /// it again after training does not change. Its parameters are declared here, so every party
    /// knows the layout without loading the module; `fedchain-models` checks the module against
    /// them when it loads it.
    Torchscript {
        /// The digest of the module's code, 64 lowercase hex digits.
        module: String,
        /// Input features (the module takes rows `[n, inputs]`).
        inputs: usize,
        /// Outputs (the module returns `[n, outputs]`).
        outputs: usize,
        /// Its parameters, in byte-wise name order.
        parameters: Vec<TensorDecl>,
        /// For a job of images: `[channels, height, width]`, and the module takes tensors
        /// `[n, channels, height, width]` instead of rows (`inputs` is their product).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        image: Option<[usize; 3]>,
    },
}

fn one() -> usize {
    1
}

fn is_one(n: &usize) -> bool {
    *n == 1
}

/// The grid a spec's dense layer sees: `pool`, or the max pooled image.
pub fn cnn_grid(height: usize, width: usize, pool: Option<[usize; 2]>) -> [usize; 2] {
    pool.unwrap_or([height / 2, width / 2])
}

/// The side of the grid the image presets average-pool to: larger images keep this many cells
/// per side, so the dense layer stays the digits' size.
pub const CNN_POOL_SIDE: usize = 4;

/// A named tensor a TorchScript module declares.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TensorDecl {
    /// Its dotted name, as PyTorch's `named_parameters` gives it (`block.conv.weight`).
    pub name: String,
    /// Its shape.
    pub shape: Vec<usize>,
}

/// The most parameters a model may have: 256 million (1 GiB of f32).
pub const MAX_PARAMETERS: usize = 1 << 28;

/// The model families, as named on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ModelKind {
    /// [`ModelSpec::LogisticRegression`].
    Logreg,
    /// [`ModelSpec::Mlp`].
    Mlp,
    /// [`ModelSpec::Cnn`].
    Cnn,
    /// [`ModelSpec::Torchscript`]: given by its module file, not by name.
    Torchscript,
}

impl ModelKind {
    /// Every kind, for help texts.
    pub const ALL: [ModelKind; 3] = [ModelKind::Logreg, ModelKind::Mlp, ModelKind::Cnn];

    /// The command-line name.
    pub fn name(&self) -> &'static str {
        match self {
            ModelKind::Logreg => "logreg",
            ModelKind::Mlp => "mlp",
            ModelKind::Cnn => "cnn",
            ModelKind::Torchscript => "torchscript",
        }
    }
}

impl fmt::Display for ModelKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ModelKind {
    type Err = ModelError;

    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().replace('_', "-").as_str() {
            "logreg" | "logistic-regression" | "linear" => Ok(ModelKind::Logreg),
            "mlp" => Ok(ModelKind::Mlp),
            "cnn" => Ok(ModelKind::Cnn),
            _ => Err(ModelError::InvalidSpec(format!(
                "unknown model '{s}'; choose one of: logreg, mlp, cnn"
            ))),
        }
    }
}

impl ModelSpec {
    /// The default architecture of `kind` for a dataset with `inputs` features and the given task.
    ///
    /// These defaults are what `fedchain train` and the demo use; they are sized for the bundled
    /// clinical datasets (tens of features, hundreds to a few thousand rows).
    pub fn preset(kind: ModelKind, inputs: usize, task: TaskKind) -> Result<ModelSpec> {
        let outputs = task.outputs();
        let spec = match kind {
            ModelKind::Torchscript => {
                return Err(ModelError::InvalidSpec(
                    "a torchscript model is defined by its module file, not by name: give the \
                     file (--model-file net.pt)"
                        .into(),
                ))
            }
            ModelKind::Logreg => ModelSpec::LogisticRegression { inputs, outputs },
            ModelKind::Mlp => ModelSpec::Mlp {
                inputs,
                hidden: vec![32, 16],
                outputs,
                dropout: 0.0,
            },
            ModelKind::Cnn => {
                let side = (inputs as f64).sqrt().round() as usize;
                if side * side != inputs || side < 2 {
                    return Err(ModelError::InvalidSpec(format!(
                        "the cnn model needs square single-channel images (height x width features, \
                         like the 8x8 digits' 64), but the dataset has {inputs} features; \
                         use --model mlp or --model logreg"
                    )));
                }
                ModelSpec::Cnn {
                    height: side,
                    width: side,
                    channels: [16, 32],
                    hidden: 64,
                    outputs,
                    dropout: 0.0,
                    in_channels: 1,
                    pool: None,
                }
            }
        };
        spec.validate()?;
        Ok(spec)
    }

    /// The default architecture of `kind` for images of `shape` (rows are the image's values,
    /// channel by channel). The CNN takes the shape as declared; images whose max pooled grid is
    /// larger than [`CNN_POOL_SIDE`] a side are average-pooled to it.
    pub fn preset_images(
        kind: ModelKind,
        shape: fedchain_datasets::ImageShape,
        task: TaskKind,
    ) -> Result<ModelSpec> {
        if kind != ModelKind::Cnn {
            return ModelSpec::preset(kind, shape.len(), task);
        }
        let (h, w) = (shape.height, shape.width);
        let pool = (h / 2 > CNN_POOL_SIDE || w / 2 > CNN_POOL_SIDE)
            .then(|| [(h / 2).min(CNN_POOL_SIDE), (w / 2).min(CNN_POOL_SIDE)]);
        let spec = ModelSpec::Cnn {
            height: h,
            width: w,
            channels: [16, 32],
            hidden: 64,
            outputs: task.outputs(),
            dropout: 0.0,
            in_channels: shape.channels,
            pool,
        };
        spec.validate()?;
        Ok(spec)
    }

    /// The family of this spec.
    pub fn kind(&self) -> ModelKind {
        match self {
            ModelSpec::LogisticRegression { .. } => ModelKind::Logreg,
            ModelSpec::Mlp { .. } => ModelKind::Mlp,
            ModelSpec::Cnn { .. } => ModelKind::Cnn,
            ModelSpec::Torchscript { .. } => ModelKind::Torchscript,
        }
    }

    /// Number of input features.
    pub fn inputs(&self) -> usize {
        match self {
            ModelSpec::LogisticRegression { inputs, .. }
            | ModelSpec::Mlp { inputs, .. }
            | ModelSpec::Torchscript { inputs, .. } => *inputs,
            ModelSpec::Cnn {
                height,
                width,
                in_channels,
                ..
            } => in_channels.saturating_mul(*height).saturating_mul(*width),
        }
    }

    /// Number of outputs.
    pub fn outputs(&self) -> usize {
        match self {
            ModelSpec::LogisticRegression { outputs, .. }
            | ModelSpec::Mlp { outputs, .. }
            | ModelSpec::Cnn { outputs, .. }
            | ModelSpec::Torchscript { outputs, .. } => *outputs,
        }
    }

    /// Checks that every size is positive and every probability in range, so that building the
    /// network cannot fail halfway.
    pub fn validate(&self) -> Result<()> {
        let bad = |msg: String| Err(ModelError::InvalidSpec(msg));
        let check_dropout = |p: f64| {
            if (0.0..1.0).contains(&p) {
                Ok(())
            } else {
                bad(format!("dropout must be in [0, 1), got {p}"))
            }
        };
        if self.inputs() == 0 || self.outputs() == 0 {
            return bad(format!(
                "{} needs at least one input and one output (got {} inputs, {} outputs)",
                self.kind(),
                self.inputs(),
                self.outputs()
            ));
        }
        match self {
            ModelSpec::LogisticRegression { .. } => Ok(()),
            ModelSpec::Mlp {
                hidden, dropout, ..
            } => {
                if hidden.contains(&0) {
                    return bad(format!(
                        "mlp hidden layer widths must be positive, got {hidden:?}"
                    ));
                }
                check_dropout(*dropout)
            }
            ModelSpec::Cnn {
                height,
                width,
                channels,
                hidden,
                dropout,
                in_channels,
                pool,
                ..
            } => {
                if *height < 2 || *width < 2 {
                    return bad(format!(
                        "cnn images must be at least 2x2 (2x2 pooling), got {height}x{width}"
                    ));
                }
                if *height > fedchain_datasets::MAX_IMAGE_SIDE
                    || *width > fedchain_datasets::MAX_IMAGE_SIDE
                {
                    return bad(format!(
                        "cnn images have sides of at most {} pixels, got {height}x{width}",
                        fedchain_datasets::MAX_IMAGE_SIDE
                    ));
                }
                if !(1..=64).contains(in_channels) {
                    return bad(format!(
                        "cnn input channels must be between 1 and 64, got {in_channels}"
                    ));
                }
                if let Some([ph, pw]) = pool {
                    if !(1..=height / 2).contains(ph) || !(1..=width / 2).contains(pw) {
                        return bad(format!(
                            "cnn pool grid {ph}x{pw} must be at least 1x1 and at most the max \
                             pooled {}x{}",
                            height / 2,
                            width / 2
                        ));
                    }
                }
                if channels.contains(&0) || *hidden == 0 {
                    return bad("cnn channel counts and hidden width must be positive".into());
                }
                let [ph, pw] = cnn_grid(*height, *width, *pool);
                let dense = channels[1].saturating_mul(ph).saturating_mul(pw);
                if dense.saturating_mul(*hidden) > MAX_PARAMETERS {
                    return bad(format!(
                        "cnn dense layer of {dense} x {hidden} is larger than {MAX_PARAMETERS} \
                         parameters; pool to a smaller grid"
                    ));
                }
                check_dropout(*dropout)
            }
            ModelSpec::Torchscript {
                module,
                parameters,
                image,
                inputs,
                ..
            } => {
                if let Some(shape) = image {
                    if shape.contains(&0)
                        || shape.iter().fold(1usize, |a, &d| a.saturating_mul(d)) != *inputs
                    {
                        return bad(format!(
                            "torchscript image shape {shape:?} must have no empty dimension and \
                             hold the module's {inputs} inputs"
                        ));
                    }
                }
                let hex = |c: char| c.is_ascii_digit() || ('a'..='f').contains(&c);
                if module.len() != 64 || !module.chars().all(hex) {
                    return bad(format!(
                        "torchscript module must be named by the digest of its code (64 \
                         lowercase hex digits), got {module:?}"
                    ));
                }
                if parameters.is_empty() {
                    return bad(
                        "a torchscript module with no parameters has nothing to train".into(),
                    );
                }
                let mut total = 0usize;
                for (i, p) in parameters.iter().enumerate() {
                    if p.name.is_empty() || p.shape.contains(&0) {
                        return bad(format!(
                            "torchscript parameter {:?} must have a name and no empty dimension \
                             (shape {:?})",
                            p.name, p.shape
                        ));
                    }
                    if i > 0 && parameters[i - 1].name.as_bytes() >= p.name.as_bytes() {
                        return bad(format!(
                            "torchscript parameters must be listed once each in byte-wise name \
                             order; {:?} comes after {:?}",
                            p.name,
                            parameters[i - 1].name
                        ));
                    }
                    let len = p.shape.iter().fold(1usize, |a, &d| a.saturating_mul(d));
                    total = total.saturating_add(len);
                }
                if total > MAX_PARAMETERS {
                    return bad(format!(
                        "torchscript module has {total} parameters; at most {MAX_PARAMETERS} are \
                         allowed"
                    ));
                }
                Ok(())
            }
        }
    }

    /// Checks that this model fits a dataset with `inputs` features and the given task.
    pub fn check_fits(&self, inputs: usize, task: TaskKind) -> Result<()> {
        if self.inputs() != inputs || self.outputs() != task.outputs() {
            return Err(ModelError::InvalidSpec(format!(
                "{} expects {} inputs and {} outputs, but the data has {} features and its task \
                 ({task}) needs {} outputs",
                self.kind(),
                self.inputs(),
                self.outputs(),
                inputs,
                task.outputs()
            )));
        }
        Ok(())
    }

    /// The canonical JSON text of this spec: serde's output with the fields in declaration order
    /// and no whitespace. It is what gets hashed and stored, so it must not change for a given
    /// spec; `tests` pin it.
    pub fn canonical_json(&self) -> String {
        serde_json::to_string(self).expect("a ModelSpec always serializes")
    }

    /// Parses a spec from JSON (as written by [`ModelSpec::canonical_json`] or by hand) and
    /// validates it.
    pub fn from_json(json: &str) -> Result<ModelSpec> {
        let spec: ModelSpec = serde_json::from_str(json)
            .map_err(|e| ModelError::InvalidSpec(format!("model spec JSON: {e}")))?;
        spec.validate()?;
        Ok(spec)
    }

    /// SHA-256 of the canonical JSON.
    pub fn digest(&self) -> [u8; 32] {
        Sha256::digest(self.canonical_json().as_bytes()).into()
    }
}

impl fmt::Display for ModelSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModelSpec::LogisticRegression { inputs, outputs } => {
                write!(f, "logreg {inputs} -> {outputs}")
            }
            ModelSpec::Mlp {
                inputs,
                hidden,
                outputs,
                ..
            } => {
                write!(f, "mlp {inputs}")?;
                for h in hidden {
                    write!(f, " -> {h}")?;
                }
                write!(f, " -> {outputs}")
            }
            ModelSpec::Cnn {
                height,
                width,
                channels,
                hidden,
                outputs,
                in_channels,
                pool,
                ..
            } => {
                write!(f, "cnn ")?;
                if *in_channels != 1 {
                    write!(f, "{in_channels}x")?;
                }
                write!(
                    f,
                    "{height}x{width} -> conv{} -> conv{} -> pool",
                    channels[0], channels[1]
                )?;
                if let Some([ph, pw]) = pool {
                    write!(f, " -> avg{ph}x{pw}")?;
                }
                write!(f, " -> {hidden} -> {outputs}")
            }
            ModelSpec::Torchscript {
                module,
                inputs,
                outputs,
                parameters,
                ..
            } => write!(
                f,
                "torchscript {} {inputs} -> {outputs} ({} tensors)",
                &module[..module.len().min(12)],
                parameters.len()
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_presets_take_the_declared_shape_and_pool_large_images() {
        use fedchain_datasets::ImageShape;
        let digits = ModelSpec::preset_images(
            ModelKind::Cnn,
            ImageShape::new(1, 8, 8).unwrap(),
            TaskKind::Multiclass { classes: 10 },
        )
        .unwrap();
        // The digits' image preset is the table preset: same JSON, same digest.
        let table = ModelSpec::preset(ModelKind::Cnn, 64, TaskKind::Multiclass { classes: 10 });
        assert_eq!(digits, table.unwrap());
        assert_eq!(
            digits.canonical_json(),
            r#"{"name":"cnn","height":8,"width":8,"channels":[16,32],"hidden":64,"outputs":10,"dropout":0.0}"#
        );
        let xray = ModelSpec::preset_images(
            ModelKind::Cnn,
            ImageShape::new(3, 64, 48).unwrap(),
            TaskKind::Binary,
        )
        .unwrap();
        assert_eq!(xray.inputs(), 3 * 64 * 48);
        assert!(xray
            .canonical_json()
            .ends_with(r#""in_channels":3,"pool":[4,4]}"#));
        // The dense layer is the digits' size whatever the image.
        let dense = |s: &ModelSpec| {
            crate::layout(s)
                .into_iter()
                .find(|p| p.name == "fc.weight")
                .map(|p| p.shape)
        };
        assert_eq!(dense(&xray), dense(&digits));
        assert_eq!(ModelSpec::from_json(&xray.canonical_json()).unwrap(), xray);
        for bad in [
            r#"{"name":"cnn","height":8,"width":8,"channels":[4,4],"hidden":4,"outputs":2,"dropout":0.0,"pool":[5,4]}"#,
            r#"{"name":"cnn","height":8,"width":8,"channels":[4,4],"hidden":4,"outputs":2,"dropout":0.0,"in_channels":0}"#,
            r#"{"name":"torchscript","module":"ababababababababababababababababababababababababababababababab","inputs":64,"outputs":2,"parameters":[{"name":"w","shape":[2,64]}],"image":[1,8,7]}"#,
        ] {
            assert!(ModelSpec::from_json(bad).is_err(), "{bad}");
        }
    }
}
