//! The tensors a TorchScript file's pickles would build, checked without building them.
//!
//! A TorchScript archive keeps its module's state in `data.pkl` (and its code's tensor constants
//! in `constants.pkl`): Python pickles whose tensors are views of raw byte records
//! (`data/KEY`, `constants/KEY`). libtorch's unpickler trusts both the element count the pickle
//! states for a record and the view's offset, sizes and strides: a crafted file can make a
//! tensor that reads and writes memory outside its record, which the operator check alone cannot
//! see, since only allowed tensor maths would then touch it.
//!
//! [`check_pickle`] runs a pickle on a small machine that follows libtorch's unpickler
//! (`torch/csrc/jit/serialization/unpickler.cpp`) step for step, for the opcodes and globals that
//! `torch.jit.save` writes and nothing else, and refuses the file when a storage is larger than
//! its record, a tensor reaches outside its storage, or a step would make libtorch index outside
//! its own stacks (a stale mark, an odd number of dictionary items, a functor that is not one).
//! Errs on refusing: whatever `torch.jit.save` does not write is refused by name.

use std::collections::HashMap;
use std::rc::Rc;

/// Most memo slots a pickle may name: libtorch grows its memo to the largest index named, so
/// `LONG_BINPUT 0xFFFFFFFF` alone would ask for 64 GiB.
pub const MAX_MEMO: usize = 1 << 20;

/// Most values on the machine's stack at once (a module's pickle holds a few per tensor).
const MAX_STACK: usize = 1 << 20;

/// Most dimensions of a tensor (PyTorch's own limit is 64): bounds the work of each rebuild.
pub const MAX_DIMS: usize = 64;

/// Longest storage key: `torch.jit.save` writes decimal numbers.
const MAX_KEY: usize = 64;

/// What of an attacker's text an error message repeats (characters).
const QUOTED: usize = 80;

/// `text`, cut to [`QUOTED`] characters for an error message.
fn quoted(text: &str) -> String {
    let cut: String = text.chars().take(QUOTED).collect();
    if cut.len() < text.len() {
        format!("{cut:?}…")
    } else {
        format!("{cut:?}")
    }
}

/// One storage record a pickle names: its element type and count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Storage {
    /// libtorch's `ScalarType` number.
    pub scalar_type: i64,
    /// Elements, as the pickle states.
    pub numel: i64,
}

/// A value on the machine's stack: what libtorch's `IValue` would be, as far as the check needs.
#[derive(Debug, Clone)]
enum V {
    None,
    Bool,
    Int(i64),
    Float,
    Str(Rc<str>),
    Tuple(Rc<[V]>),
    /// A list, dictionary, object or device: their contents never become a tensor's storage,
    /// size or stride.
    Opaque,
    /// A tensor over a storage of `numel` elements.
    Tensor {
        numel: i64,
    },
}

/// What a global does when a `REDUCE` or `BUILD` calls it (libtorch's `globals_` table).
#[derive(Debug, Clone, Copy)]
enum Global {
    /// `__torch__.…` classes (and enums): the argument becomes an object.
    Object,
    /// `torch.jit._pickle.build_*list` and `restore_type_tag`: the argument tuple's first element.
    FirstOfTuple,
    /// `collections.OrderedDict`: its argument becomes None.
    OrderedDict,
    /// `torch.device`: a device.
    Device,
    /// `torch._utils._rebuild_tensor_v2`: a tensor view of a storage.
    RebuildTensor,
}

/// Element size in bytes of libtorch's `ScalarType` numbers that a module's tensors may have.
fn itemsize(scalar_type: i64) -> Option<i64> {
    Some(match scalar_type {
        0 | 1 | 11 => 1, // uint8, int8, bool
        2 | 5 | 15 => 2, // int16, float16, bfloat16
        3 | 6 => 4,      // int32, float32
        4 | 7 => 8,      // int64, float64
        _ => return None,
    })
}

/// The `ScalarType` number of a `torch.XStorage` global that libtorch knows, for those
/// [`itemsize`] allows.
fn storage_type(class: &str) -> Option<i64> {
    Some(match class {
        "ByteStorage" => 0,
        "CharStorage" => 1,
        "ShortStorage" => 2,
        "IntStorage" => 3,
        "LongStorage" => 4,
        "HalfStorage" => 5,
        "FloatStorage" => 6,
        "DoubleStorage" => 7,
        "BoolStorage" => 11,
        "BFloat16Storage" => 15,
        _ => return None,
    })
}

