use fedchain_datasets::{Dataset, TaskKind};
use fedchain_model_core::params::{check_params, init_params, layout, ModelDigest, ParamInfo};
use fedchain_model_core::ModelFile;
use fedchain_model_core::ModelSpec;
use fedchain_model_core::{ModelError, Result};
use std::path::Path;
use std::sync::Mutex;
use tch::nn;
use tch::{Device, Kind, Tensor, TrainableCModule};

use crate::torchscript::inspect;
use fedchain_model_core::TensorDecl;

/// Where a TorchScript model's module comes from.
enum Module<'a> {
    File(&'a Path),
    Bytes(&'a [u8]),
}

/// Padding of the built-in CNN's 3x3 convolutions (stride and dilation 1): the spatial size stays.
pub(crate) const CONV_PADDING: i64 = 1;

/// A parametrised layer of a traced forward pass ([`Model::forward_traced`]): its input (detached)
/// and its output (in the graph, so the loss's gradient with respect to it can be asked).
pub(crate) enum Traced {
    /// `y = x W^T + b`, rows `[b, in]` to `[b, out]`.
    Linear { input: Tensor, output: Tensor },
    /// A 3x3 convolution with [`CONV_PADDING`], `[b, c, h, w]` to `[b, c', h, w]`.
    Conv { input: Tensor, output: Tensor },
}

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
        in_channels: i64,
        pool: Option<[i64; 2]>,
        dropout: f64,
    },
    /// A researcher's TorchScript module; its train/eval mode is switched per call, hence the lock.
    Script(Mutex<TrainableCModule>),
}

impl Model {
    /// A fresh model with seeded initial parameters ([`init_params`]), identical on every machine.
    pub fn new(spec: &ModelSpec, device: Device, seed: u64) -> Result<Model> {
        Model::from_params(spec, &init_params(spec, seed), device)
    }

    /// The TorchScript module at `path` as a model of `inputs` features and `outputs` outputs, with
    /// the module's own parameters. The module is inspected first (its operators against the
    /// allowlist, before libtorch loads it), then loaded, and one forward pass on a batch of
    /// zeros must return `[2, outputs]`.
    pub fn from_module(
        path: &Path,
        inputs: usize,
        outputs: usize,
        device: Device,
    ) -> Result<Model> {
        Model::from_module_for(path, inputs, outputs, None, device)
    }

    /// As [`Model::from_module`]; with `image` (`[channels, height, width]`, whose product is
    /// `inputs`), the module takes images `[n, channels, height, width]`, and the forward pass
    /// checked is on a batch of 2 such images.
    pub fn from_module_for(
        path: &Path,
        inputs: usize,
        outputs: usize,
        image: Option<[usize; 3]>,
        device: Device,
    ) -> Result<Model> {
        let inspected = inspect(path)?;
        if !inspected.forbidden.is_empty() {
            return Err(ModelError::InvalidSpec(format!(
                "{}: the module calls {} outside the allowed tensor and neural-network \
                 operators; it is not loaded (`fedchain model inspect` shows its code)",
                path.display(),
                inspected.forbidden.join(", ")
            )));
        }
        let parameters = inspected
            .parameters
            .unwrap_or_default()
            .into_iter()
            .map(|p| TensorDecl {
                name: p.name,
                shape: p.shape,
            })
            .collect();
        let spec = ModelSpec::Torchscript {
            module: inspected.code_sha256,
            inputs,
            outputs,
            parameters,
            image,
        };
        spec.validate()
            .map_err(|e| ModelError::InvalidSpec(format!("{}: {e}", path.display())))?;
        let model = Model::build(&spec, Some(Module::File(path)), device)?;
        let probe = Tensor::zeros([2, inputs as i64], (Kind::Float, device));
        let out = tch::no_grad(|| model.forward_t(&probe, false)).map_err(|e| {
            ModelError::InvalidSpec(format!(
                "{}: a forward pass on a batch of 2 rows of {inputs} features fails: {e}",
                path.display()
            ))
        })?;
        if out.size() != [2, outputs as i64] {
            return Err(ModelError::InvalidSpec(format!(
                "{}: on a batch of 2 rows of {inputs} features the module returns {:?}; the \
                 task needs [2, {outputs}]",
                path.display(),
                out.size()
            )));
        }
        Ok(model)
    }

