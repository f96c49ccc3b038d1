//! Model files: safetensors with the spec and digest in the header metadata.
//!
//! A file holds one tensor per [`ParamInfo`](crate::ParamInfo) (F32, little-endian, the layout's
//! names and shapes) plus metadata `fedchain.format = "1"`, `fedchain.model_spec` (canonical JSON)
//! and `fedchain.params_sha256` (the [`ModelDigest`] of the flat vector). A file is therefore
//! self-describing: loading rebuilds the spec, checks every tensor against the layout, and refuses
//! a file whose parameters do not hash to the recorded digest. Any safetensors reader (for example
//! Python's `safetensors.torch.load_file`) can read the tensors.
//!
//! A released model also carries `fedchain.preprocessing` ([`Preprocessing`]): the features in the
//! order the model takes them, the target and task, and the scaling the hospitals trained with (the
//! consortium's pooled means and standard deviations, with the pooled moments they derive from), so
//! that it applies to raw rows. It is not part of the parameter digest: the same parameters may
//! travel with or without it. What vouches for it is the ledger: the job's spec names the features,
//! target and task, and round 0's `RoundFinalized` record names the digest of the moments
//! (`fedchain_audit::release` checks both).

use crate::error::{ModelError, Result};
use crate::params::{check_params, layout, ModelDigest};
use crate::spec::ModelSpec;
use fedchain_datasets::{Standardizer, TaskKind};
use safetensors::tensor::{Dtype, SafeTensors, View};
use std::borrow::Cow;
use std::collections::HashMap;
use std::path::Path;

const FORMAT: &str = "1";
const KEY_FORMAT: &str = "fedchain.format";
const KEY_SPEC: &str = "fedchain.model_spec";
const KEY_DIGEST: &str = "fedchain.params_sha256";
const KEY_PREPROCESSING: &str = "fedchain.preprocessing";

/// How rows were prepared before the model saw them, so that a released model applies to raw
/// rows: the features (in the model's input order) and their scaling, the target and the task.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Preprocessing {
    /// The target column, when rows carry it (to score predictions against).
    pub target: String,
    /// The task the model was trained for.
    pub task: TaskKind,
    /// The features and their scaling (for regression, the target's too).
    pub scaling: Standardizer,
    /// The pooled moments the scaling derives from ([`Standardizer::from_moments`]): in a
    /// federated release, round 0's result, whose digest the ledger records, so a researcher can
    /// check the scaling against what the hospitals cosigned. Absent for a model trained locally.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub statistics: Option<Vec<f32>>,
}

/// A model as data: its spec and its flat parameter vector (validated against each other).
#[derive(Debug, Clone, PartialEq)]
pub struct ModelFile {
    spec: ModelSpec,
    params: Vec<f32>,
    preprocessing: Option<Preprocessing>,
}

impl ModelFile {
    /// Pairs a spec with parameters, checking length and finiteness.
    pub fn new(spec: ModelSpec, params: Vec<f32>) -> Result<ModelFile> {
        spec.validate()?;
        check_params(&spec, &params)?;
        Ok(ModelFile {
            spec,
            params,
            preprocessing: None,
        })
    }

