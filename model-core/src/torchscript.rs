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
    /// Reads the sources in a TorchScript file's bytes. Refused: what is not a zip archive laid out
    /// as `torch.jit.save` writes it (one top folder; the code as `code/….py`, UTF-8; no second
    /// copy of a name in another case, since libtorch finds records case-insensitively; no
    /// old-format `model.json`), more than [`MAX_ENTRIES`] entries, and more than
    /// [`MAX_CODE_BYTES`] of code actually read.
    pub fn read(bytes: &[u8]) -> Result<TorchScriptCode> {
        let bad = |why: String| ModelError::Format(format!("not a TorchScript file: {why}"));
        check_layout(bytes).map_err(|why| bad(why.into()))?;
        let mut zip = zip::ZipArchive::new(Cursor::new(bytes)).map_err(|e| bad(e.to_string()))?;
        if zip.len() > MAX_ENTRIES {
            return Err(bad(format!(
                "{} entries; at most {MAX_ENTRIES} are read",
                zip.len()
            )));
        }
        let mut sources = Vec::new();
        let mut pickles = Vec::new();
        let mut records = std::collections::HashMap::new();
        let mut pickle_bytes = 0u64;
        let mut total = 0u64;
        let mut top: Option<String> = None;
        let mut names = std::collections::HashSet::new();
        for i in 0..zip.len() {
            let mut entry = zip.by_index(i).map_err(|e| bad(e.to_string()))?;
            // libtorch finds records by their raw bytes up to a NUL; this reader decodes names
            // (as UTF-8 or CP437). Printable ASCII, as torch.jit.save writes, reads the same in
            // both.
            if !entry.name_raw().iter().all(|b| (0x20..0x7f).contains(b)) {
                return Err(bad(format!(
                    "an entry's name {:?} is not printable ASCII",
                    String::from_utf8_lossy(&entry.name_raw()[..entry.name_raw().len().min(100)])
                )));
            }
            let name = entry.name().to_owned();
            let Some((folder, rest)) = name.split_once('/') else {
                return Err(bad(format!("{name:?} is outside the archive's folder")));
            };
            if top.get_or_insert_with(|| folder.to_owned()) != folder {
                return Err(bad(format!(
                    "{name:?} is outside the archive's one top folder"
                )));
            }
            if !names.insert(name.to_ascii_lowercase()) {
                return Err(bad(format!("{name:?} appears twice (ignoring case)")));
            }
            let lower = rest.to_ascii_lowercase();
            if lower == "model.json" {
                return Err(bad(
                    "the old model.json format is not read; save it again with a \
                     current torch.jit.save"
                        .into(),
                ));
            }
            records.insert(lower.clone(), entry.size());
            if lower.ends_with(".pkl") || lower.ends_with(".debug_pkl") {
                let room = MAX_PICKLE_BYTES - pickle_bytes;
                let mut data = Vec::new();
                (&mut entry)
                    .take(room + 1)
                    .read_to_end(&mut data)
                    .map_err(|e| bad(format!("{name}: {e}")))?;
                if data.len() as u64 > room {
                    return Err(bad(format!(
                        "its pickles are larger than {} MiB",
                        MAX_PICKLE_BYTES >> 20
                    )));
                }
                pickle_bytes += data.len() as u64;
                pickles.push((rest.to_owned(), data));
                continue;
            }
            let is_code = rest.starts_with("code/") && rest.ends_with(".py");
            if !is_code {
                // What libtorch could still find as code, under another case or place.
                if lower.starts_with("code/") && lower.ends_with(".py") || lower.ends_with(".py") {
                    return Err(bad(format!("{name:?}: code lies only in code/….py")));
                }
                continue;
            }
            let room = MAX_CODE_BYTES - total;
            let mut text = Vec::new();
            (&mut entry)
                .take(room + 1)
                .read_to_end(&mut text)
                .map_err(|e| bad(format!("{name}: {e}")))?;
            if text.len() as u64 > room {
                return Err(bad(format!(
                    "its code is larger than {} MiB",
                    MAX_CODE_BYTES >> 20
                )));
            }
            total += text.len() as u64;
            let text =
                String::from_utf8(text).map_err(|_| bad(format!("{name} is not UTF-8 text")))?;
            sources.push((name, text));
        }
        if sources.is_empty() {
            return Err(bad("the archive holds no code/ folder".into()));
        }
        check_tensors(&pickles, &records)?;
        sources.sort();
        let defined: BTreeSet<String> = sources.iter().flat_map(|(_, s)| definitions(s)).collect();
        let operators = sources
            .iter()
            .flat_map(|(_, s)| operators_in(s, &defined))
            .collect();
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

/// The most pickle bytes read from one file (all pickles together): a module's pickles describe
/// its tensors, a few hundred bytes each, and its debug information.
pub const MAX_PICKLE_BYTES: u64 = 64 << 20;

/// Runs the pickles libtorch reads when it loads a module through
/// [`crate::pickle::check_pickle`]: `data.pkl` and `constants.pkl` with their storage records
/// (`data/KEY`, `constants/KEY`, found as libtorch finds records, ignoring case), the code's debug
/// pickles with none (libtorch builds no tensors from them). `records` maps each entry's name below the top folder, lower-cased, to its length.
fn check_tensors(
    pickles: &[(String, Vec<u8>)],
    records: &std::collections::HashMap<String, u64>,
) -> Result<()> {
    for (name, bytes) in pickles {
        // libtorch reads archive NAME from NAME.pkl, its tensors from records NAME/KEY.
        let lower = name.to_ascii_lowercase();
        let folder = match lower.as_str() {
            "data.pkl" => "data/",
            "constants.pkl" => "constants/",
            _ if lower.ends_with(".debug_pkl") => "",
            // Not read when a module is loaded (a trace's traced_inputs.pkl is read only when
            // shapes are restored, which fedchain never asks; torch writes its records empty).
            _ => continue,
        };
        let record_len = |key: &str| {
            if folder.is_empty() {
                return None;
            }
            records
                .get(&format!("{folder}{}", key.to_ascii_lowercase()))
                .copied()
        };
        // Each pickle's storages are its own: libtorch reads them again for each archive.
        let mut storages = std::collections::HashMap::new();
        crate::pickle::check_pickle(name, bytes, &record_len, &mut storages).map_err(|why| {
            ModelError::Format(format!("not a TorchScript module this check passes: {why}"))
        })?;
    }
    Ok(())
}

/// Refuses a zip archive that two readers could read differently: it must start with its first
/// entry (no prefix: another format's magic, a second archive) and end with its end record, with
/// the central directory (and, as `torch.jit.save` writes them, the zip64 end record and locator)
/// exactly where that record says. This reader tolerates data before an archive by shifting every
/// offset; libtorch's reads offsets as written: a file laid out otherwise could show this check
/// one module and libtorch another.
fn check_layout(b: &[u8]) -> std::result::Result<(), &'static str> {
    let u16_at = |i: usize| b.get(i..i + 2).map(|s| u16::from_le_bytes([s[0], s[1]]));
    let u32_at = |i: usize| {
        b.get(i..i + 4)
            .map(|s| u32::from_le_bytes(s.try_into().expect("4 bytes")))
    };
    let u64_at = |i: usize| {
        b.get(i..i + 8)
            .map(|s| u64::from_le_bytes(s.try_into().expect("8 bytes")))
    };
    if !b.starts_with(b"PK\x03\x04") {
        return Err("it does not start with a zip entry");
    }
    let eocd = (b.len().saturating_sub(22 + 0xFFFF)..=b.len().saturating_sub(22))
        .rev()
        .find(|&i| b[i..].starts_with(b"PK\x05\x06"))
        .ok_or("no zip end record")?;
    let cd_size = u32_at(eocd + 12).ok_or("a short end record")?;
    let cd_offset = u32_at(eocd + 16).ok_or("a short end record")?;
    let comment = u16_at(eocd + 20).ok_or("a short end record")?;
    if eocd + 22 + usize::from(comment) != b.len() {
        return Err("data after the zip end record");
    }
    let (mut size, mut offset) = (u64::from(cd_size), u64::from(cd_offset));
    let mut cd_end = eocd as u64;
    if eocd >= 20 + 56 && b[eocd - 20..].starts_with(b"PK\x06\x07") {
        let locator = eocd - 20;
        let record = u64_at(locator + 8).ok_or("a short zip64 locator")?;
        if record != (locator - 56) as u64 || !b[locator - 56..].starts_with(b"PK\x06\x06") {
            return Err("the zip64 end record is not where its locator says");
        }
        let r = locator - 56;
        let size64 = u64_at(r + 40).ok_or("a short zip64 end record")?;
        let offset64 = u64_at(r + 48).ok_or("a short zip64 end record")?;
        let agree = |v32: u32, v64: u64| v32 == u32::MAX || u64::from(v32) == v64;
        if !agree(cd_size, size64) || !agree(cd_offset, offset64) {
            return Err("the zip64 and zip end records disagree");
        }
        (size, offset, cd_end) = (size64, offset64, r as u64);
    }
    if offset.checked_add(size) != Some(cd_end) {
        return Err("the central directory is not where the end record says");
    }
    Ok(())
}