    /// A TorchScript model of `spec` holding `params`, its module loaded from `module` (which must
    /// be the file `spec` names, and have exactly the parameters it declares).
    pub fn from_module_params(
        spec: &ModelSpec,
        module: &Path,
        params: &[f32],
        device: Device,
    ) -> Result<Model> {
        let ModelSpec::Torchscript { module: digest, .. } = spec else {
            return Err(ModelError::InvalidSpec(format!(
                "{spec} is not a TorchScript model"
            )));
        };
        let inspected = inspect(module)?;
        if inspected.code_sha256 != *digest {
            return Err(ModelError::InvalidSpec(format!(
                "{} is not the module the model names: its code's digest is {}, the model's \
                 module is {digest}",
                module.display(),
                inspected.code_sha256
            )));
        }
        if !inspected.forbidden.is_empty() {
            return Err(ModelError::InvalidSpec(format!(
                "{}: the module calls {} outside the allowed operators; it is not loaded",
                module.display(),
                inspected.forbidden.join(", ")
            )));
        }
        let mut model = Model::build(spec, Some(Module::File(module)), device)?;
        model.set_params(params)?;
        Ok(model)
    }

    /// A job's model holding `params`: for a TorchScript model, from the module file the job
    /// carries (`module`, checked again here: its operators and that it is the code the spec
    /// names, before libtorch loads it); otherwise built from the spec (`module` must be empty).
    pub fn for_job(
        spec: &ModelSpec,
        module: &[u8],
        params: &[f32],
        device: Device,
    ) -> Result<Model> {
        let ModelSpec::Torchscript { module: digest, .. } = spec else {
            if !module.is_empty() {
                return Err(ModelError::InvalidSpec(format!(
                    "{spec} is a built-in model, but a TorchScript module came with it"
                )));
            }
            return Model::from_params(spec, params, device);
        };
        let code = fedchain_model_core::TorchScriptCode::read(module)?;
        if code.digest() != *digest {
            return Err(ModelError::InvalidSpec(format!(
                "the job's module has code digest {}, but its model names {digest}",
                code.digest()
            )));
        }
        code.check()?;
        let mut model = Model::build(spec, Some(Module::Bytes(module)), device)?;
        model.set_params(params)?;
        Ok(model)
    }

    /// A model holding the given flat parameters.
    pub fn from_params(spec: &ModelSpec, params: &[f32], device: Device) -> Result<Model> {
        let mut model = Model::build(spec, None, device)?;
        model.set_params(params)?;
        Ok(model)
    }

