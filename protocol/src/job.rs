//! What a job is: validation of a researcher's [`JobSpec`] (typed errors naming the field) and its
//! digest. Every party validates a spec with this one function: the coordinator when a researcher
//! submits it, a hospital before it enrolls, the auditor when it replays the `JobSubmitted` record.

use fedchain_crypto::quantize::Quantizer;
use fedchain_crypto::update::QUANT_BITS;
use fedchain_datasets::{ImageShape, Schema, TaskKind};
use fedchain_ledger::{sha256, Hash};
use fedchain_model_core::{num_parameters, ModelSpec, TorchScriptCode};
use fedchain_proto::limits;
use fedchain_proto::v1::{dataset_schema, JobSpec};
use prost::Message;

/// Most declines of one job a hospital may have on the ledger: the same reason is recorded once,
/// and a hospital whose reason keeps changing cannot grow the ledger without bound. The
/// coordinator records no more; replay refuses a ledger that holds more.
pub const MAX_DECLINES: u32 = 3;

/// Most training rows one hospital may declare (the packing slots grow with the total).
pub const MAX_DECLARED_SAMPLES: u64 = 1 << 30;
/// Most rounds a job may ask for.
pub const MAX_ROUNDS: u32 = 10_000;
/// Longest round deadline, in seconds (a day).
pub const MAX_DEADLINE_SECONDS: u32 = 86_400;

/// A job spec that passed [`validate`], with what is derived from it.
#[derive(Debug, Clone)]
pub struct ValidJob {
    /// The spec as submitted.
    pub spec: JobSpec,
    /// Its canonical protobuf encoding (the blob the ledger keeps).
    pub bytes: Vec<u8>,
    /// SHA-256 of `bytes`, recorded in `JobSubmitted`.
    pub digest: Hash,
    /// The model architecture.
    pub model: ModelSpec,
    /// The task the schema declares.
    pub task: TaskKind,
    /// The shape of every image, for an image job.
    pub image: Option<ImageShape>,
}

impl ValidJob {
    /// Values per row the model takes: the features, or every value of an image.
    pub fn inputs(&self) -> usize {
        match self.image {
            Some(shape) => shape.len(),
            None => self.spec.schema.as_ref().map_or(0, |s| s.features.len()),
        }
    }

    /// The schema a hospital reads its data with.
    pub fn data_schema(&self) -> Schema {
        let schema = self.spec.schema.clone().unwrap_or_default();
        Schema {
            features: Some(schema.features),
            target: schema.target,
            task: self.task,
            image: self.image,
        }
    }
}

/// The part of a job spec that [`validate`] refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobField {
    /// `schema`: the dataset's columns and task.
    Schema,
    /// `model`: the architecture, and whether it fits the schema.
    Model,
    /// `rounds`.
    Rounds,
    /// `local_epochs`.
    LocalEpochs,
    /// `learning_rate`.
    LearningRate,
    /// `batch_size`.
    BatchSize,
    /// `min_participants`.
    MinParticipants,
    /// `round_deadline_seconds`.
    RoundDeadline,
    /// `credit_budget`.
    CreditBudget,
    /// `quantization`.
    Quantization,
    /// `privacy`: DP-SGD's parameters and the budget.
    Privacy,
}

/// A job spec refused by [`validate`]: the field, and a message that says what is allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct JobError {
    /// The part of the spec that is wrong.
    pub field: JobField,
    /// What is wrong and what is allowed.
    pub reason: String,
}

fn bad(field: JobField, reason: impl Into<String>) -> JobError {
    JobError {
        field,
        reason: reason.into(),
    }
}

