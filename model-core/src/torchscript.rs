//! What a TorchScript file would run, read without running it (and without libtorch).
//!
//! A TorchScript file (`torch.jit.script(m).save(...)`, or a trace) is a zip archive whose
//! `code/` folder holds the module's TorchScript source, which libtorch compiles when it loads the
//! file. TorchScript runs no Python, but some of its operators reach outside the tensor maths: to
//! files (`torch.from_file`, `torch.save`), the process or custom operator libraries
//! (`ops.NAMESPACE.NAME`). A hospital must see and decide what runs on its machine, so
//! [`TorchScriptCode`] lists every operator the code names, and [`TorchScriptCode::check`] refuses
//! any outside [`ALLOWED_OPERATORS`]: tensor maths, neural-network layers and the builtins
//! TorchScript serialises Python's list, string and number operations into.
//!
//! In the serialised code every operator call is written `torch.NAME(...)` (tensor methods too:
//! `x.view(...)` is saved as `torch.view(x, ...)`) or `ops.NAMESPACE.NAME(...)`; the module's own
//! classes and functions are `__torch__.…` and their code is in the same folder, so it is read too.
//! A name that merely appears (say, in a string) counts as used: the check errs on refusing.

use std::collections::BTreeSet;
use std::io::{Cursor, Read};

use crate::error::{ModelError, Result};

/// The most code this reads from one file (bytes, all sources together): TorchScript sources are
/// kilobytes; a larger `code/` folder is refused rather than read.
pub const MAX_CODE_BYTES: u64 = 16 << 20;

/// Operators, as the serialised code names them, that a hospital's worker runs. Everything else
/// (files, processes, custom operator libraries, anything new) is refused by name.
pub const ALLOWED_OPERATORS: &[&str] = &[
    // Tensor maths.
    "torch.abs",
    "torch.abs_",
    "torch.add",
    "torch.add_",
    "torch.addmm",
    "torch.all",
    "torch.any",
    "torch.arange",
    "torch.argmax",
    "torch.argmin",
    "torch.bmm",
    "torch.cat",
    "torch.ceil",
    "torch.chunk",
    "torch.clamp",
    "torch.clamp_",
    "torch.clamp_min",
    "torch.clone",
    "torch.contiguous",
    "torch.cos",
    "torch.cumsum",
    "torch.detach",
    "torch.div",
    "torch.div_",
    "torch.dropout",
    "torch.dropout_",
    "torch.einsum",
    "torch.empty",
    "torch.eq",
    "torch.exp",
    "torch.expand",
    "torch.expand_as",
    "torch.feature_dropout",
    "torch.flatten",
    "torch.floor",
    "torch.full",
    "torch.full_like",
    "torch.gather",
    "torch.ge",
    "torch.gt",
    "torch.index_select",
    "torch.le",
    "torch.log",
    "torch.log1p",
    "torch.lt",
    "torch.masked_fill",
    "torch.matmul",
    "torch.max",
    "torch.maximum",
    "torch.mean",
    "torch.min",
    "torch.minimum",
    "torch.mm",
    "torch.mul",
    "torch.mul_",
    "torch.ne",
    "torch.neg",
    "torch.norm",
    "torch.numel",
    "torch.ones",
    "torch.ones_like",
    "torch.permute",
    "torch.pow",
    "torch.prod",
    "torch.reciprocal",
    "torch.repeat",
    "torch.reshape",
    "torch.rsqrt",
    "torch.rsub",
    "torch.select",
    "torch.sign",
    "torch.sin",
    "torch.slice",
    "torch.split",
    "torch.sqrt",
    "torch.square",
    "torch.squeeze",
    "torch.stack",
    "torch.std",
    "torch.sub",
    "torch.sub_",
    "torch.sum",
    "torch.t",
    "torch.tanh",
    "torch.tensor",
    "torch.transpose",
    "torch.unbind",
    "torch.unsqueeze",
    "torch.var",
    "torch.view",
    "torch.view_as",
    "torch.where",
    "torch.zeros",
    "torch.zeros_like",
    "torch.to",
    "torch.type_as",
    "torch.size",
    "torch.dim",
    "torch.is_floating_point",
    "torch.scalar_type",
    "torch.device",
    "torch.dtype",
    "torch.Float",
    "torch.Int",
    // Neural-network layers and activations (what torch.nn's modules and functional compile to).
    "torch.adaptive_avg_pool1d",
    "torch.adaptive_avg_pool2d",
    "torch.adaptive_max_pool2d",
    "torch.avg_pool1d",
    "torch.avg_pool2d",
    "torch.batch_norm",
    "torch.binary_cross_entropy",
    "torch.binary_cross_entropy_with_logits",
    "torch.conv1d",
    "torch.conv2d",
    "torch.conv3d",
    "torch.conv_transpose2d",
    "torch.cross_entropy_loss",
    "torch.elu",
    "torch.embedding",
    "torch.gelu",
    "torch.group_norm",
    "torch.hardtanh",
    "torch.instance_norm",
    "torch.layer_norm",
    "torch.leaky_relu",
    "torch.linear",
    "torch.log_softmax",
    "torch.logsigmoid",
    "torch.max_pool1d",
    "torch.max_pool2d",
    "torch.max_pool1d_with_indices",
    "torch.max_pool2d_with_indices",
    "torch.mse_loss",
    "torch.nll_loss",
    "torch.nll_loss_nd",
    "torch.pad",
    "torch.constant_pad_nd",
    "torch.prelu",
    "torch.relu",
    "torch.relu_",
    "torch.selu",
    "torch.sigmoid",
    "torch.silu",
    "torch.softmax",
    "torch.softplus",
    "torch.upsample_nearest2d",
    "torch.threshold",
    "torch._pad_circular",
    // Python builtins as TorchScript serialises them (lists, strings, numbers, checks).
    "torch.__is__",
    "torch.__isnot__",
    "torch.__not__",
    "torch.__contains__",
    "torch.__getitem__",
    "torch.__range_length",
    "torch.__derive_index",
    "torch.append",
    "torch.len",
    "torch.list",
    "torch.format",
    "torch.warn",
    "torch.isinstance",
    "torch.floordiv",
    "torch.remainder",
    "torch.str",
    "torch.int",
    "torch.float",
    "torch.bool",
    "torch.item",
    "torch.IntImplicit",
    "torch.FloatImplicit",
    "torch.ScalarImplicit",
    "torch.Size",
    "torch.extend",
    "torch.insert",
    "torch.copy",
    "torch.keys",
    "torch.values",
    "torch.items",
    "torch.sorted",
    "torch.reverse",
    "torch.mod",
    "torch.round",
    "torch.trunc",
    "torch.__and__",
    "torch.__or__",
    "torch.__xor__",
    "torch._set_item",
    "torch.set_grad_enabled",
    "torch.is_grad_enabled",
    // Primitive operations of the interpreter itself.
    "ops.prim.RaiseException",
    "ops.prim.unchecked_cast",
    "ops.prim.Uninitialized",
    "ops.prim.NumToTensor",
    "ops.prim.device",
    "ops.prim.dtype",
    "ops.prim.min",
    "ops.prim.max",
    "ops.prim.shape",
    "ops.prim.data",
    "ops.prim.is_cuda",
    "ops.prim.abs",
    "ops.prim.layout",
];