    /// The same model, carrying `p`: its features must be as many as the model takes, and its
    /// task one the model fits.
    pub fn with_preprocessing(mut self, p: Preprocessing) -> Result<ModelFile> {
        let inputs = match p.scaling.image {
            Some(shape) => shape.len(),
            None => p.scaling.feature_names.len(),
        };
        // Images must reach the model in its own shape, not merely as many values.
        let takes = match &self.spec {
            ModelSpec::Cnn {
                in_channels,
                height,
                width,
                ..
            } => p.scaling.image.map(|_| [*in_channels, *height, *width]),
            ModelSpec::Torchscript { image, .. } => *image,
            _ => None,
        };
        if let Some(shape) = p.scaling.image {
            let declared = [shape.channels, shape.height, shape.width];
            if takes.is_some_and(|t| t != declared) {
                return Err(ModelError::InvalidArgument(format!(
                    "preprocessing: images of {declared:?}, but the model takes {:?}",
                    takes.unwrap_or_default()
                )));
            }
        }
        self.spec
            .check_fits(inputs, p.task)
            .map_err(|e| ModelError::InvalidArgument(format!("preprocessing: {e}")))?;
        if p.scaling.target.is_some() != (p.task == TaskKind::Regression) {
            return Err(ModelError::InvalidArgument(
                "preprocessing: a target scaling goes with a regression task, and only with one"
                    .into(),
            ));
        }
        if let Some(stats) = &p.statistics {
            let regression = p.task == TaskKind::Regression;
            let derived = Standardizer::from_moments(&p.scaling.feature_names, regression, stats)
                .map_err(|e| ModelError::InvalidArgument(format!("preprocessing: {e}")))?
                .with_image(p.scaling.image);
            if derived != p.scaling {
                return Err(ModelError::InvalidArgument(
                    "preprocessing: the scaling is not the one its statistics define".into(),
                ));
            }
        }
        self.preprocessing = Some(p);
        Ok(self)
    }

    /// How rows were prepared for this model, when the file says.
    pub fn preprocessing(&self) -> Option<&Preprocessing> {
        self.preprocessing.as_ref()
    }

    /// The spec.
    pub fn spec(&self) -> &ModelSpec {
        &self.spec
    }

    /// The flat parameters (layout order).
    pub fn params(&self) -> &[f32] {
        &self.params
    }

    /// Consumes the file into its parts (the preprocessing, if any, is dropped).
    pub fn into_parts(self) -> (ModelSpec, Vec<f32>) {
        (self.spec, self.params)
    }

    /// The digest of the parameters.
    pub fn digest(&self) -> ModelDigest {
        ModelDigest::of(&self.params)
    }

