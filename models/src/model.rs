use fedchain_datasets::{Dataset, TaskKind};
use fedchain_model_core::params::{check_params, init_params, layout, ModelDigest, ParamInfo};
use fedchain_model_core::ModelFile;
use fedchain_model_core::ModelSpec;
use fedchain_model_core::{ModelError, Result};
use std::path::Path;
use tch::nn;
use tch::{Device, Kind, Tensor};

/// A network built from a [`ModelSpec`], with its parameters on a libtorch device.
///
/// The parameters are always readable and writable as the flat vector of [`crate::params`]; the
/// libtorch variables are checked against that layout when the model is built.
pub struct Model {
    spec: ModelSpec,
    device: Device,
    vs: nn::VarStore,
    net: Net,
    layout: Vec<ParamInfo>,
    /// The VarStore's variables in layout order (shallow handles to the same storage).
    vars: Vec<Tensor>,
}

// One Net per model, built once: the size difference between variants costs nothing.
#[allow(clippy::large_enum_variant)]
enum Net {
    Linear(nn::Linear),
    Mlp {
        layers: Vec<nn::Linear>,
        output: nn::Linear,
        dropout: f64,
    },
    Cnn {
        conv1: nn::Conv2D,
        conv2: nn::Conv2D,
        fc: nn::Linear,
        output: nn::Linear,
        height: i64,
        width: i64,
        dropout: f64,
    },
}

impl Model {
    /// A fresh model with seeded initial parameters ([`init_params`]), identical on every machine.
    pub fn new(spec: &ModelSpec, device: Device, seed: u64) -> Result<Model> {
        Model::from_params(spec, &init_params(spec, seed), device)
    }

    /// A model holding the given flat parameters.
    pub fn from_params(spec: &ModelSpec, params: &[f32], device: Device) -> Result<Model> {
        spec.validate()?;
        let vs = nn::VarStore::new(device);
        let root = vs.root();
        let net = match spec {
            ModelSpec::LogisticRegression { inputs, outputs } => Net::Linear(nn::linear(
                &root / "linear",
                *inputs as i64,
                *outputs as i64,
                Default::default(),
            )),
            ModelSpec::Mlp {
                inputs,
                hidden,
                outputs,
                dropout,
            } => {
                let mut prev = *inputs as i64;
                let mut layers = Vec::new();
                for (i, &h) in hidden.iter().enumerate() {
                    layers.push(nn::linear(
                        &root / format!("layer{i}"),
                        prev,
                        h as i64,
                        Default::default(),
                    ));
                    prev = h as i64;
                }
                let output =
                    nn::linear(&root / "output", prev, *outputs as i64, Default::default());
                Net::Mlp {
                    layers,
                    output,
                    dropout: *dropout,
                }
            }
            ModelSpec::Cnn {
                height,
                width,
                channels,
                hidden,
                outputs,
                dropout,
            } => {
                let conv = nn::ConvConfig {
                    padding: 1,
                    ..Default::default()
                };
                let [c1, c2] = channels.map(|c| c as i64);
                let flat = c2 * (*height as i64 / 2) * (*width as i64 / 2);
                Net::Cnn {
                    conv1: nn::conv2d(&root / "conv1", 1, c1, 3, conv),
                    conv2: nn::conv2d(&root / "conv2", c1, c2, 3, conv),
                    fc: nn::linear(&root / "fc", flat, *hidden as i64, Default::default()),
                    output: nn::linear(
                        &root / "output",
                        *hidden as i64,
                        *outputs as i64,
                        Default::default(),
                    ),
                    height: *height as i64,
                    width: *width as i64,
                    dropout: *dropout,
                }
            }
        };
        let layout = layout(spec);
        let mut variables = vs.variables();
        if variables.len() != layout.len() {
            return Err(ModelError::InvalidSpec(format!(
                "internal: libtorch built {} tensors for {spec}, the layout has {}",
                variables.len(),
                layout.len()
            )));
        }
        let mut vars = Vec::with_capacity(layout.len());
        for p in &layout {
            let var = variables.remove(&p.name).ok_or_else(|| {
                ModelError::InvalidSpec(format!("internal: libtorch has no tensor '{}'", p.name))
            })?;
            let shape: Vec<usize> = var.size().iter().map(|&d| d as usize).collect();
            if shape != p.shape {
                return Err(ModelError::InvalidSpec(format!(
                    "internal: tensor '{}' is {shape:?} in libtorch, {:?} in the layout",
                    p.name, p.shape
                )));
            }
            vars.push(var);
        }
        let mut model = Model {
            spec: spec.clone(),
            device,
            vs,
            net,
            layout,
            vars,
        };
        model.set_params(params)?;
        Ok(model)
    }

    /// Loads a model file onto a device.
    pub fn load(path: &Path, device: Device) -> Result<Model> {
        let file = ModelFile::load(path)?;
        Model::from_params(file.spec(), file.params(), device)
    }

    /// Saves as a safetensors [`ModelFile`].
    pub fn save(&self, path: &Path) -> Result<()> {
        self.to_file()?.save(path)
    }

    /// The model as data (spec + flat parameters).
    pub fn to_file(&self) -> Result<ModelFile> {
        ModelFile::new(self.spec.clone(), self.params()?)
    }

    /// The spec.
    pub fn spec(&self) -> &ModelSpec {
        &self.spec
    }

    /// The device holding the parameters.
    pub fn device(&self) -> Device {
        self.device
    }