/// Runs the pickle `bytes` (named `name` in errors) as libtorch would, checking every storage and
/// tensor it builds. `record_len` gives the byte length of the storage record a key names (`None`
/// when there is no such record); pickles whose tensors libtorch does not load (debug
/// information) pass a function that always answers `None`, so any tensor with elements in them
/// is refused. `storages` collects each key's type and count, which must agree wherever the pickle
/// names the key.
pub fn check_pickle(
    name: &str,
    bytes: &[u8],
    record_len: &dyn Fn(&str) -> Option<u64>,
    storages: &mut HashMap<String, Storage>,
) -> Result<(), String> {
    Machine {
        name,
        b: bytes,
        pos: 0,
        stack: Vec::new(),
        marks: Vec::new(),
        memo: Vec::new(),
        globals: Vec::new(),
        record_len,
        storages,
    }
    .run()
}

struct Machine<'a> {
    name: &'a str,
    b: &'a [u8],
    pos: usize,
    stack: Vec<V>,
    marks: Vec<usize>,
    memo: Vec<V>,
    globals: Vec<Global>,
    record_len: &'a dyn Fn(&str) -> Option<u64>,
    storages: &'a mut HashMap<String, Storage>,
}

impl Machine<'_> {
    fn err(&self, why: impl std::fmt::Display) -> String {
        format!("{} (byte {}): {why}", self.name, self.pos)
    }

    fn take(&mut self, n: usize) -> Result<&[u8], String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.b.len())
            .ok_or_else(|| self.err("it ends in the middle of an instruction"))?;
        let s = &self.b[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, String> {
        let s = self.take(4)?;
        Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    }

    fn line(&mut self) -> Result<String, String> {
        let rest = &self.b[self.pos..];
        let n = rest
            .iter()
            .position(|&c| c == b'\n')
            .ok_or_else(|| self.err("a global's name does not end"))?;
        let s = std::str::from_utf8(&rest[..n])
            .map_err(|_| self.err("a global's name is not UTF-8"))?
            .to_owned();
        self.pos += n + 1;
        Ok(s)
    }

    fn push(&mut self, v: V) -> Result<(), String> {
        if self.stack.len() >= MAX_STACK {
            return Err(self.err(format!("more than {MAX_STACK} values on its stack")));
        }
        self.stack.push(v);
        Ok(())
    }

    fn pop(&mut self) -> Result<V, String> {
        self.stack
            .pop()
            .ok_or_else(|| self.err("an instruction takes a value from an empty stack"))
    }

    /// Pops the last mark, which must lie within the stack (libtorch does not check this for
    /// tuples and dictionaries: a stale mark would make it read outside its stack).
    fn mark(&mut self) -> Result<usize, String> {
        let m = self
            .marks
            .pop()
            .ok_or_else(|| self.err("an instruction needs a mark and there is none"))?;
        if m > self.stack.len() {
            return Err(self.err("a mark lies beyond the stack's top"));
        }
        Ok(m)
    }

    fn put(&mut self, id: usize) -> Result<(), String> {
        if id >= MAX_MEMO {
            return Err(self.err(format!("memo slot {id}; at most {MAX_MEMO} are allowed")));
        }
        let top = self
            .stack
            .last()
            .cloned()
            .ok_or_else(|| self.err("a memo write with an empty stack"))?;
        if id >= self.memo.len() {
            self.memo.resize(id + 1, V::None);
        }
        self.memo[id] = top;
        Ok(())
    }

    fn get(&mut self, id: usize) -> Result<(), String> {
        let v = self
            .memo
            .get(id)
            .cloned()
            .ok_or_else(|| self.err(format!("memo slot {id} was never written")))?;
        self.push(v)
    }

    fn run(mut self) -> Result<(), String> {
        if self.take(2)? != [0x80, 2] {
            return Err(self.err("not a protocol 2 pickle, as torch.jit.save writes"));
        }
        loop {
            let op = self.u8()?;
            match op {
                b'.' => break,
                b']' | b'}' => self.push(V::Opaque)?,
                b')' => self.push(V::Tuple(Rc::from(Vec::new())))?,
                b'q' => {
                    let id = usize::from(self.u8()?);
                    self.put(id)?;
                }
                b'r' => {
                    let id = self.u32()? as usize;
                    self.put(id)?;
                }
                b'h' => {
                    let id = usize::from(self.u8()?);
                    self.get(id)?;
                }
                b'j' => {
                    let id = self.u32()? as usize;
                    self.get(id)?;
                }
                b'(' => {
                    if self.marks.len() >= MAX_STACK {
                        return Err(self.err("too many marks"));
                    }
                    self.marks.push(self.stack.len());
                }
                0x88 | 0x89 => self.push(V::Bool)?,
                b'N' => self.push(V::None)?,
                b'K' => {
                    let v = self.u8()?;
                    self.push(V::Int(i64::from(v)))?;
                }
                b'M' => {
                    let s = self.take(2)?;
                    let v = u16::from_le_bytes([s[0], s[1]]);
                    self.push(V::Int(i64::from(v)))?;
                }
                b'J' => {
                    let v = self.u32()? as i32;
                    self.push(V::Int(i64::from(v)))?;
                }
                0x8a => {
                    if self.u8()? != 8 {
                        return Err(self.err("a LONG1 integer that is not 8 bytes long"));
                    }
                    let s = self.take(8)?;
                    let v = i64::from_le_bytes(s.try_into().expect("8 bytes"));
                    self.push(V::Int(v))?;
                }
                b'X' => {
                    let n = self.u32()? as usize;
                    let text: Rc<str> = Rc::from(String::from_utf8_lossy(self.take(n)?).as_ref());
                    self.push(V::Str(text))?;
                }
                b'G' => {
                    self.take(8)?;
                    self.push(V::Float)?;
                }
                b't' => {
                    let m = self.mark()?;
                    let items: Vec<V> = self.stack.drain(m..).collect();
                    self.push(V::Tuple(Rc::from(items)))?;
                }
                0x85..=0x87 => {
                    let n = usize::from(op - 0x84);
                    if self.stack.len() < n {
                        return Err(self.err("a tuple of more values than the stack holds"));
                    }
                    let at = self.stack.len() - n;
                    let items: Vec<V> = self.stack.drain(at..).collect();
                    self.push(V::Tuple(Rc::from(items)))?;
                }
                b'e' => {
                    // APPENDS: the list lies just below the mark.
                    let m = self.mark()?;
                    if m == 0 {
                        return Err(self.err("items appended to nothing"));
                    }
                    self.stack.truncate(m);
                }
                b'l' => {
                    let m = self.mark()?;
                    self.stack.truncate(m);
                    self.push(V::Opaque)?;
                }
                b'd' | b'u' => {
                    // DICT builds a dictionary of the items above the mark; SETITEMS adds them
                    // to the dictionary just below it. Both read them in pairs.
                    let m = self.mark()?;
                    if !(self.stack.len() - m).is_multiple_of(2) {
                        return Err(self.err("a dictionary of an odd number of keys and values"));
                    }
                    if op == b'u' && m == 0 {
                        return Err(self.err("items set in nothing"));
                    }
                    self.stack.truncate(m);
                    if op == b'd' {
                        self.push(V::Opaque)?;
                    }
                }
                b's' => {
                    if self.stack.len() < 3 {
                        return Err(self.err("a dictionary item without a dictionary"));
                    }
                    self.stack.truncate(self.stack.len() - 2);
                }
                b'c' => {
                    let module = self.line()?;
                    let class = self.line()?;
                    self.global(&module, &class)?;
                }
                0x81 => {
                    // NEWOBJ: libtorch drops the (empty) argument tuple; BUILD does the work.
                    self.pop()?;
                }
                b'b' | b'R' => self.call()?,
                b'Q' => self.persistent_id()?,
                _ => {
                    return Err(self.err(format!(
                        "opcode 0x{op:02x}, which torch.jit.save does not write"
                    )))
                }
            }
        }
        if self.pos != self.b.len() {
            return Err(self.err("bytes after the pickle's end"));
        }
        Ok(())
    }

    fn global(&mut self, module: &str, class: &str) -> Result<(), String> {
        let g = match (module, class) {
            ("torch._utils", "_rebuild_tensor_v2") => Global::RebuildTensor,
            ("collections", "OrderedDict") => Global::OrderedDict,
            ("torch", "device") => Global::Device,
            (
                "torch.jit._pickle",
                "build_intlist" | "build_doublelist" | "build_boollist" | "build_tensorlist"
                | "restore_type_tag",
            ) => Global::FirstOfTuple,
            ("torch", storage) => {
                // libtorch pushes the element type's number itself, not a table entry.
                let t = storage_type(storage).ok_or_else(|| {
                    self.err(format!(
                        "global torch.{}, which is not a storage type a module's tensors may have",
                        quoted(storage)
                    ))
                })?;
                return self.push(V::Int(t));
            }
            (m, _) if m == "__torch__" || m.starts_with("__torch__.") => Global::Object,
            _ => {
                return Err(self.err(format!(
                    "global {}, which torch.jit.save does not write for a module",
                    quoted(&format!("{module}.{class}"))
                )))
            }
        };
        self.globals.push(g);
        self.push(V::Int(self.globals.len() as i64 - 1))
    }

    /// `REDUCE` and `BUILD`: the value below the top names a global by its index in the table
    /// (any integer does: libtorch does not remember which values came from `GLOBAL`), and the
    /// global takes the top as its argument.
    fn call(&mut self) -> Result<(), String> {
        let arg = self.pop()?;
        let functor = self.pop()?;
        let g = match functor {
            V::Int(i) => usize::try_from(i)
                .ok()
                .and_then(|i| self.globals.get(i).copied()),
            _ => None,
        }
        .ok_or_else(|| self.err("a call of something that is not a global"))?;
        let result = match g {
            Global::Object | Global::Device => V::Opaque,
            Global::OrderedDict => V::None,
            Global::FirstOfTuple => match &arg {
                V::Tuple(t) if !t.is_empty() => t[0].clone(),
                _ => return Err(self.err("a list or type tag built from something not a tuple")),
            },
            Global::RebuildTensor => self.rebuild_tensor(&arg)?,
        };
        self.push(result)
    }

    /// `_rebuild_tensor_v2(storage, offset, sizes, strides, requires_grad, hooks)`: libtorch sets
    /// the offset, sizes and strides on the storage as given; here they must stay inside it.
    fn rebuild_tensor(&self, arg: &V) -> Result<V, String> {
        let V::Tuple(t) = arg else {
            return Err(self.err("a tensor rebuilt from something not a tuple"));
        };
        if t.len() != 6 {
            return Err(self.err(format!(
                "a tensor rebuilt from {} values; torch.jit.save writes 6",
                t.len()
            )));
        }
        let V::Tensor { numel } = t[0] else {
            return Err(self.err("a tensor rebuilt on something not a storage"));
        };
        let V::Int(offset) = t[1] else {
            return Err(self.err("a tensor's offset is not an integer"));
        };
        let ints = |v: &V, what: &str| -> Result<Vec<i64>, String> {
            match v {
                V::Tuple(items) if items.len() > MAX_DIMS => Err(self.err(format!(
                    "a tensor of {} {what}; at most {MAX_DIMS} dimensions are read",
                    items.len()
                ))),
                V::Tuple(items) => items
                    .iter()
                    .map(|i| match i {
                        V::Int(n) if *n >= 0 => Ok(*n),
                        _ => Err(self.err(format!("a tensor's {what} are not whole numbers"))),
                    })
                    .collect(),
                _ => Err(self.err(format!("a tensor's {what} are not a tuple"))),
            }
        };
        let sizes = ints(&t[2], "sizes")?;
        let strides = ints(&t[3], "strides")?;
        if sizes.len() != strides.len() {
            return Err(self.err(format!(
                "a tensor of {} sizes and {} strides",
                sizes.len(),
                strides.len()
            )));
        }
        if offset < 0 {
            return Err(self.err(format!("a tensor at offset {offset}")));
        }
        let mut elements: i64 = 1;
        let mut last = offset;
        for (&size, &stride) in sizes.iter().zip(&strides) {
            elements = elements.saturating_mul(size);
            if size > 0 {
                last = (size - 1)
                    .checked_mul(stride)
                    .and_then(|d| last.checked_add(d))
                    .unwrap_or(i64::MAX);
            }
        }
        if elements > 0 && last >= numel {
            return Err(self.err(format!(
                "a tensor of sizes {sizes:?}, strides {strides:?} at offset {offset} reaches \
                 element {last} of a storage of {numel}: it would read and write memory outside \
                 its record"
            )));
        }
        if elements > numel.max(1) {
            return Err(self.err(format!(
                "a tensor of {elements} elements over a storage of {numel}: a module's tensors \
                 do not overlap themselves"
            )));
        }
        Ok(V::Tensor { numel })
    }

    /// `BINPERSID` of `("storage", TYPE, KEY, DEVICE, NUMEL)`: libtorch allocates no memory for
    /// it but takes the record `KEY` as `NUMEL` elements of `TYPE`, whatever the record's length.
    fn persistent_id(&mut self) -> Result<(), String> {
        let id = self.pop()?;
        let V::Tuple(t) = id else {
            return Err(self.err("a persistent id that is not a tuple"));
        };
        let (V::Str(tag), V::Int(scalar_type), V::Str(key), V::Str(device), V::Int(numel)) = (
            t.first().unwrap_or(&V::None),
            t.get(1).unwrap_or(&V::None),
            t.get(2).unwrap_or(&V::None),
            t.get(3).unwrap_or(&V::None),
            t.get(4).unwrap_or(&V::None),
        ) else {
            return Err(
                self.err("a persistent id that is not (\"storage\", type, key, device, elements)")
            );
        };
        if &**tag != "storage" || t.len() != 5 {
            return Err(self.err(format!(
                "a persistent id {}; only storages are read",
                quoted(tag)
            )));
        }
        // Keys as torch.jit.save writes them: libtorch looks the record up by the key's bytes up
        // to a NUL, so anything else could name one record here and another there.
        if key.is_empty()
            || key.len() > MAX_KEY
            || !key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            return Err(self.err(format!(
                "a storage key {}; keys are letters, digits and _ (at most {MAX_KEY})",
                quoted(key)
            )));
        }
        let size = itemsize(*scalar_type).ok_or_else(|| {
            self.err(format!(
                "a storage of element type {scalar_type}, not one a module's tensors may have"
            ))
        })?;
        let device = &**device;
        let cuda_n = device
            .strip_prefix("cuda:")
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|c| c.is_ascii_digit()));
        if !(device == "cpu" || device == "cuda" || cuda_n) {
            return Err(self.err(format!("a storage on device {}", quoted(device))));
        }
        if *numel < 0 {
            return Err(self.err(format!("a storage of {numel} elements")));
        }
        let bytes = numel
            .checked_mul(size)
            .ok_or_else(|| self.err(format!("a storage of {numel} elements")))?;
        let key = key.to_string();
        if *numel > 0 {
            let Some(len) = (self.record_len)(&key) else {
                return Err(self.err(format!(
                    "a storage names record {key:?}, which the archive does not hold where \
                     libtorch reads this pickle's tensors"
                )));
            };
            if bytes as u64 > len {
                return Err(self.err(format!(
                    "storage {key:?} claims {numel} elements ({bytes} bytes) but its record holds \
                     {len} bytes: libtorch would read and write past the record"
                )));
            }
        }
        let this = Storage {
            scalar_type: *scalar_type,
            numel: *numel,
        };
        if let Some(seen) = self.storages.insert(key.clone(), this) {
            if seen != this {
                return Err(self.err(format!(
                    "storage {key:?} is named as {seen:?} and as {this:?}"
                )));
            }
        }
        self.push(V::Tensor { numel: *numel })
    }
}