/// Most entries read from an archive (a module has a few per tensor).
pub const MAX_ENTRIES: usize = 100_000;

/// Calls of bare names that TorchScript's serialised code uses for its own typing and builtins;
/// any other bare call must be to a function or class the archive's code defines.
pub const ALLOWED_BUILTINS: &[&str] = &[
    "annotate",
    "isinstance",
    "uninitialized",
    "unchecked_cast",
    "range",
    "len",
    "int",
    "float",
    "str",
    "bool",
    "list",
    "tuple",
    "dict",
    "min",
    "max",
    "abs",
    "enumerate",
    "zip",
    "round",
];

/// A token of TorchScript source: what the check needs (strings and comments are skipped).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Ident(String),
    Punct(char),
    /// A string literal's text as written (escapes left as they are).
    Str(String),
}

/// The tokens of `code`, skipping whitespace, comments, strings and numbers, as Python's lexer
/// would separate them: `torch . from_file` is the same three tokens as `torch.from_file`.
fn tokens(code: &str) -> Vec<Token> {
    let chars: Vec<char> = code.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() || c == '\\' {
            i += 1;
        } else if c == '#' {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '"' || c == '\'' {
            let triple = chars.get(i + 1) == Some(&c) && chars.get(i + 2) == Some(&c);
            let quote = if triple { 3 } else { 1 };
            i += quote;
            let start = i;
            let mut end = chars.len();
            while i < chars.len() {
                if chars[i] == '\\' {
                    i += 2;
                } else if chars[i] == c
                    && (!triple || (chars.get(i + 1) == Some(&c) && chars.get(i + 2) == Some(&c)))
                {
                    end = i;
                    i += quote;
                    break;
                } else {
                    i += 1;
                }
            }
            out.push(Token::Str(
                chars[start..end.min(chars.len())].iter().collect(),
            ));
        } else if c.is_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            out.push(Token::Ident(chars[start..i].iter().collect()));
        } else if c.is_ascii_digit() {
            while i < chars.len()
                && (chars[i].is_alphanumeric() || chars[i] == '_' || chars[i] == '.')
            {
                i += 1;
            }
        } else {
            out.push(Token::Punct(c));
            i += 1;
        }
    }
    out
}