    pub(crate) fn var_store(&self) -> &nn::VarStore {
        &self.vs
    }

    /// The flat parameter vector (layout order), copied to the host.
    pub fn params(&self) -> Result<Vec<f32>> {
        let mut flat = Vec::with_capacity(self.layout.iter().map(ParamInfo::len).sum());
        for var in &self.vars {
            let host = var
                .detach()
                .to_device(Device::Cpu)
                .to_kind(Kind::Float)
                .contiguous()
                .view(-1);
            flat.extend(Vec::<f32>::try_from(&host).map_err(torch_error)?);
        }
        Ok(flat)
    }

    /// Overwrites every parameter from a flat vector (layout order). Rejects a vector of the wrong
    /// length or with non-finite values, leaving the model unchanged.
    pub fn set_params(&mut self, flat: &[f32]) -> Result<()> {
        check_params(&self.spec, flat)?;
        tch::no_grad(|| -> Result<()> {
            for (p, var) in self.layout.iter().zip(self.vars.iter_mut()) {
                let shape: Vec<i64> = p.shape.iter().map(|&d| d as i64).collect();
                let src = Tensor::from_slice(&flat[p.offset..p.offset + p.len()])
                    .view(shape.as_slice())
                    .to_device(self.device);
                var.f_copy_(&src).map_err(torch_error)?;
            }
            Ok(())
        })
    }

    /// The digest of the current parameters.
    pub fn digest(&self) -> Result<ModelDigest> {
        Ok(ModelDigest::of(&self.params()?))
    }

    /// Raw outputs (logits for classification, values for regression) for a batch of rows
    /// `[n, inputs]`. `train` enables dropout.
    pub fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        match &self.net {
            Net::Linear(l) => xs.apply(l),
            Net::Mlp {
                layers,
                output,
                dropout,
            } => {
                let mut h = xs.shallow_clone();
                for l in layers {
                    h = h.apply(l).relu().dropout(*dropout, train);
                }
                h.apply(output)
            }
            Net::Cnn {
                conv1,
                conv2,
                fc,
                output,
                height,
                width,
                dropout,
            } => xs
                .view([-1, 1, *height, *width])
                .apply(conv1)
                .relu()
                .apply(conv2)
                .relu()
                .max_pool2d_default(2)
                .flatten(1, -1)
                .apply(fc)
                .relu()
                .dropout(*dropout, train)
                .apply(output),
        }
    }

    /// Predictions for every row of `data`: the class index (as f32) for classification, the
    /// value for regression (in the units of `data`'s target).
    pub fn predict(&self, data: &Dataset) -> Result<Vec<f32>> {
        self.predict_rows(data.features(), data.n_features(), data.task())
    }

    /// Predictions for rows given as row-major `features` of `n_features` values each, for
    /// `task`: as [`Model::predict`], for rows that carry no target.
    pub fn predict_rows(
        &self,
        features: &[f32],
        n_features: usize,
        task: TaskKind,
    ) -> Result<Vec<f32>> {
        self.spec.check_fits(n_features, task)?;
        if n_features == 0 || !features.len().is_multiple_of(n_features) {
            return Err(ModelError::InvalidArgument(format!(
                "{} values do not make rows of {n_features}",
                features.len()
            )));
        }
        let xs = Tensor::from_slice(features)
            .view([(features.len() / n_features) as i64, n_features as i64])
            .to_device(self.device);
        let out = tch::no_grad(|| self.forward_t(&xs, false));
        let pred = match task {
            TaskKind::Binary => out.view(-1).gt(0.0).to_kind(Kind::Float),
            TaskKind::Multiclass { .. } => out.argmax(-1, false).to_kind(Kind::Float),
            TaskKind::Regression => out.view(-1),
        };
        Vec::<f32>::try_from(&pred.to_device(Device::Cpu)).map_err(torch_error)
    }
}

/// The rows of `data` as a `[n, d]` float tensor on `device`.
pub(crate) fn features_tensor(data: &Dataset, device: Device) -> Tensor {
    Tensor::from_slice(data.features())
        .view([data.len() as i64, data.n_features() as i64])
        .to_device(device)
}

/// The targets of `data` in the form the task's loss takes: `[n, 1]` floats for binary and
/// regression, `[n]` class indices for multiclass.
pub(crate) fn targets_tensor(data: &Dataset, device: Device) -> Tensor {
    let t = Tensor::from_slice(data.targets());
    match data.task() {
        TaskKind::Multiclass { .. } => t.to_kind(Kind::Int64),
        TaskKind::Binary | TaskKind::Regression => t.view([-1, 1]),
    }
    .to_device(device)
}

/// The task's training loss: binary cross-entropy on a logit, cross-entropy on logits, or MSE.
pub(crate) fn loss(task: TaskKind, outputs: &Tensor, targets: &Tensor) -> Tensor {
    match task {
        TaskKind::Binary => outputs.binary_cross_entropy_with_logits::<Tensor>(
            targets,
            None,
            None,
            tch::Reduction::Mean,
        ),
        TaskKind::Multiclass { .. } => outputs.cross_entropy_for_logits(targets),
        TaskKind::Regression => outputs.mse_loss(targets, tch::Reduction::Mean),
    }
}

/// libtorch's error, as the model crates report it.
pub(crate) fn torch_error(e: tch::TchError) -> ModelError {
    ModelError::Torch(e.to_string())
}