/// Writes pickles with the opcodes `torch.jit.save` writes: for tests and fuzzing seeds of
/// [`check_pickle`].
#[derive(Debug, Clone)]
pub struct Writer(pub Vec<u8>);

impl Default for Writer {
    fn default() -> Writer {
        Writer::new()
    }
}

impl Writer {
    /// The protocol 2 header.
    pub fn new() -> Writer {
        Writer(vec![0x80, 2])
    }
    /// One opcode byte.
    pub fn op(mut self, op: u8) -> Writer {
        self.0.push(op);
        self
    }
    /// `GLOBAL module class`.
    pub fn global(mut self, module: &str, class: &str) -> Writer {
        self.0.push(b'c');
        self.0.extend(format!("{module}\n{class}\n").bytes());
        self
    }
    /// `BINUNICODE`.
    pub fn str(mut self, s: &str) -> Writer {
        self.0.push(b'X');
        self.0.extend((s.len() as u32).to_le_bytes());
        self.0.extend(s.bytes());
        self
    }
    /// `LONG1` of 8 bytes.
    pub fn int(mut self, v: i64) -> Writer {
        self.0.push(0x8a);
        self.0.push(8);
        self.0.extend(v.to_le_bytes());
        self
    }
    /// A tuple of integers.
    pub fn ints(mut self, vs: &[i64]) -> Writer {
        self = self.op(b'(');
        for &v in vs {
            self = self.int(v);
        }
        self.op(b't')
    }
    /// A float32 tensor over storage `key` of `numel` elements.
    pub fn tensor(self, key: &str, numel: i64, offset: i64, sizes: &[i64], st: &[i64]) -> Writer {
        self.global("torch._utils", "_rebuild_tensor_v2")
            .op(b'(')
            .op(b'(')
            .str("storage")
            .global("torch", "FloatStorage")
            .str(key)
            .str("cpu")
            .int(numel)
            .op(b't')
            .op(b'Q')
            .int(offset)
            .ints(sizes)
            .ints(st)
            .op(0x88)
            .global("collections", "OrderedDict")
            .op(b')')
            .op(b'R')
            .op(b't')
            .op(b'R')
    }
    /// A whole pickle: a `__torch__.M` object with one attribute `w`, whose value `body` writes.
    pub fn module(body: impl FnOnce(Writer) -> Writer) -> Vec<u8> {
        let p = Writer::new()
            .global("__torch__", "M")
            .op(b')')
            .op(0x81)
            .op(b'}')
            .op(b'(')
            .str("w");
        body(p).op(b'u').op(b'b').op(b'.').0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type P = Writer;

    fn check(bytes: &[u8], records: &[(&str, u64)]) -> Result<(), String> {
        let records: HashMap<String, u64> =
            records.iter().map(|(k, n)| (k.to_string(), *n)).collect();
        check_pickle(
            "data.pkl",
            bytes,
            &|key: &str| records.get(key).copied(),
            &mut HashMap::new(),
        )
    }

    #[test]
    fn a_tensor_inside_its_record_passes() {
        let p = P::module(|p| p.tensor("0", 6, 0, &[2, 3], &[3, 1]));
        check(&p, &[("0", 24)]).unwrap();
        // A view of the storage's last half, and a scalar.
        let p = P::module(|p| p.tensor("0", 6, 3, &[3], &[1]));
        check(&p, &[("0", 24)]).unwrap();
        let p = P::module(|p| p.tensor("0", 6, 5, &[], &[]));
        check(&p, &[("0", 24)]).unwrap();
        // An empty tensor needs no record.
        let p = P::module(|p| p.tensor("0", 0, 0, &[0, 4], &[4, 1]));
        check(&p, &[]).unwrap();
    }

    #[test]
    fn a_tensor_outside_its_record_is_refused() {
        for (numel, offset, sizes, strides, record, why) in [
            (
                6,
                4,
                &[3][..],
                &[1][..],
                24,
                "reaches element 6 of a storage of 6",
            ),
            (6, 0, &[2, 3], &[4, 1], 24, "reaches element 6"),
            (6, 0, &[2], &[1 << 62], 24, "reaches element"),
            (6, -1, &[1], &[1], 24, "offset -1"),
            (6, 0, &[-2], &[1], 24, "not whole numbers"),
            (6, 0, &[2, 3], &[3], 24, "2 sizes and 1 strides"),
            (1 << 40, 0, &[6], &[1], 24, "claims 1099511627776 elements"),
            (
                7,
                0,
                &[6],
                &[1],
                24,
                "claims 7 elements (28 bytes) but its record holds 24",
            ),
            (6, 0, &[6], &[1], 0, "does not hold"),
            (6, 0, &[1000], &[0], 24, "do not overlap"),
        ] {
            let p = P::module(|p| p.tensor("0", numel, offset, sizes, strides));
            let records: &[(&str, u64)] = if record == 0 { &[] } else { &[("0", record)] };
            let e = check(&p, records).unwrap_err();
            assert!(
                e.contains(why),
                "{numel} {offset} {sizes:?} {strides:?}: {e}"
            );
        }
    }

    #[test]
    fn a_storage_named_twice_must_agree() {
        let p = P::module(|p| {
            p.op(b'(')
                .tensor("0", 6, 0, &[6], &[1])
                .tensor("0", 9, 0, &[9], &[1])
                .op(b'l')
        });
        let e = check(&p, &[("0", 64)]).unwrap_err();
        assert!(e.contains("is named as"), "{e}");
    }

    #[test]
    fn steps_that_would_take_libtorch_outside_its_stacks_are_refused() {
        for (p, why) in [
            // A dictionary of an odd number of items: libtorch reads one past its stack.
            (
                P::new().op(b'}').op(b'(').str("k").op(b'u').op(b'.').0,
                "odd number",
            ),
            // A stale mark: the tuple would start beyond the stack's top.
            (
                P::new()
                    .str("a")
                    .str("b")
                    .op(b'(')
                    .op(0x86)
                    .op(b't')
                    .op(b'.')
                    .0,
                "beyond the stack's top",
            ),
            (
                P::new()
                    .str("x")
                    .op(b'r')
                    .0
                    .iter()
                    .copied()
                    .chain(u32::MAX.to_le_bytes())
                    .chain([b'.'])
                    .collect(),
                "memo slot",
            ),
            (P::new().op(b'h').op(3).op(b'.').0, "never written"),
            // A call of an integer that is no global's index.
            (P::new().int(7).op(b')').op(b'R').op(b'.').0, "not a global"),
            (
                P::new()
                    .global("torch._utils", "_rebuild_qtensor")
                    .op(b'.')
                    .0,
                "_rebuild_qtensor",
            ),
            (P::new().global("os", "system").op(b'.').0, "os.system"),
            (
                P::new().global("torch", "QInt8Storage").op(b'.').0,
                "QInt8Storage",
            ),
            (P::new().op(b'a').op(b'.').0, "opcode 0x61"),
            (
                P::module(|p| p.tensor("0\0", 6, 0, &[6], &[1])),
                "storage key",
            ),
            (
                P::module(|p| p.tensor("../0", 6, 0, &[6], &[1])),
                "storage key",
            ),
            (
                P::module(|p| p.tensor("0", 0, 0, &[1; 65], &[1; 65])),
                "at most 64 dimensions",
            ),
            (vec![0x80, 4, b'.'], "protocol 2"),
            (P::new().op(b'N').0, "ends in the middle"),
            (
                P::new().op(b'N').op(b'.').op(b'N').0,
                "after the pickle's end",
            ),
        ] {
            let e = check(&p, &[]).unwrap_err();
            assert!(e.contains(why), "{why}: {e}");
        }
    }

    #[test]
    fn any_integer_that_names_the_rebuild_global_is_checked_as_a_call_of_it() {
        // `torch.FloatStorage` pushes 6, the same value as the seventh global's index: libtorch
        // would call that global, and so does the check.
        let mut p = P::new().op(b'(');
        for _ in 0..7 {
            p = p.global("torch._utils", "_rebuild_tensor_v2");
        }
        let p = p
            .op(b'l')
            .int(6)
            .op(b'(')
            .op(b'(')
            .str("storage")
            .global("torch", "FloatStorage")
            .str("0")
            .str("cpu")
            .int(2)
            .op(b't')
            .op(b'Q')
            .int(5)
            .ints(&[1])
            .ints(&[1])
            .op(0x89)
            .op(b'N')
            .op(b't')
            .op(b'R')
            .op(b'.');
        let e = check(&p.0, &[("0", 8)]).unwrap_err();
        assert!(e.contains("reaches element 5 of a storage of 2"), "{e}");
    }
}