    /// Encodes as safetensors bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let views = layout(&self.spec).into_iter().map(|p| {
            let values = &self.params[p.offset..p.offset + p.len()];
            (
                p.name,
                F32Tensor {
                    shape: p.shape,
                    values,
                },
            )
        });
        let mut metadata = HashMap::from([
            (KEY_FORMAT.to_string(), FORMAT.to_string()),
            (KEY_SPEC.to_string(), self.spec.canonical_json()),
            (KEY_DIGEST.to_string(), self.digest().to_hex()),
        ]);
        if let Some(p) = &self.preprocessing {
            // Strings, finite floats and tags: serialization cannot fail.
            let json = serde_json::to_string(p).expect("preprocessing always serializes");
            metadata.insert(KEY_PREPROCESSING.to_string(), json);
        }
        safetensors::serialize(views, &Some(metadata))
            .map_err(|e| ModelError::Format(format!("safetensors encoding: {e:?}")))
    }

    /// Decodes safetensors bytes written by [`ModelFile::to_bytes`]; `origin` names the source in
    /// errors.
    pub fn from_bytes(bytes: &[u8], origin: &Path) -> Result<ModelFile> {
        let bad = |reason: String| ModelError::BadFile {
            path: origin.to_path_buf(),
            reason,
        };
        let (_, header) = SafeTensors::read_metadata(bytes)
            .map_err(|e| bad(format!("not a safetensors file: {e:?}")))?;
        let meta = header.metadata().clone().unwrap_or_default();
        let field = |key: &str| {
            meta.get(key).ok_or_else(|| {
                bad(format!(
                    "no '{key}' in the header metadata; not a fedchain model file"
                ))
            })
        };
        let format = field(KEY_FORMAT)?;
        if format != FORMAT {
            return Err(bad(format!(
                "model file format {format} is not supported (this build reads format {FORMAT})"
            )));
        }
        let spec = ModelSpec::from_json(field(KEY_SPEC)?).map_err(|e| bad(e.to_string()))?;
        let recorded = ModelDigest::from_hex(field(KEY_DIGEST)?).map_err(|e| bad(e.to_string()))?;

        let tensors = SafeTensors::deserialize(bytes)
            .map_err(|e| bad(format!("not a safetensors file: {e:?}")))?;
        let layout = layout(&spec);
        if tensors.len() != layout.len() {
            return Err(bad(format!(
                "{} tensors, but a {} has {}",
                tensors.len(),
                spec.kind(),
                layout.len()
            )));
        }
        let mut params = Vec::with_capacity(layout.iter().map(|p| p.len()).sum());
        for p in &layout {
            let t = tensors
                .tensor(&p.name)
                .map_err(|_| bad(format!("tensor '{}' is missing", p.name)))?;
            if t.dtype() != Dtype::F32 || t.shape() != p.shape.as_slice() {
                return Err(bad(format!(
                    "tensor '{}' is {:?} {:?}, expected F32 {:?}",
                    p.name,
                    t.dtype(),
                    t.shape(),
                    p.shape
                )));
            }
            params.extend(
                t.data()
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
            );
        }
        let mut file = ModelFile::new(spec, params).map_err(|e| bad(e.to_string()))?;
        if let Some(json) = meta.get(KEY_PREPROCESSING) {
            let p: Preprocessing = serde_json::from_str(json)
                .map_err(|e| bad(format!("'{KEY_PREPROCESSING}' is unreadable: {e}")))?;
            let scaling =
                Standardizer::from_json(&serde_json::to_string(&p.scaling).unwrap_or_default())
                    .map_err(|e| bad(format!("'{KEY_PREPROCESSING}': {e}")))?;
            file = file
                .with_preprocessing(Preprocessing { scaling, ..p })
                .map_err(|e| bad(e.to_string()))?;
        }
        let actual = file.digest();
        if actual != recorded {
            return Err(bad(format!(
                "parameters hash to {actual}, but the file records {recorded}: the file is corrupted or was altered"
            )));
        }
        Ok(file)
    }

    /// Writes the file atomically (a temporary file in the same folder, then a rename), so a crash
    /// never leaves a half-written model under the final name.
    pub fn save(&self, path: &Path) -> Result<()> {
        let io = |source| ModelError::Io {
            path: path.to_path_buf(),
            source,
        };
        let bytes = self.to_bytes()?;
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let file_name = path.file_name().ok_or_else(|| {
            ModelError::InvalidArgument(format!("{}: not a file path", path.display()))
        })?;
        let tmp = dir.join(format!(".{}.tmp", file_name.to_string_lossy()));
        {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp).map_err(io)?;
            f.write_all(&bytes).map_err(io)?;
            f.sync_all().map_err(io)?;
        }
        std::fs::rename(&tmp, path).map_err(io)
    }

    /// Reads and verifies a file.
    pub fn load(path: &Path) -> Result<ModelFile> {
        let bytes = std::fs::read(path).map_err(|source| ModelError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        ModelFile::from_bytes(&bytes, path)
    }
}

/// One tensor as the encoder reads it: on a little-endian host (the file's byte order) its bytes
/// are the parameters' own, so a model of millions of parameters is not copied before encoding.
struct F32Tensor<'a> {
    shape: Vec<usize>,
    values: &'a [f32],
}

