//! Model files: safetensors with the spec and digest in the header metadata.
//!
//! A file holds one tensor per [`ParamInfo`](crate::ParamInfo) (F32, little-endian, the layout's
//! names and shapes) plus metadata `fedchain.format = "1"`, `fedchain.model_spec` (canonical JSON)
//! and `fedchain.params_sha256` (the [`ModelDigest`] of the flat vector). A file is therefore
//! self-describing: loading rebuilds the spec, checks every tensor against the layout, and refuses
//! a file whose parameters do not hash to the recorded digest. Any safetensors reader (for example
//! Python's `safetensors.torch.load_file`) can read the tensors.

use crate::error::{ModelError, Result};
use crate::params::{check_params, layout, ModelDigest};
use crate::spec::ModelSpec;
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use std::collections::HashMap;
use std::path::Path;

const FORMAT: &str = "1";
const KEY_FORMAT: &str = "fedchain.format";
const KEY_SPEC: &str = "fedchain.model_spec";
const KEY_DIGEST: &str = "fedchain.params_sha256";

/// A model as data: its spec and its flat parameter vector (validated against each other).
#[derive(Debug, Clone, PartialEq)]
pub struct ModelFile {
    spec: ModelSpec,
    params: Vec<f32>,
}

impl ModelFile {
    /// Pairs a spec with parameters, checking length and finiteness.
    pub fn new(spec: ModelSpec, params: Vec<f32>) -> Result<ModelFile> {
        spec.validate()?;
        check_params(&spec, &params)?;
        Ok(ModelFile { spec, params })
    }

    /// The spec.
    pub fn spec(&self) -> &ModelSpec {
        &self.spec
    }

    /// The flat parameters (layout order).
    pub fn params(&self) -> &[f32] {
        &self.params
    }

    /// Consumes the file into its parts.
    pub fn into_parts(self) -> (ModelSpec, Vec<f32>) {
        (self.spec, self.params)
    }

    /// The digest of the parameters.
    pub fn digest(&self) -> ModelDigest {
        ModelDigest::of(&self.params)
    }

    /// Encodes as safetensors bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let layout = layout(&self.spec);
        let bytes: Vec<Vec<u8>> = layout
            .iter()
            .map(|p| {
                self.params[p.offset..p.offset + p.len()]
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect()
            })
            .collect();
        let views = layout
            .iter()
            .zip(&bytes)
            .map(|(p, b)| {
                TensorView::new(Dtype::F32, p.shape.clone(), b)
                    .map(|view| (p.name.clone(), view))
                    .map_err(|e| ModelError::Format(format!("tensor {}: {e:?}", p.name)))
            })
            .collect::<Result<Vec<_>>>()?;
        let metadata = HashMap::from([
            (KEY_FORMAT.to_string(), FORMAT.to_string()),
            (KEY_SPEC.to_string(), self.spec.canonical_json()),
            (KEY_DIGEST.to_string(), self.digest().to_hex()),
        ]);
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
        let file = ModelFile::new(spec, params).map_err(|e| bad(e.to_string()))?;
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
        let view = TensorView::new(Dtype::F32, vec![2], &data).unwrap();
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