/// The TorchScript sources of a file, by path in the archive (sorted), and the operators they name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TorchScriptCode {
    /// `(path in the archive, source)`, sorted by path.
    pub sources: Vec<(String, String)>,
    /// Every operator the sources name (`torch.NAME`, `ops.NAMESPACE.NAME`), sorted.
    pub operators: BTreeSet<String>,
}

impl TorchScriptCode {
    /// Reads the sources in a TorchScript file's bytes. A file that is not a TorchScript archive,
    /// or whose code exceeds [`MAX_CODE_BYTES`], is refused.
    pub fn read(bytes: &[u8]) -> Result<TorchScriptCode> {
        let bad = |why: String| ModelError::Format(format!("not a TorchScript file: {why}"));
        let mut zip = zip::ZipArchive::new(Cursor::new(bytes)).map_err(|e| bad(e.to_string()))?;
        let mut sources = Vec::new();
        let mut total = 0u64;
        for i in 0..zip.len() {
            let mut entry = zip.by_index(i).map_err(|e| bad(e.to_string()))?;
            let name = entry.name().to_owned();
            // `ARCHIVE/code/...py` (the sources; `.debug_pkl` files only map them to lines).
            let in_code = name.split('/').nth(1) == Some("code");
            if !in_code || !name.ends_with(".py") {
                continue;
            }
            total = total.saturating_add(entry.size());
            if total > MAX_CODE_BYTES {
                return Err(bad(format!(
                    "its code is larger than {} MiB",
                    MAX_CODE_BYTES >> 20
                )));
            }
            let mut text = String::new();
            (&mut entry)
                .take(MAX_CODE_BYTES)
                .read_to_string(&mut text)
                .map_err(|e| bad(format!("{name}: {e}")))?;
            sources.push((name, text));
        }
        if sources.is_empty() {
            return Err(bad("the archive holds no code/ folder".into()));
        }
        sources.sort();
        let operators = sources.iter().flat_map(|(_, s)| operators_in(s)).collect();
        Ok(TorchScriptCode { sources, operators })
    }

    /// SHA-256 of the code, hex: each source's path below the archive's top folder (which
    /// `torch.jit.save` names after the file) and its text, length-prefixed, in path order. A
    /// module saved again after training has the same code digest, and a module's identity on a
    /// job is this digest: what code runs, whatever parameters it holds.
    pub fn digest(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(b"fedchain-torchscript-code-v1");
        for (path, source) in &self.sources {
            let inner = path.split_once('/').map_or(path.as_str(), |(_, rest)| rest);
            for part in [inner.as_bytes(), source.as_bytes()] {
                h.update((part.len() as u64).to_le_bytes());
                h.update(part);
            }
        }
        hex::encode(h.finalize())
    }