/// The functions and classes `code` defines (`def NAME`, `class NAME`), and the names it binds to
/// them (`_0 = __torch__.torch.nn.functional._max_pool2d`).
fn definitions(code: &str) -> Vec<String> {
    let t = tokens(code);
    t.windows(3)
        .filter_map(|w| match (&w[0], &w[1], &w[2]) {
            (Token::Ident(k), Token::Ident(name), _) if k == "def" || k == "class" => {
                Some(name.clone())
            }
            (Token::Ident(name), Token::Punct('='), Token::Ident(own)) if own == "__torch__" => {
                Some(name.clone())
            }
            _ => None,
        })
        .collect()
}

/// What TorchScript source `code` would call, given the functions and classes the archive
/// `defined`: every `torch.NAME` and `ops.NAMESPACE.NAME`, every method call `.NAME(` of something
/// else (a tensor method is an operator too, written here as `torch.NAME`) unless the archive
/// defines NAME, and every bare call `NAME(` that is neither defined nor one of
/// [`ALLOWED_BUILTINS`]. A `torch` or `ops` that does not start such a chain (`t = torch`,
/// `(torch).x`, `getattr(torch, ...)`) is reported as `torch` or `ops` itself, which no allowlist
/// holds. The module's own code (`__torch__.…`) is not an operator.
pub fn operators_in(code: &str, defined: &BTreeSet<String>) -> BTreeSet<String> {
    let t = tokens(code);
    let ident = |i: usize| match t.get(i) {
        Some(Token::Ident(s)) => Some(s.as_str()),
        _ => None,
    };
    let punct = |i: usize, c: char| t.get(i) == Some(&Token::Punct(c));
    let modules = module_names(&t);
    let mut out = BTreeSet::new();
    let mut i = 0;
    while i < t.len() {
        let after_dot = i > 0 && punct(i - 1, '.');
        match ident(i) {
            Some(root @ ("torch" | "ops")) if !after_dot => {
                // torch.NAME or ops.NAMESPACE.NAME, nothing else.
                let parts = if root == "torch" { 1 } else { 2 };
                let mut name = root.to_owned();
                let mut j = i + 1;
                let mut complete = true;
                for _ in 0..parts {
                    match (punct(j, '.'), ident(j + 1)) {
                        (true, Some(part)) => {
                            name.push('.');
                            name.push_str(part);
                            j += 2;
                        }
                        _ => {
                            complete = false;
                            break;
                        }
                    }
                }
                out.insert(if complete { name } else { root.to_owned() });
                i = j;
                continue;
            }
            Some(name) if after_dot => {
                // An attribute, called or not (`(x.as_strided)(…)`, `f = x.set_`). Of a module or
                // an object of the archive's classes (`self`, a submodule, `(fc).forward(`) or of
                // a `__torch__.…` chain it is the archive's own; of anything else, a tensor above
                // all, it is an operator, whatever the archive defines.
                // `CONSTANTS.c0`: a tensor of the archive's constants table, not an operator.
                let constant = i >= 2
                    && ident(i - 2) == Some("CONSTANTS")
                    && !(i >= 3 && punct(i - 3, '.'))
                    && name.len() > 1
                    && name.starts_with('c')
                    && name[1..].bytes().all(|b| b.is_ascii_digit());
                let own = constant
                    || match receiver(&t, i - 1) {
                        Receiver::Own => true,
                        Receiver::Name(r) => modules.contains(r),
                        Receiver::Other => false,
                    };
                if !own {
                    out.insert(format!("torch.{name}"));
                }
            }
            Some(name) if punct(i + 1, '(') => {
                {
                    // A scripted nn.Sequential reads its own submodules: getattr(self, "0").
                    let own_attribute =
                        name == "getattr" && ident(i + 2) == Some("self") && punct(i + 3, ',');
                    let known = defined.contains(name) || own_attribute;
                    if !known && !ALLOWED_BUILTINS.contains(&name) && !is_keyword(name) {
                        out.insert(name.to_owned());
                    }
                }
            }
            _ => {}
        }
        i += 1;
    }
    out
}

