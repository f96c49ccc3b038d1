//! A researcher's TorchScript module, as a hospital inspects it before anything of it runs.
//!
//! [`inspect`] reads the module's code and the operators it names first (no libtorch involved,
//! see [`fedchain_model_core::torchscript`]); only a module whose operators are all allowed is then
//! loaded with libtorch, which compiles the code (and may run its `__setstate__` methods), to list
//! its parameters in byte-wise name order, the order of a job's flat parameter vector.

use std::path::{Path, PathBuf};

pub use fedchain_model_core::torchscript::{
    operators_in, TorchScriptCode, ALLOWED_BUILTINS, ALLOWED_OPERATORS,
};
use serde::Serialize;
use tch::CModule;

use crate::model::torch_error;
use crate::{ModelError, Result};

/// The largest TorchScript file read (bytes): 1 GiB, about 250 million float parameters.
pub const MAX_MODULE_BYTES: u64 = 1 << 30;

/// One parameter tensor of a module.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ModuleParam {
    /// Its dotted name (`block.conv.weight`).
    pub name: String,
    /// Its shape.
    pub shape: Vec<usize>,
}

/// What a TorchScript file holds and whether a hospital's worker would run it.
#[derive(Debug, Clone, Serialize)]
pub struct Inspection {
    /// The file.
    pub path: PathBuf,
    /// SHA-256 of its bytes, hex.
    pub sha256: String,
    /// The digest of its code ([`TorchScriptCode::digest`]): the module's identity, the same
    /// before and after training.
    pub code_sha256: String,
    /// Its sources, by path in the archive.
    pub sources: Vec<(String, String)>,
    /// Every operator its code names, sorted.
    pub operators: Vec<String>,
    /// Those outside the allowlist, sorted: a worker refuses the module when any is named.
    pub forbidden: Vec<String>,
    /// Its parameters in byte-wise name order; `None` when the module was not loaded because it
    /// names a forbidden operator.
    pub parameters: Option<Vec<ModuleParam>>,
}

impl Inspection {
    /// Total parameter values, when the module was loaded.
    pub fn num_parameters(&self) -> Option<usize> {
        self.parameters
            .as_ref()
            .map(|ps| ps.iter().map(|p| p.shape.iter().product::<usize>()).sum())
    }
}

/// Reads the TorchScript file at `path`: its code and operators, and, when every operator is
/// allowed, its parameters (loaded on the CPU).
pub fn inspect(path: &Path) -> Result<Inspection> {
    let io = |source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    };
    let len = std::fs::metadata(path).map_err(io)?.len();
    if len > MAX_MODULE_BYTES {
        return Err(ModelError::BadFile {
            path: path.to_path_buf(),
            reason: format!(
                "{len} bytes: larger than the {} MiB a TorchScript module may have",
                MAX_MODULE_BYTES >> 20
            ),
        });
    }
    let bytes = std::fs::read(path).map_err(io)?;
    let code = TorchScriptCode::read(&bytes).map_err(|e| ModelError::BadFile {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let forbidden = code.forbidden();
    let parameters = if forbidden.is_empty() {
        Some(parameters_of(path)?)
    } else {
        None
    };
    use sha2::Digest as _;
    Ok(Inspection {
        path: path.to_path_buf(),
        sha256: hex::encode(sha2::Sha256::digest(&bytes)),
        code_sha256: code.digest(),
        operators: code.operators.iter().cloned().collect(),
        sources: code.sources,
        forbidden,
        parameters,
    })
}

/// The parameters of the module at `path`, loaded with libtorch on the CPU, in byte-wise name order.
fn parameters_of(path: &Path) -> Result<Vec<ModuleParam>> {
    let module = CModule::load(path).map_err(|e| ModelError::BadFile {
        path: path.to_path_buf(),
        reason: format!("libtorch cannot load it as a TorchScript module: {e}"),
    })?;
    let mut out = Vec::new();
    for (name, tensor) in module.named_parameters().map_err(torch_error)? {
        let shape = tensor
            .size()
            .into_iter()
            .map(|d| usize::try_from(d).map_err(|_| ModelError::Torch(format!("{name}: shape"))))
            .collect::<Result<Vec<usize>>>()?;
        out.push(ModuleParam { name, shape });
    }
    out.sort_by(|a, b| a.name.as_bytes().cmp(b.name.as_bytes()));
    Ok(out)
}