impl View for F32Tensor<'_> {
    fn dtype(&self) -> Dtype {
        Dtype::F32
    }

    fn shape(&self) -> &[usize] {
        &self.shape
    }

    fn data(&self) -> Cow<'_, [u8]> {
        if cfg!(target_endian = "little") {
            Cow::Borrowed(bytemuck::cast_slice(self.values))
        } else {
            Cow::Owned(self.values.iter().flat_map(|v| v.to_le_bytes()).collect())
        }
    }

    fn data_len(&self) -> usize {
        std::mem::size_of_val(self.values)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::init_params;

    fn sample() -> ModelFile {
        let spec = ModelSpec::Cnn {
            height: 8,
            width: 8,
            channels: [4, 8],
            hidden: 16,
            outputs: 10,
            dropout: 0.0,
            in_channels: 1,
            pool: None,
        };
        let params = init_params(&spec, 3);
        ModelFile::new(spec, params).unwrap()
    }

    #[test]
    fn roundtrip_through_disk_is_exact() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.safetensors");
        let file = sample();
        file.save(&path).unwrap();
        let back = ModelFile::load(&path).unwrap();
        assert_eq!(back, file);
        assert_eq!(back.digest(), file.digest());
    }

    #[test]
    fn preprocessing_travels_with_the_file_outside_the_digest() {
        use fedchain_datasets::{Standardizer, TaskKind};
        let spec = ModelSpec::LogisticRegression {
            inputs: 2,
            outputs: 1,
        };
        let model = || ModelFile::new(spec.clone(), init_params(&spec, 3)).unwrap();
        let names = vec!["age".to_string(), "bmi".to_string()];
        let moments = [50.0, 25.0, 2600.0, 634.0];
        let scaling = Standardizer::from_moments(&names, false, &moments).unwrap();
        let p = Preprocessing {
            target: "sick".into(),
            task: TaskKind::Binary,
            scaling,
            statistics: Some(moments.to_vec()),
        };
        let file = model().with_preprocessing(p.clone()).unwrap();
        // The digest names the parameters, which the hospitals cosigned; the preprocessing is
        // the release's instructions for use.
        assert_eq!(file.digest(), model().digest());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.safetensors");
        file.save(&path).unwrap();
        let back = ModelFile::load(&path).unwrap();
        assert_eq!(back.preprocessing(), Some(&p));
        assert_eq!(back, file);

        // Refused: a target scaling on a classification task; features the model does not take.
        let with_target = [50.0, 25.0, 2600.0, 634.0, 0.5, 0.5];
        let regression = Standardizer::from_moments(&names, true, &with_target).unwrap();
        let wrong = Preprocessing {
            scaling: regression,
            statistics: None,
            ..p.clone()
        };
        assert!(model().with_preprocessing(wrong).is_err());
        let three = vec!["age".to_string(), "bmi".to_string(), "bp".to_string()];
        let moments = [50.0, 25.0, 80.0, 2600.0, 634.0, 6500.0];
        let wider = Preprocessing {
            scaling: Standardizer::from_moments(&three, false, &moments).unwrap(),
            statistics: None,
            ..p.clone()
        };
        assert!(model().with_preprocessing(wider).is_err());
        let mut other_statistics = p.clone();
        other_statistics.statistics = Some(vec![51.0, 25.0, 2600.0, 634.0]);
        let err = model().with_preprocessing(other_statistics).unwrap_err();
        assert!(
            err.to_string()
                .contains("not the one its statistics define"),
            "{err}"
        );
    }

    #[test]
    fn altered_parameters_are_refused() {
        let file = sample();
        let mut bytes = file.to_bytes().unwrap();
        // Flip one bit in the last parameter (the data section ends the file).
        let n = bytes.len();
        bytes[n - 2] ^= 0x01;
        let err = ModelFile::from_bytes(&bytes, Path::new("m.safetensors")).unwrap_err();
        assert!(
            err.to_string().contains("corrupted or was altered"),
            "{err}"
        );
    }

    #[test]
    fn garbage_and_foreign_files_are_refused() {
        let p = Path::new("x.safetensors");
        assert!(ModelFile::from_bytes(b"", p).is_err());
        assert!(ModelFile::from_bytes(b"not a model at all", p).is_err());
        // A valid safetensors file without fedchain metadata.
        let data = vec![0u8; 8];
        let view = safetensors::tensor::TensorView::new(Dtype::F32, vec![2], &data).unwrap();
        let bytes = safetensors::serialize(vec![("w", view)], &None).unwrap();
        let err = ModelFile::from_bytes(&bytes, p).unwrap_err();
        assert!(
            err.to_string().contains("not a fedchain model file"),
            "{err}"
        );
    }

    #[test]
    fn mismatched_parameters_are_refused() {
        let spec = ModelSpec::LogisticRegression {
            inputs: 3,
            outputs: 1,
        };
        assert!(ModelFile::new(spec.clone(), vec![0.0; 3]).is_err());
        assert!(ModelFile::new(spec, vec![0.0, 0.0, f32::INFINITY, 0.0]).is_err());
    }
}