/// What a method is called on.
enum Receiver<'a> {
    /// A chain from `__torch__`: the archive's own code.
    Own,
    /// One name, `(name).m(` or `name.m(`.
    Name(&'a str),
    /// Anything else (an expression, a call's result).
    Other,
}

/// The receiver of the method call whose `.` is token `dot`.
fn receiver(t: &[Token], dot: usize) -> Receiver<'_> {
    let ident = |i: usize| match t.get(i) {
        Some(Token::Ident(s)) => Some(s.as_str()),
        _ => None,
    };
    let punct = |i: usize, c: char| t.get(i) == Some(&Token::Punct(c));
    if dot >= 3 && punct(dot - 1, ')') && punct(dot - 3, '(') {
        // `(name).m(`, unless the parenthesis is a call's: `f(name).m(`.
        let called =
            dot >= 4 && (ident(dot - 4).is_some_and(|w| !is_keyword(w)) || punct(dot - 4, ')'));
        return match ident(dot - 2) {
            Some(name) if !called => Receiver::Name(name),
            _ => Receiver::Other,
        };
    }
    // `a.b.c.m(`: walk back to where the chain starts.
    let mut start = dot;
    while start >= 2 && ident(start - 1).is_some() && punct(start - 2, '.') {
        start -= 2;
    }
    match ident(start.wrapping_sub(1)) {
        Some("__torch__") if start == 0 || !punct(start - 2, '.') => Receiver::Own,
        Some(name) if start == dot => Receiver::Name(name),
        _ => Receiver::Other,
    }
}