    /// The operators outside [`ALLOWED_OPERATORS`], sorted; empty when the code may run.
    pub fn forbidden(&self) -> Vec<String> {
        self.operators
            .iter()
            .filter(|op| !ALLOWED_OPERATORS.contains(&op.as_str()))
            .cloned()
            .collect()
    }

    /// Refuses code that names an operator outside [`ALLOWED_OPERATORS`], naming them.
    pub fn check(&self) -> Result<()> {
        let forbidden = self.forbidden();
        if forbidden.is_empty() {
            return Ok(());
        }
        Err(ModelError::InvalidArgument(format!(
            "the TorchScript module calls {} outside the allowed tensor and neural-network \
             operators: {}",
            if forbidden.len() == 1 {
                "an operator"
            } else {
                "operators"
            },
            forbidden.join(", ")
        )))
    }
}

/// The operators that TorchScript source `code` names: `torch.NAME` and `ops.NAMESPACE.NAME`
/// where the prefix starts a name (so `__torch__.torch.nn...`, the module's own code, is not one).
pub fn operators_in(code: &str) -> BTreeSet<String> {
    let bytes = code.as_bytes();
    let ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    // The identifier starting at `i`, and where it ends.
    let name_at = |i: usize| {
        let end = (i..bytes.len())
            .find(|&j| !ident(bytes[j]))
            .unwrap_or(bytes.len());
        (&code[i..end], end)
    };
    let mut out = BTreeSet::new();
    for (prefix, parts) in [("torch.", 1), ("ops.", 2)] {
        let mut from = 0;
        while let Some(at) = code[from..].find(prefix).map(|k| from + k) {
            from = at + prefix.len();
            let starts_a_name = at == 0 || !(ident(bytes[at - 1]) || bytes[at - 1] == b'.');
            if !starts_a_name {
                continue;
            }
            let mut name = prefix.trim_end_matches('.').to_owned();
            let mut i = at + prefix.len();
            for part in 0..parts {
                if part > 0 {
                    if bytes.get(i) != Some(&b'.') {
                        break;
                    }
                    i += 1;
                }
                let (word, end) = name_at(i);
                if word.is_empty() {
                    break;
                }
                name.push('.');
                name.push_str(word);
                i = end;
            }
            if name.len() > prefix.len() {
                out.insert(name);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operators_are_the_torch_and_ops_names_not_the_modules_own_code() {
        let code = "\
def forward(self, x: Tensor) -> Tensor:
    _0 = __torch__.torch.nn.functional._max_pool2d
    x0 = torch.view(x, [-1, 1, 8, 8])
    _1 = __torch__.torch.nn.functional.relu((self.stem).forward(x0, ), False, )
    y = torch.from_file(\"/etc/passwd\", None, 4)
    ops.prim.RaiseException(\"no\", \"builtins.ValueError\")
    return ops.myns.shell(torch.add(_1, y))
";
        let ops: Vec<String> = operators_in(code).into_iter().collect();
        assert_eq!(
            ops,
            [
                "ops.myns.shell",
                "ops.prim.RaiseException",
                "torch.add",
                "torch.from_file",
                "torch.view"
            ]
        );
    }

    #[test]
    fn forbidden_operators_are_named() {
        let code = TorchScriptCode {
            sources: vec![],
            operators: ["torch.linear", "torch.from_file", "ops.myns.shell"]
                .into_iter()
                .map(String::from)
                .collect(),
        };
        assert_eq!(code.forbidden(), ["ops.myns.shell", "torch.from_file"]);
        // The digest names the code, not the archive's top folder.
        let named = |top: &str, text: &str| TorchScriptCode {
            sources: vec![(format!("{top}/code/__torch__.py"), text.to_string())],
            operators: BTreeSet::new(),
        };
        assert_eq!(named("net", "a").digest(), named("trained", "a").digest());
        assert_ne!(named("net", "a").digest(), named("net", "b").digest());
        let e = code.check().unwrap_err().to_string();
        assert!(
            e.contains("operators") && e.contains("torch.from_file"),
            "{e}"
        );
        let fine = TorchScriptCode {
            sources: vec![],
            operators: ["torch.linear".to_string()].into_iter().collect(),
        };
        fine.check().unwrap();
    }

    #[test]
    fn what_is_not_a_torchscript_archive_is_refused() {
        for bytes in [&b""[..], b"PK\x03\x04 not really", b"{\"json\": 1}"] {
            let e = TorchScriptCode::read(bytes).unwrap_err().to_string();
            assert!(e.contains("not a TorchScript file"), "{e}");
        }
    }
}