/// Checks a researcher's spec; the error says which field is wrong and what is allowed.
pub fn validate(spec: &JobSpec) -> Result<ValidJob, JobError> {
    use JobField::*;
    let schema = spec
        .schema
        .as_ref()
        .ok_or_else(|| bad(Schema, "the job has no dataset schema"))?;
    if schema.target.is_empty() {
        return Err(bad(Schema, "the schema names no target column"));
    }
    if schema.features.is_empty() {
        return Err(bad(
            Schema,
            "the schema must list its feature columns (in model input order)",
        ));
    }
    if schema.features.iter().any(|f| f == &schema.target) {
        return Err(bad(
            Schema,
            format!(
                "the target column {:?} is also listed as a feature",
                schema.target
            ),
        ));
    }
    let task = task_of(schema.task.as_ref()).map_err(|e| bad(Schema, e))?;
    let image = match &schema.image {
        None => None,
        Some(i) => {
            let shape = ImageShape::new(i.channels as usize, i.height as usize, i.width as usize)
                .map_err(|e| bad(Schema, format!("image: {e}")))?;
            if schema.features != shape.channel_names() {
                return Err(bad(
                    Schema,
                    format!(
                        "an image schema's features are its channels, exactly [{}] for {} \
                         channel(s); got [{}]",
                        shape.channel_names().join(", "),
                        shape.channels,
                        schema.features.join(", ")
                    ),
                ));
            }
            Some(shape)
        }
    };
    let inputs = image.map_or(schema.features.len(), |s| s.len());
    let model_json = spec
        .model
        .as_ref()
        .map(|m| m.canonical_json.as_str())
        .ok_or_else(|| bad(Model, "the job has no model spec"))?;
    let model =
        ModelSpec::from_json(model_json).map_err(|e| bad(Model, format!("model spec: {e}")))?;
    match (&model, spec.torchscript_module.is_empty()) {
        (ModelSpec::Torchscript { .. }, false)
            if spec.torchscript_module.len() > limits::MAX_TORCHSCRIPT_MODULE_BYTES =>
        {
            return Err(bad(
                Model,
                format!(
                    "torchscript_module is {} bytes; a job carries modules of up to {} bytes",
                    spec.torchscript_module.len(),
                    limits::MAX_TORCHSCRIPT_MODULE_BYTES
                ),
            ));
        }
        (ModelSpec::Torchscript { module, .. }, false) => {
            // What every hospital would run: its operators, and that it is the code the spec
            // names. Read, never loaded: the coordinator links no libtorch.
            let code = TorchScriptCode::read(&spec.torchscript_module)
                .map_err(|e| bad(Model, format!("torchscript_module: {e}")))?;
            if code.digest() != *module {
                return Err(bad(
                    Model,
                    format!(
                        "torchscript_module's code has digest {}, but the model spec names {module}",
                        code.digest()
                    ),
                ));
            }
            code.check()
                .map_err(|e| bad(Model, format!("torchscript_module refused: {e}")))?;
        }
        (ModelSpec::Torchscript { .. }, true) => {
            return Err(bad(
                Model,
                "a torchscript model needs its module: torchscript_module is empty",
            ))
        }
        (_, false) => {
            return Err(bad(
                Model,
                "torchscript_module is set, but the model is not a torchscript model",
            ))
        }
        (_, true) => {}
    }
    if model.canonical_json() != model_json {
        return Err(bad(
            Model,
            "the model spec is not in canonical JSON form (serialize it with ModelSpec::canonical_json)",
        ));
    }
    if let ModelSpec::Torchscript {
        image: module_image,
        ..
    } = &model
    {
        // An image job's module takes images; a table job's, rows.
        if image.map(|s| [s.channels, s.height, s.width]) != *module_image {
            let i = module_image.map_or("table rows".to_string(), |i| format!("{i:?}"));
            return Err(bad(
                Model,
                format!(
                    "the torchscript module takes {i}, but the schema declares {}",
                    image.map_or("table rows".to_string(), |s| format!(
                        "[{}, {}, {}]",
                        s.channels, s.height, s.width
                    ))
                ),
            ));
        }
    }
    // A CNN reads its rows as images of its own shape: an image job's must be the schema's
    // (the same count in another shape would train on scrambled pixels).
    if let ModelSpec::Cnn {
        height,
        width,
        in_channels,
        ..
    } = &model
    {
        if let Some(shape) = image {
            if (shape.channels, shape.height, shape.width) != (*in_channels, *height, *width) {
                return Err(bad(
                    Model,
                    format!(
                        "model spec does not fit the schema: the cnn takes {in_channels}x{height}x\
                         {width} images, the schema declares {}x{}x{}",
                        shape.channels, shape.height, shape.width
                    ),
                ));
            }
        }
    }
    model
        .check_fits(inputs, task)
        .map_err(|e| bad(Model, format!("model spec does not fit the schema: {e}")))?;
    // The file's header holds the spec (a TorchScript model's declared tensors too) and the
    // preprocessing (a name, a mean and a deviation per feature, and the pooled moments).
    let header = 4096 + model_json.len() + schema.features.len() * 128;
    let file_bytes = num_parameters(&model) * 4 + header;
    if file_bytes > limits::MAX_MODEL_FILE_BYTES {
        return Err(bad(
            Model,
            format!(
                "the model has {} parameters, a file of about {file_bytes} bytes; a job's model \
                 file may have up to {} bytes (about {} million parameters)",
                num_parameters(&model),
                limits::MAX_MODEL_FILE_BYTES,
                limits::MAX_MODEL_FILE_BYTES / 4_000_000
            ),
        ));
    }
    if spec.rounds == 0 || spec.rounds > MAX_ROUNDS {
        return Err(bad(
            Rounds,
            format!(
                "rounds must be between 1 and {MAX_ROUNDS}, got {}",
                spec.rounds
            ),
        ));
    }
    if spec.local_epochs == 0 || spec.local_epochs > 1000 {
        return Err(bad(
            LocalEpochs,
            format!(
                "local_epochs must be between 1 and 1000, got {}",
                spec.local_epochs
            ),
        ));
    }
    if !(spec.learning_rate.is_finite() && spec.learning_rate > 0.0 && spec.learning_rate < 10.0) {
        return Err(bad(
            LearningRate,
            format!(
                "learning_rate must be a positive number below 10, got {}",
                spec.learning_rate
            ),
        ));
    }
    if spec.batch_size == 0 || spec.batch_size > 1 << 20 {
        return Err(bad(
            BatchSize,
            format!(
                "batch_size must be between 1 and 2^20, got {}",
                spec.batch_size
            ),
        ));
    }
    if spec.min_participants < 2 {
        return Err(bad(
            MinParticipants,
            format!(
                "min_participants must be at least 2 (hospitals never decrypt a single hospital's \
                 update), got {}",
                spec.min_participants
            ),
        ));
    }
    if spec.round_deadline_seconds == 0 || spec.round_deadline_seconds > MAX_DEADLINE_SECONDS {
        return Err(bad(
            RoundDeadline,
            format!(
                "round_deadline_seconds must be between 1 and {MAX_DEADLINE_SECONDS}, got {}",
                spec.round_deadline_seconds
            ),
        ));
    }
    if spec.credit_budget == 0 {
        return Err(bad(
            CreditBudget,
            "credit_budget must be positive: it pays the hospitals",
        ));
    }
    let q = spec
        .quantization
        .as_ref()
        .ok_or_else(|| bad(Quantization, "the job has no quantization"))?;
    if q.quant_bits == 0 {
        Quantizer::new(q.frac_bits, q.clip)
            .map_err(|e| bad(Quantization, format!("quantization: {e}")))?;
    } else {
        if !QUANT_BITS.contains(&q.quant_bits) {
            return Err(bad(
                Quantization,
                format!(
                    "quant_bits must be between {} and {} (8, 12 or 16 in practice), got {}",
                    QUANT_BITS.start(),
                    QUANT_BITS.end(),
                    q.quant_bits
                ),
            ));
        }
        if q.frac_bits != 0 {
            return Err(bad(
                Quantization,
                format!(
                    "set quant_bits or frac_bits, not both: quant_bits {} spreads its levels over \
                     the clip, frac_bits {} would fix them at 2^-{}",
                    q.quant_bits, q.frac_bits, q.frac_bits
                ),
            ));
        }
        if !q.clip.is_finite() || q.clip <= 0.0 {
            return Err(bad(
                Quantization,
                format!(
                    "quantization clip must be a finite positive number, got {}",
                    q.clip
                ),
            ));
        }
    }
    if let Some(p) = &spec.privacy {
        crate::privacy::JobPrivacy::check(p).map_err(|e| bad(Privacy, e))?;
    }
    let bytes = spec.encode_to_vec();
    Ok(ValidJob {
        spec: spec.clone(),
        digest: sha256(&bytes),
        bytes,
        model,
        task,
        image,
    })
}