/// Names that hold a module or an object of the archive's own classes in `t`: those declared
/// with a `__torch__` type (a class's submodules, a method's parameters) and never with another,
/// and locals whose every assignment is such an attribute of `self` (`fc = self.fc`) or
/// `getattr(self, "0")`.
fn module_names(t: &[Token]) -> BTreeSet<String> {
    let ident = |i: usize| match t.get(i) {
        Some(Token::Ident(s)) => Some(s.as_str()),
        _ => None,
    };
    let string = |i: usize| match t.get(i) {
        Some(Token::Str(s)) => Some(s.as_str()),
        _ => None,
    };
    let punct = |i: usize, c: char| t.get(i) == Some(&Token::Punct(c));
    let mut typed = BTreeSet::new();
    let mut untyped = BTreeSet::new();
    for i in 0..t.len() {
        // `name : __torch__.…` (an attribute or a parameter, `self` included), or a scripted
        // Sequential's `__annotations__["0"] = __torch__.…`.
        let declared = match (ident(i), punct(i + 1, ':')) {
            (Some(name), true) => Some((name, ident(i + 2))),
            _ => match (
                ident(i),
                punct(i + 1, '['),
                string(i + 2),
                punct(i + 3, ']'),
            ) {
                (Some("__annotations__"), true, Some(key), true) if punct(i + 4, '=') => {
                    Some((key, ident(i + 5)))
                }
                _ => None,
            },
        };
        match declared {
            Some((name, Some("__torch__"))) => {
                typed.insert(name);
            }
            Some((name, _)) => {
                untyped.insert(name);
            }
            None => {}
        }
    }
    let declared: BTreeSet<&str> = typed.difference(&untyped).copied().collect();
    let mut assigned_module = BTreeSet::new();
    let mut assigned_other = BTreeSet::new();
    for i in 0..t.len() {
        let Some(name) = ident(i) else { continue };
        if !punct(i + 1, '=') || punct(i + 2, '=') || (i > 0 && punct(i - 1, '.')) {
            continue;
        }
        let ends = |j: usize| !punct(j, '.') && !punct(j, '(') && !punct(j, '[');
        let of_module = |j: usize| ident(j).is_some_and(|r| declared.contains(r));
        let attribute = of_module(i + 2)
            && punct(i + 3, '.')
            && ident(i + 4).is_some_and(|a| declared.contains(a))
            && ends(i + 5);
        let own = ident(i + 2) == Some("getattr")
            && punct(i + 3, '(')
            && of_module(i + 4)
            && punct(i + 5, ',')
            && string(i + 6).is_some_and(|a| declared.contains(a))
            && punct(i + 7, ')')
            && ends(i + 8);
        if attribute || own {
            assigned_module.insert(name);
        } else {
            assigned_other.insert(name);
        }
    }
    // A declared name assigned anything else is not trusted either (`fc = torch.zeros(…)`).
    declared
        .iter()
        .copied()
        .chain(assigned_module.iter().copied())
        .filter(|n| !assigned_other.contains(n))
        .map(str::to_owned)
        .collect()
}