    /// The network of `spec` on `device` (a TorchScript module's from `module`), its variables
    /// checked against the layout; parameters as libtorch or the module initialised them.
    fn build(spec: &ModelSpec, module: Option<Module<'_>>, device: Device) -> Result<Model> {
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
                in_channels,
                pool,
            } => {
                let conv = nn::ConvConfig {
                    padding: CONV_PADDING,
                    ..Default::default()
                };
                let [c1, c2] = channels.map(|c| c as i64);
                let [ph, pw] = fedchain_model_core::cnn_grid(*height, *width, *pool);
                let flat = c2 * (ph * pw) as i64;
                Net::Cnn {
                    conv1: nn::conv2d(&root / "conv1", *in_channels as i64, c1, 3, conv),
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
                    in_channels: *in_channels as i64,
                    pool: pool.map(|p| p.map(|v| v as i64)),
                    dropout: *dropout,
                }
            }
            ModelSpec::Torchscript { .. } => {
                let loaded = match module {
                    None => {
                        return Err(ModelError::InvalidSpec(format!(
                            "{spec} needs its module to run (Model::from_module_params or \
                             Model::for_job)"
                        )))
                    }
                    Some(Module::File(path)) => TrainableCModule::load(path, root)
                        .map_err(|e| format!("{}: {e}", path.display())),
                    Some(Module::Bytes(bytes)) => {
                        TrainableCModule::load_data(&mut std::io::Cursor::new(bytes), root)
                            .map_err(|e| e.to_string())
                    }
                };
                let m = loaded.map_err(|e| {
                    ModelError::InvalidSpec(format!(
                        "libtorch cannot load the TorchScript module: {e}"
                    ))
                })?;
                Net::Script(Mutex::new(m))
            }
        };
        let layout = layout(spec);
        let mut variables = vs.variables();
        if let Net::Script(_) = net {
            // tch stores a module's parameters under their names with '.' replaced by '_': map
            // them back, refusing names that the replacement would confuse.
            let mut renamed = std::collections::HashMap::new();
            for p in &layout {
                let stored = p.name.replace('.', "_");
                if let Some(other) = renamed.insert(stored, p.name.clone()) {
                    return Err(ModelError::InvalidSpec(format!(
                        "the module's parameters {other:?} and {:?} have the same name in \
                         libtorch's variable store; rename one",
                        p.name
                    )));
                }
            }
            variables = variables
                .into_iter()
                .map(|(k, v)| (renamed.get(&k).cloned().unwrap_or(k), v))
                .collect();
        }
        if variables.len() != layout.len() {
            return Err(ModelError::InvalidSpec(format!(
                "libtorch has {} parameter tensors for {spec}, which declares {}",
                variables.len(),
                layout.len()
            )));
        }
        let mut vars = Vec::with_capacity(layout.len());
        for p in &layout {
            let var = variables.remove(&p.name).ok_or_else(|| {
                ModelError::InvalidSpec(format!(
                    "{spec} declares a parameter '{}' that libtorch does not have",
                    p.name
                ))
            })?;
            let shape: Vec<usize> = var.size().iter().map(|&d| d as usize).collect();
            if shape != p.shape {
                return Err(ModelError::InvalidSpec(format!(
                    "parameter '{}' is {shape:?} in libtorch, but {spec} declares {:?}",
                    p.name, p.shape
                )));
            }
            vars.push(var);
        }
        Ok(Model {
            spec: spec.clone(),
            device,
            vs,
            net,
            layout,
            vars,
        })
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

    /// Writes a TorchScript model's module, with its current parameters, as a TorchScript file
    /// (`torch.jit.load` opens it).
    pub fn save_module(&self, path: &Path) -> Result<()> {
        let Net::Script(m) = &self.net else {
            return Err(ModelError::InvalidArgument(format!(
                "{} is not a TorchScript model; it has no module to save",
                self.spec
            )));
        };
        m.lock()
            .map_err(|_| ModelError::Torch("the module's lock is poisoned".into()))?
            .save(path)
            .map_err(|e| ModelError::Torch(format!("{}: {e}", path.display())))
    }

    /// The spec.
    pub fn spec(&self) -> &ModelSpec {
        &self.spec
    }

    /// The device holding the parameters.
    pub fn device(&self) -> Device {
        self.device
    }

    /// The parameters' variables, in layout order.
    pub(crate) fn variables(&self) -> &[Tensor] {
        &self.vars
    }

    pub(crate) fn var_store(&self) -> &nn::VarStore {
        &self.vs
    }

    /// The flat parameter vector (layout order), copied to the host.
    pub fn params(&self) -> Result<Vec<f32>> {
        flat_on_host(&self.vars)
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
    /// `[n, inputs]`. `train` enables dropout (and a module's training mode).
    pub fn forward_t(&self, xs: &Tensor, train: bool) -> Result<Tensor> {
        Ok(match &self.net {
            Net::Script(m) => {
                let mut m = m
                    .lock()
                    .map_err(|_| ModelError::Torch("the module's lock is poisoned".into()))?;
                if train {
                    m.f_set_train().map_err(torch_error)?;
                } else {
                    m.f_set_eval().map_err(torch_error)?;
                }
                // An image job's module takes images, not rows.
                let shaped = match &self.spec {
                    ModelSpec::Torchscript {
                        image: Some([c, h, w]),
                        ..
                    } => Some(
                        xs.f_view([-1, *c as i64, *h as i64, *w as i64])
                            .map_err(torch_error)?,
                    ),
                    _ => None,
                };
                let out = m
                    .forward_ts(&[shaped.as_ref().unwrap_or(xs)])
                    .map_err(torch_error)?;
                // A module's output is its own business until here: it must be one row of
                // `outputs` values per input row, whatever the batch.
                let want = [
                    xs.size().first().copied().unwrap_or(0),
                    self.spec.outputs() as i64,
                ];
                if out.size() != want {
                    return Err(ModelError::InvalidSpec(format!(
                        "the module returned {:?} for {} rows; it must return {want:?}",
                        out.size(),
                        want[0]
                    )));
                }
                out
            }
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
                in_channels,
                pool,
                dropout,
            } => {
                let pooled = xs
                    .view([-1, *in_channels, *height, *width])
                    .apply(conv1)
                    .relu()
                    .apply(conv2)
                    .relu()
                    .max_pool2d_default(2);
                match pool {
                    Some(grid) => pooled.adaptive_avg_pool2d(grid),
                    None => pooled,
                }
                .flatten(1, -1)
                .apply(fc)
                .relu()
                .dropout(*dropout, train)
                .apply(output)
            }
        })
    }

    /// The forward pass of a built-in network with each parametrised layer's input and output
    /// kept: what per-example gradient norms need (see [`crate::dp`]). The same arithmetic as
    /// [`Model::forward_t`]. `None` for a TorchScript module, whose layers are its own.
    pub(crate) fn forward_traced(&self, xs: &Tensor, train: bool) -> Option<(Tensor, Vec<Traced>)> {
        let mut traced = Vec::new();
        let linear = |x: &Tensor, l: &nn::Linear, traced: &mut Vec<Traced>| {
            let y = x.linear(&l.ws, l.bs.as_ref());
            traced.push(Traced::Linear {
                input: x.detach(),
                output: y.shallow_clone(),
            });
            y
        };
        let out = match &self.net {
            Net::Script(_) => return None,
            Net::Linear(l) => linear(xs, l, &mut traced),
            Net::Mlp {
                layers,
                output,
                dropout,
            } => {
                let mut h = xs.shallow_clone();
                for l in layers {
                    h = linear(&h, l, &mut traced).relu().dropout(*dropout, train);
                }
                linear(&h, output, &mut traced)
            }
            Net::Cnn {
                conv1,
                conv2,
                fc,
                output,
                height,
                width,
                in_channels,
                pool,
                dropout,
            } => {
                let conv = |x: &Tensor, c: &nn::Conv2D, traced: &mut Vec<Traced>| {
                    let y = x.conv2d(&c.ws, c.bs.as_ref(), [1, 1], CONV_PADDING, [1, 1], 1);
                    traced.push(Traced::Conv {
                        input: x.detach(),
                        output: y.shallow_clone(),
                    });
                    y
                };
                let x = xs.view([-1, *in_channels, *height, *width]);
                let h = conv(&x, conv1, &mut traced).relu();
                let pooled = conv(&h, conv2, &mut traced).relu().max_pool2d_default(2);
                let flat = match pool {
                    Some(grid) => pooled.adaptive_avg_pool2d(grid),
                    None => pooled,
                }
                .flatten(1, -1);
                let h = linear(&flat, fc, &mut traced)
                    .relu()
                    .dropout(*dropout, train);
                linear(&h, output, &mut traced)
            }
        };
        Some((out, traced))
    }

    /// Predictions for every row of `data`: the class index (as f32) for classification, the
    /// value for regression (in the units of `data`'s target).
    pub fn predict(&self, data: &Dataset) -> Result<Vec<f32>> {
        self.predict_rows(data.features(), data.n_features(), data.task())
    }

    /// Row-major `features`, `n_features` values a row, as a `[rows, n_features]` tensor on the
    /// model's device.
    fn rows_tensor(&self, features: &[f32], n_features: usize) -> Result<Tensor> {
        if n_features == 0 || !features.len().is_multiple_of(n_features) {
            return Err(ModelError::InvalidArgument(format!(
                "{} values do not make rows of {n_features}",
                features.len()
            )));
        }
        Ok(Tensor::from_slice(features)
            .view([(features.len() / n_features) as i64, n_features as i64])
            .to_device(self.device))
    }

    /// The raw outputs (logits for classification, scaled values for regression) for rows given
    /// as row-major `features` of `n_features` values each: one vector of [`ModelSpec::outputs`]
    /// values per row, what PyTorch's `module(x)` returns.
    pub fn outputs_rows(&self, features: &[f32], n_features: usize) -> Result<Vec<Vec<f32>>> {
        let xs = self.rows_tensor(features, n_features)?;
        let out = tch::no_grad(|| self.forward_t(&xs, false))?
            .to_device(Device::Cpu)
            .to_kind(Kind::Float)
            .contiguous();
        let width = self.spec.outputs();
        let flat = Vec::<f32>::try_from(&out.view(-1)).map_err(torch_error)?;
        Ok(flat.chunks(width).map(<[f32]>::to_vec).collect())
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
        let xs = self.rows_tensor(features, n_features)?;
        let out = tch::no_grad(|| self.forward_t(&xs, false))?;
        let pred = match task {
            TaskKind::Binary => out.view(-1).gt(0.0).to_kind(Kind::Float),
            TaskKind::Multiclass { .. } => out.argmax(-1, false).to_kind(Kind::Float),
            TaskKind::Regression => out.view(-1),
        };
        Vec::<f32>::try_from(&pred.to_device(Device::Cpu)).map_err(torch_error)
    }
}