/// The task of a schema's `task` field.
pub fn task_of(task: Option<&dataset_schema::Task>) -> Result<TaskKind, String> {
    match task {
        Some(dataset_schema::Task::Binary(_)) => Ok(TaskKind::Binary),
        Some(dataset_schema::Task::Regression(_)) => Ok(TaskKind::Regression),
        Some(dataset_schema::Task::Multiclass(m)) if m.classes >= 2 => Ok(TaskKind::Multiclass {
            classes: m.classes as usize,
        }),
        Some(dataset_schema::Task::Multiclass(m)) => Err(format!(
            "a multiclass task needs at least 2 classes, got {}",
            m.classes
        )),
        None => Err("the schema has no task (binary, multiclass or regression)".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fedchain_proto::v1 as pb;

    /// A spec with usable hyperparameters around `schema`, `model` and `module`.
    fn spec_of(schema: pb::DatasetSchema, model: &ModelSpec, module: Vec<u8>) -> pb::JobSpec {
        pb::JobSpec {
            schema: Some(schema),
            model: Some(pb::ModelSpec {
                canonical_json: model.canonical_json(),
            }),
            rounds: 1,
            local_epochs: 1,
            learning_rate: 0.01,
            batch_size: 8,
            min_participants: 2,
            round_deadline_seconds: 60,
            credit_budget: 10,
            quantization: Some(pb::Quantization {
                frac_bits: 16,
                clip: 1.0,
                quant_bits: 0,
            }),
            seed: 1,
            torchscript_module: module,
            privacy: None,
            spread_decryption: true,
        }
    }

    /// quant_bits replaces frac_bits: either one, within range, with a usable clip.
    #[test]
    fn quant_bits_are_checked_and_exclusive_with_frac_bits() {
        let schema = pb::DatasetSchema {
            features: vec!["a".into(), "b".into()],
            target: "y".into(),
            task: Some(dataset_schema::Task::Binary(dataset_schema::Binary {})),
            image: None,
        };
        let model = ModelSpec::LogisticRegression {
            inputs: 2,
            outputs: 1,
        };
        let with = |frac_bits: u32, quant_bits: u32, clip: f32| {
            let mut spec = spec_of(schema.clone(), &model, Vec::new());
            spec.quantization = Some(pb::Quantization {
                frac_bits,
                clip,
                quant_bits,
            });
            validate(&spec)
        };
        for bits in [2, 8, 12, 16, 32] {
            assert!(with(0, bits, 0.05).is_ok(), "{bits}");
        }
        for (frac_bits, quant_bits, clip, says) in [
            (0, 1, 1.0, "between 2 and 32"),
            (0, 33, 1.0, "between 2 and 32"),
            (16, 8, 1.0, "not both"),
            (0, 8, 0.0, "finite positive"),
            (0, 8, f32::NAN, "finite positive"),
            (0, 8, f32::INFINITY, "finite positive"),
        ] {
            let e = with(frac_bits, quant_bits, clip).unwrap_err();
            assert_eq!(e.field, JobField::Quantization);
            assert!(e.reason.contains(says), "{e}");
        }
        // The fixed-point layout is checked as before.
        assert!(with(16, 0, 1.0).is_ok());
        assert!(with(41, 0, 1.0).is_err());
    }

    /// Models over the 1 MiB a task carries inline are fetched, so a job may have a million
    /// parameters; past the model file limit (about 16 million) it is refused, with both sizes.
    #[test]
    fn a_model_may_be_large_up_to_the_model_file_limit() {
        let schema = pb::DatasetSchema {
            features: vec!["a".into(), "b".into()],
            target: "y".into(),
            task: Some(dataset_schema::Task::Binary(dataset_schema::Binary {})),
            image: None,
        };
        let mlp = |width: usize| ModelSpec::Mlp {
            inputs: 2,
            hidden: vec![width, width],
            outputs: 1,
            dropout: 0.0,
        };
        // 1024 x 1024: 1.05 million parameters, a 4.2 MB file.
        assert!(validate(&spec_of(schema.clone(), &mlp(1024), Vec::new())).is_ok());
        let e = validate(&spec_of(schema, &mlp(4200), Vec::new())).unwrap_err();
        assert_eq!(e.field, JobField::Model);
        assert!(e.reason.contains("17661001 parameters"), "{e}");
        assert!(e.reason.contains("up to 67108864 bytes"), "{e}");
    }

    #[test]
    fn a_schema_without_features_is_refused_naming_them() {
        let spec = pb::JobSpec {
            schema: Some(pb::DatasetSchema {
                features: Vec::new(),
                target: "y".into(),
                task: Some(dataset_schema::Task::Binary(dataset_schema::Binary {})),
                image: None,
            }),
            ..Default::default()
        };
        let e = validate(&spec).unwrap_err();
        assert_eq!(e.field, JobField::Schema);
        assert!(e.reason.contains("feature columns"), "{e}");
    }

    /// An image job: its features are its channels, its model takes channels x height x width
    /// values, and anything else is refused naming the schema or the model.
    #[test]
    fn an_image_schema_names_its_channels_and_fits_its_model() {
        let shape = fedchain_datasets::ImageShape::new(3, 16, 12).unwrap();
        let cnn =
            ModelSpec::preset_images(fedchain_model_core::ModelKind::Cnn, shape, TaskKind::Binary)
                .unwrap();
        let job = |features: Vec<String>, image: Option<(u32, u32, u32)>, model: &ModelSpec| {
            let schema = pb::DatasetSchema {
                features,
                target: "y".into(),
                task: Some(dataset_schema::Task::Binary(dataset_schema::Binary {})),
                image: image.map(|(channels, height, width)| pb::ImageShape {
                    channels,
                    height,
                    width,
                }),
            };
            spec_of(schema, model, Vec::new())
        };
        let rgb = shape.channel_names();
        let valid = validate(&job(rgb.clone(), Some((3, 16, 12)), &cnn)).unwrap();
        assert_eq!(valid.image, Some(shape));
        assert_eq!(valid.inputs(), 3 * 16 * 12);
        assert_eq!(valid.data_schema().image, Some(shape));
        // Round 0 pools two moments per channel.
        assert_eq!(
            crate::statistics_len(
                valid.spec.schema.as_ref().unwrap().features.len(),
                valid.task
            ),
            6
        );
        for (spec, field, why) in [
            (
                job(vec!["gray".into()], Some((3, 16, 12)), &cnn),
                JobField::Schema,
                "exactly [red, green, blue]",
            ),
            (
                job(vec!["gray".into()], Some((2, 16, 12)), &cnn),
                JobField::Schema,
                "1 channel (grayscale) or 3",
            ),
            (
                job(rgb.clone(), Some((3, 0, 12)), &cnn),
                JobField::Schema,
                "height must be between 1",
            ),
            (
                job(rgb.clone(), Some((3, 12, 16)), &cnn),
                JobField::Model,
                "does not fit the schema",
            ),
            (
                job(rgb.clone(), None, &cnn),
                JobField::Model,
                "does not fit the schema",
            ),
        ] {
            let e = validate(&spec).unwrap_err();
            assert_eq!(e.field, field, "{e}");
            assert!(e.reason.contains(why), "{e} lacks {why:?}");
        }
    }

    #[test]
    fn a_torchscript_model_comes_with_the_module_it_names_and_only_allowed_operators() {
        let archive = |code: &str| {
            use std::io::Write;
            let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
            let stored = zip::write::FileOptions::default()
                .compression_method(zip::CompressionMethod::Stored);
            zip.start_file("m/code/__torch__.py", stored).unwrap();
            zip.write_all(code.as_bytes()).unwrap();
            zip.finish().unwrap().into_inner()
        };
        let fine = archive(
            "class M(Module):\n  w : Tensor\n  def forward(self: __torch__.M, x: Tensor):\n    \
             w = self.w\n    return torch.linear(x, w, None)\n",
        );
        let evil = archive("def forward(self, x):\n    return torch.from_file(\"f\", None, 2)\n");
        let digest = |bytes: &[u8]| TorchScriptCode::read(bytes).unwrap().digest();
        let job = |module: &str, bytes: Vec<u8>| {
            let model = ModelSpec::Torchscript {
                module: module.to_string(),
                inputs: 2,
                outputs: 1,
                parameters: vec![fedchain_model_core::TensorDecl {
                    name: "w".into(),
                    shape: vec![1, 2],
                }],
                image: None,
            };
            let schema = pb::DatasetSchema {
                features: vec!["a".into(), "b".into()],
                target: "y".into(),
                task: Some(dataset_schema::Task::Binary(dataset_schema::Binary {})),
                image: None,
            };
            spec_of(schema, &model, bytes)
        };
        validate(&job(&digest(&fine), fine.clone())).unwrap();
        for (spec, why) in [
            (job(&digest(&fine), Vec::new()), "needs its module"),
            (
                job(&"ab".repeat(32), fine.clone()),
                "but the model spec names",
            ),
            (job(&digest(&evil), evil.clone()), "torch.from_file"),
            (
                job(&digest(&fine), b"not a zip".to_vec()),
                "not a TorchScript file",
            ),
        ] {
            let e = validate(&spec).unwrap_err();
            assert_eq!(e.field, JobField::Model);
            assert!(e.reason.contains(why), "{why}: {e}");
        }
    }
}