/// Python keywords that may precede a parenthesis (`if (`, `return (`, `not (`).
fn is_keyword(name: &str) -> bool {
    matches!(
        name,
        "if" | "elif"
            | "while"
            | "for"
            | "in"
            | "return"
            | "and"
            | "or"
            | "not"
            | "is"
            | "assert"
            | "else"
            | "lambda"
            | "def"
            | "class"
            | "raise"
            | "with"
            | "yield"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ops_of(code: &str) -> Vec<String> {
        let defined: BTreeSet<String> = definitions(code).into_iter().collect();
        operators_in(code, &defined).into_iter().collect()
    }

    #[test]
    fn operators_are_the_torch_and_ops_names_not_the_modules_own_code() {
        let code = "\
class Net(Module):
  stem : __torch__.torch.nn.modules.conv.Conv2d
  def forward(self: __torch__.Net, x: Tensor) -> Tensor:
    _0 = __torch__.torch.nn.functional._max_pool2d
    x0 = torch.view(x, [-1, 1, 8, 8])
    stem = self.stem
    _1 = __torch__.torch.nn.functional.relu((stem).forward(x0, ), False, )
    y = torch.from_file(\"/etc/passwd\", None, 4)  # torch.save in a comment is no call
    k = torch.sum(CONSTANTS.c0, CONSTANTS.c12)
    ops.prim.RaiseException(\"torch.load in a string\", \"builtins.ValueError\")
    z = annotate(List[int], [])
    _2 = getattr(self, \"0\")
    return _0(ops.myns.shell(torch.add(_1, y)), [2, 2])
  def _max_pool2d(self: __torch__.Net, x: Tensor) -> Tensor:
    return x
  def relu(self: __torch__.Net, x: Tensor) -> Tensor:
    return x
  def forward2(self: __torch__.Net, x: Tensor) -> Tensor:
    return (self).forward(x, )
";
        assert_eq!(
            ops_of(code),
            [
                "ops.myns.shell",
                "ops.prim.RaiseException",
                "torch.add",
                "torch.from_file",
                "torch.sum",
                "torch.view"
            ]
        );
    }

    #[test]
    fn spacing_aliases_and_method_calls_do_not_hide_an_operator() {
        for (code, hidden) in [
            ("y = torch . from_file(\"f\", None, 4)", "torch.from_file"),
            ("y = torch.\\\n  from_file(\"f\")", "torch.from_file"),
            ("y = (torch).from_file(\"f\")", "torch"),
            ("t = torch\ny = t.from_file(\"f\")", "torch"),
            ("y = getattr(torch, \"from_file\")", "torch"),
            ("y = getattr(x, \"from_file\")", "getattr"),
            ("y = x.as_strided([1], [1])", "torch.as_strided"),
            ("f = x.set_\ny = f(z)", "f"),
            ("y = ops . aten . from_file(\"f\")", "ops.aten.from_file"),
            // A method the archive defines elsewhere does not make a tensor's method its own.
            (
                "class A(Module):\n  def set_(self):\n    pass\n  def forward(self, x: Tensor):\n    \
                 y = (x).set_(z)\n    w = self.weight\n    return w.set_(z)",
                "torch.set_",
            ),
            ("def set_(self):\n  pass\ny = f(x).set_(z)", "torch.set_"),
            ("def as_strided(self):\n  pass\ny = (x.as_strided)([2], [1])", "torch.as_strided"),
            ("def as_strided(self):\n  pass\nlen = x.as_strided\ny = len([2])", "torch.as_strided"),
            (
                "class N(Module):\n  fc : __torch__.L\n  def as_strided(self: __torch__.N):\n    \
                 pass\n  def forward(self: __torch__.N):\n    fc = torch.zeros([4])\n    \
                 return fc.as_strided([2], [1])",
                "torch.as_strided",
            ),
            (
                "class N(Module):\n  weight : Tensor\n  def as_strided(self: __torch__.N):\n    \
                 pass\n  def forward(self: __torch__.N):\n    w = getattr(self, \"weight\")\n    \
                 return w.as_strided([2], [1])",
                "torch.as_strided",
            ),
            (
                "def as_strided(self: __torch__.N):\n  pass\ndef g(self: Tensor) -> Tensor:\n  \
                 return self.as_strided([2], [1])",
                "torch.as_strided",
            ),
            ("y = print(x)", "print"),
            ("y = CONSTANTS.c0.set_(x)", "torch.set_"),
            ("y = x.CONSTANTS.c0", "torch.c0"),
            ("y = CONSTANTS.from_file(x)", "torch.from_file"),
        ] {
            let found = ops_of(code);
            assert!(found.iter().any(|o| o == hidden), "{code:?}: {found:?}");
            let forbidden = TorchScriptCode {
                sources: vec![],
                operators: found.into_iter().collect(),
            }
            .forbidden();
            assert!(!forbidden.is_empty(), "{code:?} must be refused");
        }
    }

    fn archive(entries: &[(&str, &str)]) -> Vec<u8> {
        use std::io::Write;
        let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
        let stored =
            zip::write::FileOptions::default().compression_method(zip::CompressionMethod::Stored);
        for (name, text) in entries {
            zip.start_file(*name, stored).unwrap();
            zip.write_all(text.as_bytes()).unwrap();
        }
        zip.finish().unwrap().into_inner()
    }

    #[test]
    fn an_archive_two_readers_could_read_differently_is_refused() {
        let fine = archive(&[("m/code/a.py", "def forward(self):\n  return 1\n")]);
        TorchScriptCode::read(&fine).unwrap();
        let evil = archive(&[(
            "m/code/a.py",
            "def forward(self):\n  return torch.save(1)\n",
        )]);
        // Another archive (or another format's magic) before the checked one.
        let prefixed = [evil.clone(), fine.clone()].concat();
        let e = TorchScriptCode::read(&prefixed).unwrap_err().to_string();
        assert!(e.contains("central directory is not where"), "{e}");
        let magic = [b"\x00\x00\x00\x00PTMF".to_vec(), fine.clone()].concat();
        let e = TorchScriptCode::read(&magic).unwrap_err().to_string();
        assert!(e.contains("does not start with a zip entry"), "{e}");
        let trailing = [fine, b"junk".to_vec()].concat();
        let e = TorchScriptCode::read(&trailing).unwrap_err().to_string();
        assert!(e.contains("after the zip end record"), "{e}");
    }

    #[test]
    fn code_is_read_only_where_libtorch_finds_it_and_only_once() {
        let fine = "def forward(self, x):\n    return torch.relu(x)\n";
        let evil = "def forward(self, x):\n    return torch.from_file(\"f\")\n";
        TorchScriptCode::read(&archive(&[("m/code/__torch__.py", fine)])).unwrap();
        for (entries, why) in [
            (
                vec![("m/code/__torch__.py", fine), ("m/Code/__torch__.py", evil)],
                "twice",
            ),
            (
                vec![("m/code/a.py", fine), ("m/Code/b.py", evil)],
                "code lies only in",
            ),
            (
                vec![("m/code/a.py", fine), ("m/b.PY", evil)],
                "code lies only in",
            ),
            (
                vec![("m/code/a.py", fine), ("n/code/b.py", evil)],
                "one top folder",
            ),
            (
                vec![("m/code/a.py", fine), ("m/model.json", "{}")],
                "model.json",
            ),
            (
                vec![("m/code/a.py", fine), ("m/data/\u{e9}", "x")],
                "not printable ASCII",
            ),
            (
                vec![("m/code/a.py", fine), ("m/data/0\0", "x")],
                "not printable ASCII",
            ),
        ] {
            let e = TorchScriptCode::read(&archive(&entries))
                .unwrap_err()
                .to_string();
            assert!(e.contains(why), "{entries:?}: {e}");
        }
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