/// Tensors shaped like the parameters, flattened one after another into host f32s (the flat
/// parameter order when they are in layout order).
pub(crate) fn flat_on_host(tensors: &[Tensor]) -> Result<Vec<f32>> {
    let mut flat = Vec::with_capacity(tensors.iter().map(|t| t.numel()).sum());
    for t in tensors {
        let host = t
            .detach()
            .to_device(Device::Cpu)
            .to_kind(Kind::Float)
            .contiguous()
            .view(-1);
        flat.extend(Vec::<f32>::try_from(&host).map_err(torch_error)?);
    }
    Ok(flat)
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

/// The task's loss of each row `[b]`, whose mean over the rows is [`loss`].
pub(crate) fn per_row_loss(task: TaskKind, outputs: &Tensor, targets: &Tensor) -> Tensor {
    let none = tch::Reduction::None;
    match task {
        TaskKind::Binary => outputs
            .binary_cross_entropy_with_logits::<Tensor>(targets, None, None, none)
            .mean_dim(1, false, Kind::Float),
        TaskKind::Multiclass { .. } => outputs
            .log_softmax(-1, Kind::Float)
            .nll_loss_nd::<Tensor>(targets, None, none, -100),
        TaskKind::Regression => outputs
            .mse_loss(targets, none)
            .mean_dim(1, false, Kind::Float),
    }
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
